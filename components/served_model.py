"""ServedModel: the model TF Serving serves now, as the Evaluator's baseline.

Why a component of ours and not TFX's ``Resolver(LatestBlessedModelStrategy)``: Kubeflow's
compiler turns a Resolver into ``resolver`` executors, which only Vertex AI runs; open-source KFP
refuses them (kubeflow/pipelines ``backend/src/v2/compiler/argocompiler/dag.go``). This is a plain
container component, the same under LocalDagRunner, KFP and Vertex, and the baseline it gives is
the one that matters in production: the version being served, wherever it came from.

It reads state outside the pipeline, so it must never answer from cache. TFX 1.16 has no
per-component cache switch; instead ``lookup_nonce`` differs on every run (a fresh token in each
local run; on Kubeflow the run's id, and the task's ``cachingOptions`` off in the compiled spec).

The output is always published (a container component cannot publish nothing), so "no model
served yet" is an explicit marker: ``served_version`` 0 and no files. ``is_nothing_served`` is
how every consumer (the Evaluator; later the warm start and the drift gate) tells.
"""

import logging

from tfx.types import artifact, standard_artifacts
from tfx.utils import io_utils, path_utils

from components import serving_layout
from components.tfx_dsl import OutputArtifact, Parameter, component

SERVED_VERSION_KEY = "served_version"  # the version copied; 0: nothing is served
SERVED_FROM_KEY = "served_from"
SKIPPED_KEY = "skipped_versions"  # newer complete versions passed over: their graph does not parse


def is_nothing_served(model: artifact.Artifact) -> bool:
    """True for ServedModel's empty marker."""
    return model.get_int_custom_property(SERVED_VERSION_KEY) == 0


@component
def ServedModel(  # noqa: N802
    model: OutputArtifact[standard_artifacts.Model],
    serving_model_dir: Parameter[str],
    lookup_nonce: Parameter[str] = "",
) -> None:
    """Copies the served version under ``serving_model_dir`` into ``model`` (the Trainer's layout,
    ``Format-Serving/``), or marks ``model`` empty when no version is served."""
    del lookup_nonce  # only there to keep this component out of every cache
    skipped: list[tuple[int, str]] = []
    version = serving_layout.served_version(serving_model_dir, skipped)
    for broken, reason in skipped:
        path = serving_layout.version_path(serving_model_dir, broken)
        logging.warning("Skipped version %d (%s): %s; TF Serving cannot load it either", broken, path, reason)
    if skipped:
        model.set_string_custom_property(SKIPPED_KEY, ", ".join(str(v) for v, _ in skipped))
    if version is None:
        model.set_int_custom_property(SERVED_VERSION_KEY, 0)
        logging.info("No model is served under %s yet", serving_model_dir)
        return
    version_dir = serving_layout.version_path(serving_model_dir, version)
    io_utils.copy_dir(version_dir, path_utils.serving_model_dir(model.uri))
    model.set_int_custom_property(SERVED_VERSION_KEY, version)
    model.set_string_custom_property(SERVED_FROM_KEY, version_dir)
    logging.info("The model served now is %s", version_dir)
