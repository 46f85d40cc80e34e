"""Runs the data stages of ``create_pipeline`` (everything up to Transform) with LocalDagRunner's
partial run, settings from VAE_MNIST_* variables (``PipelineConfig.from_env``).
tests/test_portable_beam.py starts it as a subprocess so that a portable Beam job that never
finishes can be time-limited."""

# isort: off
import pipeline  # noqa: F401  (first: quiets import-time noise before TF loads)

# isort: on
from tfx import v1 as tfx
from tfx.orchestration.pipeline import RunOptions

from pipeline.config import PipelineConfig
from pipeline.local_runner import local_pipeline

DATA_STAGES = ("IdxExampleGen", "ImportSchemaGen", "StatisticsGen", "ExampleValidator", "DataGate", "Transform")

if __name__ == "__main__":
    tfx.orchestration.LocalDagRunner().run(
        local_pipeline(PipelineConfig.from_env()),
        run_options=RunOptions(to_nodes=["Transform"]),
    )
