"""The project's own artifact type."""

from tfx.types import artifact


class Pictures(artifact.Artifact):
    """A directory of PNG files.

    Its type name is also its import path (``components.Pictures``): Kubeflow's compiler accepts
    only ``<namespace>.<Name>`` titles, and TFX's Kubeflow entrypoint imports the class by title.
    """

    TYPE_NAME = "components.Pictures"


class ImageScores(artifact.Artifact):
    """Per-image scores of one span as Parquet (components/span_scores.py), with a report."""

    TYPE_NAME = "components.ImageScores"


class DriftReport(artifact.Artifact):
    """The drift gate's comparisons of a span with the one before (components/drift_gate.py)."""

    TYPE_NAME = "components.DriftReport"
