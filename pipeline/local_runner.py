"""Runs vae-mnist locally with LocalDagRunner and ML Metadata in SQLite.

Works three ways:
  python pipeline/local_runner.py
  tfx pipeline create --engine local --pipeline_path pipeline/local_runner.py
  tfx run create --engine local --pipeline_name vae-mnist
The tfx CLI executes this file as ``__main__`` and records the pipeline passed to
``LocalDagRunner().run``, so that call happens exactly once, below. Settings come from
VAE_MNIST_* environment variables (``PipelineConfig.from_env``), e.g. VAE_MNIST_PRESET=quality.
Unlike ``vae-mnist run``, this does not fetch data: run ``vae-mnist data fetch`` first.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# isort: off
import pipeline  # noqa: E402,F401  (first: quiets import-time noise before TF loads)

# isort: on
from tfx import v1 as tfx  # noqa: E402

from pipeline.config import PipelineConfig  # noqa: E402
from pipeline.pipeline import create_pipeline  # noqa: E402
from pipeline.run_lock import output_dir_lock  # noqa: E402


def local_pipeline(config: PipelineConfig) -> tfx.dsl.Pipeline:
    os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
    return create_pipeline(
        config,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path),
    )


if __name__ == "__main__":
    _config = PipelineConfig.from_env()
    with output_dir_lock(_config.output_dir):
        tfx.orchestration.LocalDagRunner().run(local_pipeline(_config))
