"""The project's own artifact type."""

from tfx.types import artifact


class Pictures(artifact.Artifact):
    """A directory of PNG files.

    Its type name is also its import path (``components.Pictures``): Kubeflow's compiler accepts
    only ``<namespace>.<Name>`` titles, and TFX's Kubeflow entrypoint imports the class by title.
    """

    TYPE_NAME = "components.Pictures"
