"""vae-mnist's TFX components: IDX ingestion, the data gate, the served-model lookup, our
Evaluator and Pusher, the model pictures.

``components.Pictures`` is importable from here because TFX's Kubeflow entrypoint rebuilds a
custom artifact type from its schema title, which must read ``<namespace>.<Name>``
(``kubeflow_v2_entrypoint_utils._retrieve_class_path``); it is loaded lazily so that light
commands (``vae-mnist data fetch``) do not import TensorFlow.
"""


def __getattr__(name: str):
    if name == "Pictures":
        from components.artifacts import Pictures

        return Pictures
    raise AttributeError(f"module 'components' has no attribute {name!r}")
