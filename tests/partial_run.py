"""Runs part of ``create_pipeline`` with LocalDagRunner's partial run, in its own process:
``python -m tests.partial_run [--from NODE] --to NODE``, settings from VAE_MNIST_* variables
(``PipelineConfig.from_env``). Tests start it as a subprocess when the run needs limits of its
own: a time limit for a portable Beam job that might never finish, a file-size limit (a "full
disk") for one component."""

# isort: off
import pipeline  # noqa: F401  (first: quiets import-time noise before TF loads)

# isort: on
import argparse

from tfx import v1 as tfx
from tfx.orchestration.pipeline import RunOptions

from pipeline.config import PipelineConfig
from pipeline.local_runner import local_pipeline

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--from", dest="from_nodes", action="append")
    parser.add_argument("--to", dest="to_nodes", action="append", required=True)
    args = parser.parse_args()
    tfx.orchestration.LocalDagRunner().run(
        local_pipeline(PipelineConfig.from_env()),
        run_options=RunOptions(from_nodes=args.from_nodes, to_nodes=args.to_nodes),
    )
