"""A pipeline run as ML Metadata recorded it: each component's state, time and output artifacts.

Everything a run reports (its summary, the benchmarks' breakdowns, the tests' checks) is read back
from here, so it says what was recorded, not what we hoped happened.
"""

from __future__ import annotations

import dataclasses

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
