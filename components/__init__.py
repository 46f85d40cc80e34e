"""vae-mnist's TFX components: IDX ingestion, the data gate, the served-model lookup, our
Evaluator and Pusher, the model pictures, span scoring and the drift gate.

Our artifact types (components/artifacts.py) are importable from here, as ``components.Pictures``
and so on, because TFX's Kubeflow entrypoint rebuilds a custom artifact type from its schema
title, which must read ``<namespace>.<Name>`` (``kubeflow_v2_entrypoint_utils._retrieve_class_path``);
they are loaded lazily so that light commands (``vae-mnist data fetch``) do not import TensorFlow.

Importing the package registers ``s3://`` with TFX's ``fileio`` (components/object_store.py), in
every process that runs our code: the CLI, the local runner and each Kubeflow pod.
"""

from components import object_store

object_store.register()


def __getattr__(name: str):
    if name in ("Pictures", "ImageScores", "DriftReport"):
        from components import artifacts

        return getattr(artifacts, name)
    raise AttributeError(f"module 'components' has no attribute {name!r}")
