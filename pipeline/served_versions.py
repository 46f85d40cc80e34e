"""`vae-mnist serving list [--card VERSION]`: what was pushed, how it measured, its labels and card.

A version's figures come from ML Metadata: the PushedModel that recorded the push, the Pusher
execution that made it, the blessing it consumed, and the Evaluator's evaluation and eval
examples behind that blessing. Pinning writes TF Serving's models.config
(components/serving_layout.py); nothing is deleted, so unpinning restores the newest version.
"""

from __future__ import annotations

import dataclasses
import datetime
import os

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components import serving_layout

_OUTPUT = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
_INPUT = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)


@dataclasses.dataclass
class PushedVersion:
    version: int
    complete: bool  # holds saved_model.pb: TF Serving can load it
    metrics: dict = dataclasses.field(default_factory=dict)  # the Evaluator's, on the whole eval split
    span: int | None = None  # the span it was judged on (0: unspanned input)
    name: str = ""  # its directory's name (``00123`` for version 123); default: the number

    def __post_init__(self) -> None:
        self.name = self.name or str(self.version)


class _Lineage:
    """Walks ML Metadata from a PushedModel back to the evaluation behind its blessing."""

    def __init__(self, metadata_path: str):
        config = metadata_store_pb2.ConnectionConfig()
        config.sqlite.filename_uri = metadata_path
        config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
        self.store = metadata_store.MetadataStore(config)
        self.type_names = {t.id: t.name for t in self.store.get_artifact_types()}

    def _neighbours(self, execution_id: int, kinds) -> list:
        events = [e for e in self.store.get_events_by_execution_ids([execution_id]) if e.type in kinds]
        return self.store.get_artifacts_by_id([e.artifact_id for e in events])

    def _producer(self, artifact_id: int) -> int | None:
        events = [e for e in self.store.get_events_by_artifact_ids([artifact_id]) if e.type in _OUTPUT]
        return events[0].execution_id if events else None

    def _of_type(self, artifacts: list, name: str) -> list:
        return [a for a in artifacts if self.type_names.get(a.type_id) == name]

    def pushes(self) -> dict[int, metadata_store_pb2.Artifact]:
        """{version: PushedModel} for every push ML Metadata recorded."""
        found = {}
        for pushed in self.store.get_artifacts_by_type("PushedModel"):
            props = pushed.custom_properties
            if props["pushed"].int_value == 1 and "pushed_version" in props:
                found[int(props["pushed_version"].string_value)] = pushed
        return found

    def evaluation_of(self, pushed) -> tuple[str | None, int | None]:
        """(ModelEvaluation URI, span of the eval examples) behind a push."""
        pusher = self._producer(pushed.id)
        blessing = self._of_type(self._neighbours(pusher, _INPUT), "ModelBlessing") if pusher else []
        evaluator = self._producer(blessing[0].id) if blessing else None
        if evaluator is None:
            return None, None
        evaluation = self._of_type(self._neighbours(evaluator, _OUTPUT), "ModelEvaluation")
        examples = self._of_type(self._neighbours(evaluator, _INPUT), "Examples")
        span = examples[0].properties["span"].int_value if examples and "span" in examples[0].properties else None
        return (evaluation[0].uri if evaluation else None), span


def pushed_versions(model_dir: str, metadata_path: str) -> list[PushedVersion]:
    """Every version directory under ``model_dir``, oldest first, with what ML Metadata knows."""
    from components.evaluator import slice_metrics

    lineage = _Lineage(metadata_path) if os.path.exists(metadata_path) else None
    pushes = lineage.pushes() if lineage else {}
    rows = []
    dirs = serving_layout.version_dirs(model_dir)
    for version, name in dirs.items():
        complete = serving_layout.is_complete(model_dir, version, dirs)
        row = PushedVersion(version, complete, name=name)
        if version in pushes:
            evaluation, row.span = lineage.evaluation_of(pushes[version])
            if evaluation:
                row.metrics = slice_metrics(evaluation).get("", {})
        rows.append(row)
    return rows


def card(model_dir: str, version: int) -> str:
    """A pushed version's model card (components/model_card.py), as written at its push."""
    from components import model_card

    serving_layout.require_complete(model_dir, version)
    text = model_card.read(serving_layout.version_path(model_dir, version))
    if text is None:
        raise ValueError(f"version {version} was pushed without a model card (before vae-mnist wrote them)")
    return text


def format_versions(rows: list[PushedVersion], model_dir: str) -> str:
    from components import releases

    served, pinned = serving_layout.served_version(model_dir), serving_layout.pinned_version(model_dir)
    labels = serving_layout.release_labels(model_dir)
    if not rows:
        return f"No versions under {model_dir}"
    lines = [f"{'version':<12}{'pushed (UTC)':<18}{'span':>5}{'-ELBO':>8}{'recon':>8}{'pixel MSE':>11}  state"]
    for row in rows:
        try:  # our versions are push times; a hand-made one may be any int64
            when = datetime.datetime.fromtimestamp(row.version, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
        except (OverflowError, OSError, ValueError):
            when = "-"
        metrics = row.metrics
        figures = (
            f"{metrics.get('neg_elbo', float('nan')):>8.1f}{metrics.get('reconstruction_error', float('nan')):>8.1f}"
            f"{metrics.get('pixel_mse', float('nan')):>11.4f}"
            if metrics
            else f"{'(not in this ML Metadata)':>27}"
        )
        state = "SERVED" if row.version == served else ("incomplete" if not row.complete else "")
        named = [label for label, version in sorted(labels.items()) if version == row.version]
        if named:
            state = f"{state} [{', '.join(named)}]".strip()
        if row.version == pinned:
            state += " (pinned)"
        span = "" if row.span is None else str(row.span)
        if row.name != str(row.version):  # TF Serving reads 00123/ as version 123
            state += f" (directory {row.name}/)"
        lines.append(f"{row.version:<12}{when:<18}{span:>5}{figures}  {state}".rstrip())
    if pinned is not None and served is None:
        lines.append(f"Pinned to version {pinned}, which is not complete: TF Serving serves nothing")
    if labels:
        lines.append(releases.describe(model_dir))
    return "\n".join(lines)
