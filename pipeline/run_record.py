"""A pipeline run as ML Metadata recorded it: each component's state, time and output artifacts.

Everything a run reports (its summary, the benchmarks' breakdowns, the tests' checks) is read back
from here, so it says what was recorded, not what we hoped happened.
"""

from __future__ import annotations

import dataclasses
import os

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

_STATES = {
    metadata_store_pb2.Execution.COMPLETE: "ran",
    metadata_store_pb2.Execution.CACHED: "cached",
    metadata_store_pb2.Execution.FAILED: "FAILED",
    metadata_store_pb2.Execution.RUNNING: "running",
    metadata_store_pb2.Execution.CANCELED: "canceled",
}


def _state(execution: metadata_store_pb2.Execution) -> str:
    return _STATES.get(execution.last_known_state, str(execution.last_known_state))


@dataclasses.dataclass
class ComponentRun:
    node: str
    state: str
    seconds: float
    execution_id: int
    outputs: dict[str, list[metadata_store_pb2.Artifact]]  # output key -> artifacts (reused ones, when cached)

    def output(self, key: str) -> metadata_store_pb2.Artifact | None:
        return self.outputs[key][0] if self.outputs.get(key) else None


def _store(metadata_path: str, read_only: bool = True) -> metadata_store.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    if read_only:
        config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def _latest_run_context(store: metadata_store.MetadataStore, pipeline_name: str):
    runs = [
        ctx
        for ctx in store.get_contexts_by_type("pipeline_run")
        if any(p.name == pipeline_name for p in store.get_parent_contexts_by_context(ctx.id))
    ]
    return max(runs, key=lambda ctx: ctx.create_time_since_epoch) if runs else None


def mark_interrupted(metadata_path: str, pipeline_name: str) -> None:
    """Records the newest run's executions that were RUNNING when the run was interrupted as
    CANCELED, as TFX records a cancelled execution, so nothing is left looking alive; a re-run
    starts them afresh and reuses what finished."""
    if not os.path.exists(metadata_path):
        return
    store = _store(metadata_path, read_only=False)
    run = _latest_run_context(store, pipeline_name)
    if run is None:
        return
    running = [e for e in store.get_executions_by_context(run.id) if e.last_known_state == e.RUNNING]
    for execution in running:
        execution.last_known_state = execution.CANCELED
    if running:
        store.put_executions(running)


def latest_run(metadata_path: str, pipeline_name: str) -> tuple[str, list[ComponentRun]]:
    """The newest pipeline run's executions, in the order they started; none before ML Metadata's
    file exists (a run that failed before its first component)."""
    if not os.path.exists(metadata_path):
        return "", []
    store = _store(metadata_path)
    run = _latest_run_context(store, pipeline_name)
    if run is None:
        return "", []
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
