"""Runs vae-mnist locally with LocalDagRunner and ML Metadata in SQLite.

Works three ways:
  python pipeline/local_runner.py
  tfx pipeline create --engine local --pipeline_path pipeline/local_runner.py
  tfx run create --engine local --pipeline_name vae-mnist
The tfx CLI executes this file as ``__main__`` and records the pipeline passed to
``LocalDagRunner().run``, so that call happens exactly once, below. Settings come from
VAE_MNIST_* environment variables (``PipelineConfig.from_env``), e.g. VAE_MNIST_PRESET=quality.
Unlike ``vae-mnist run``, this does not fetch data: run ``vae-mnist data fetch`` first.

Everything else that runs the pipeline locally (``vae-mnist run``, the benchmarks, the tests)
calls ``run_locally``: progress lines per component, the run read back from ML Metadata.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import TextIO

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# isort: off
import pipeline  # noqa: E402,F401  (first: quiets import-time noise before TF loads)

# isort: on
from absl import logging as absl_logging  # noqa: E402
from tfx import v1 as tfx  # noqa: E402

from components import object_store  # noqa: E402
from pipeline.config import PipelineConfig  # noqa: E402
from pipeline.pipeline import create_pipeline  # noqa: E402
from pipeline.run_lock import output_dir_lock  # noqa: E402
from pipeline.run_record import ComponentRun, latest_run  # noqa: E402
from pipeline.summary import format_summary  # noqa: E402

# Beam's DirectRunner relays its workers' start-up warnings, and TensorFlow's Python logger its
# deprecation notices: neither needs action from a user.
_NOISY_LOGGERS = ("apache_beam.runners.portability.local_job_service", "tensorflow")


def check_stores(config: PipelineConfig) -> None:
    """What a local run can keep where, checked before any work (one line each): ML Metadata's
    SQLite file needs a local output directory; artifacts need a pipeline root TensorFlow writes
    (local or gs://; no TensorFlow here writes S3: components/object_store.py); an s3:// input dir
    or serving root must answer, so a wrong key or bucket never costs a training."""
    if "://" in config.output_dir:
        raise ValueError(
            f"--output-dir must be a local directory (ML Metadata's SQLite file lives there), got "
            f"{config.output_dir}; the input dir and the serving root may be in a bucket"
        )
    if config.pipeline_root.startswith(("s3://", "minio://")):
        raise ValueError(
            f"a local run's pipeline root must be local or gs:// (no TensorFlow here writes S3), got "
            f"{config.pipeline_root}; on Kubeflow an s3:// pipeline root works (kubeflow/README.md)"
        )
    for path in (config.input_base, config.serving_root):
        if object_store.is_s3(path):
            object_store.check_access(path)


def local_pipeline(config: PipelineConfig) -> tfx.dsl.Pipeline:
    check_stores(config)
    os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
    return create_pipeline(
        config,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path),
    )


def run_locally(config: PipelineConfig, progress: TextIO | None = sys.stdout) -> dict[str, ComponentRun]:
    """Runs the pipeline with LocalDagRunner and returns the run as ML Metadata recorded it,
    {node: ComponentRun}. With a ``progress`` stream: a line per component as it runs, and the
    table of the run at the end, also when a component fails (its error then propagates;
    ``last_run`` reads what was recorded)."""
    tfx_pipeline = local_pipeline(config)
    watching = ConsoleProgress(len(tfx_pipeline.components), progress) if progress else contextlib.nullcontext()
    try:
        with watching:
            tfx.orchestration.LocalDagRunner().run(tfx_pipeline)
    finally:
        run_name, components = latest_run(config.metadata_path, config.pipeline_name)
        if progress:
            progress.write("\n" + format_summary(run_name, components) + "\n")
    return {c.node: c for c in components}


def last_run(config: PipelineConfig) -> dict[str, ComponentRun]:
    """The newest run of ``config``'s pipeline, {node: ComponentRun} in the order they started."""
    _, components = latest_run(config.metadata_path, config.pipeline_name)
    return {c.node: c for c in components}


class ConsoleProgress(logging.Handler):
    """Turns LocalDagRunner's 'Component X is running/finished' records into progress lines."""

    def __init__(self, total: int, stream=sys.stdout):
        super().__init__(logging.INFO)
        self._total = total
        self._done = 0
        self._started = 0.0
        self._cached = False
        self._stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "Component %s is running.":
            self._started, self._cached = time.monotonic(), False
            self._stream.write(f"[{self._done + 1}/{self._total}] {record.args[0]} ...\n")
        elif record.msg.startswith("A cached execution"):
            self._cached = True
        elif record.msg == "Component %s is finished.":
            self._done += 1
            how = "reused from cache" if self._cached else f"done in {time.monotonic() - self._started:.1f} s"
            self._stream.write(f"      {record.args[0]}: {how}\n")
        elif record.levelno >= logging.ERROR:
            self._stream.write(f"      error: {record.getMessage()}\n")
        self._stream.flush()

    def __enter__(self) -> ConsoleProgress:
        # TFX logs through absl; take its INFO records for ourselves instead of the root handler.
        absl_logger = logging.getLogger("absl")
        self._saved = (absl_logging.get_verbosity(), absl_logger.propagate)
        # Through absl's verbosity, not setLevel: TensorFlow's SavedModel writer saves and
        # restores that verbosity, which would undo a bare setLevel mid-run.
        absl_logging.set_verbosity(absl_logging.INFO)
        absl_logger.propagate = False
        absl_logger.addHandler(self)
        self._quieted = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc) -> None:
        absl_logger = logging.getLogger("absl")
        absl_logger.removeHandler(self)
        absl_logging.set_verbosity(self._saved[0])
        absl_logger.propagate = self._saved[1]
        for name, level in self._quieted.items():
            logging.getLogger(name).setLevel(level)


if __name__ == "__main__":
    _config = PipelineConfig.from_env()
    with output_dir_lock(_config.output_dir):
        tfx.orchestration.LocalDagRunner().run(local_pipeline(_config))
