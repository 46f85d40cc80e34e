"""What a person sees of a local run: a line per component as it runs, and a summary at the end.

Progress comes from LocalDagRunner's own log records (it runs components one by one, in
topological order); the summary is read back from ML Metadata, so it reports what was
recorded, not what we hoped happened.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time

from absl import logging as absl_logging
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

_STATES = {
    metadata_store_pb2.Execution.COMPLETE: "ran",
    metadata_store_pb2.Execution.CACHED: "cached",
    metadata_store_pb2.Execution.FAILED: "FAILED",
    metadata_store_pb2.Execution.RUNNING: "running",
    metadata_store_pb2.Execution.CANCELED: "canceled",
}
_NOISY_LOGGERS = ("apache_beam.runners.portability.local_job_service", "tensorflow")


def _state(execution: metadata_store_pb2.Execution) -> str:
    return _STATES.get(execution.last_known_state, str(execution.last_known_state))


class ConsoleProgress(logging.Handler):
    """Turns LocalDagRunner's 'Component X is running/finished' records into progress lines."""

    def __init__(self, total: int, stream=sys.stdout):
        super().__init__(logging.INFO)
        self._total = total
        self._done = 0
        self._started = 0.0
        self._cached = False
        self._stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "Component %s is running.":
            self._started, self._cached = time.monotonic(), False
            self._stream.write(f"[{self._done + 1}/{self._total}] {record.args[0]} ...\n")
        elif record.msg.startswith("A cached execution"):
            self._cached = True
        elif record.msg == "Component %s is finished.":
            self._done += 1
            how = "reused from cache" if self._cached else f"done in {time.monotonic() - self._started:.1f} s"
            self._stream.write(f"      {record.args[0]}: {how}\n")
        elif record.levelno >= logging.ERROR:
            self._stream.write(f"      error: {record.getMessage()}\n")
        self._stream.flush()

    def __enter__(self) -> ConsoleProgress:
        # TFX logs through absl; take its INFO records for ourselves instead of the root handler.
        absl_logger = logging.getLogger("absl")
        self._saved = (absl_logging.get_verbosity(), absl_logger.propagate)
        # Through absl's verbosity, not setLevel: TensorFlow's SavedModel writer saves and
        # restores that verbosity, which would undo a bare setLevel mid-run.
        absl_logging.set_verbosity(absl_logging.INFO)
        absl_logger.propagate = False
        absl_logger.addHandler(self)
        # Beam's DirectRunner relays its workers' start-up warnings, and TensorFlow's Python logger
        # its deprecation notices: neither needs action from a user.
        self._quieted = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc) -> None:
        absl_logger = logging.getLogger("absl")
        absl_logger.removeHandler(self)
        absl_logging.set_verbosity(self._saved[0])
        absl_logger.propagate = self._saved[1]
        for name, level in self._quieted.items():
            logging.getLogger(name).setLevel(level)


@dataclasses.dataclass
class ComponentRun:
    node: str
    state: str
    seconds: float
    execution_id: int
    outputs: dict[str, list[metadata_store_pb2.Artifact]]  # output key -> artifacts (reused ones, when cached)

    def output(self, key: str) -> metadata_store_pb2.Artifact | None:
        return self.outputs[key][0] if self.outputs.get(key) else None


def latest_run(metadata_path: str, pipeline_name: str) -> tuple[str, list[ComponentRun]]:
    """The newest pipeline run's executions, in the order they started."""
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = metadata_store.MetadataStore(config)
    runs = [
        ctx
        for ctx in store.get_contexts_by_type("pipeline_run")
        if any(p.name == pipeline_name for p in store.get_parent_contexts_by_context(ctx.id))
    ]
    if not runs:
        return "", []
    run = max(runs, key=lambda ctx: ctx.create_time_since_epoch)
    prefix = pipeline_name + "."
    executions = sorted(store.get_executions_by_context(run.id), key=lambda e: e.id)
    outputs: dict[int, dict[str, list[metadata_store_pb2.Artifact]]] = {e.id: {} for e in executions}
    events = [
        event
        for event in store.get_events_by_execution_ids(list(outputs))
        if event.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
    ]
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    for event in events:
        outputs[event.execution_id].setdefault(event.path.steps[0].key, []).append(artifacts[event.artifact_id])
    components = []
    for execution in executions:
        node = next(
            (c.name[len(prefix) :] for c in store.get_contexts_by_execution(execution.id) if c.type == "node"), "?"
        )
        components.append(
            ComponentRun(
                node=node,
                state=_state(execution),
                seconds=(execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000,
                execution_id=execution.id,
                outputs=outputs[execution.id],
            )
        )
    return run.name, components


def format_summary(run_name: str, components: list[ComponentRun]) -> str:
    lines = [f"Run {run_name}:"]
    width = max((len(c.node) for c in components), default=0)
    for c in components:
        lines.append(f"  {c.node:<{width}}  {c.state:<8} {c.seconds:7.1f} s")
    return "\n".join(lines)
