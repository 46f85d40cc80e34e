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
from tfx.orchestration import metadata  # noqa: E402
from tfx.orchestration import pipeline as tfx_pipeline  # noqa: E402
from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # noqa: E402

from components import object_store  # noqa: E402
from pipeline.beam import check_beam_args  # noqa: E402
from pipeline.config import PipelineConfig  # noqa: E402
from pipeline.pipeline import create_pipeline  # noqa: E402
from pipeline.run_lock import output_dir_lock  # noqa: E402
from pipeline.run_record import ComponentRun, latest_run, mark_interrupted  # noqa: E402
from pipeline.summary import format_summary  # noqa: E402

# Beam's DirectRunner relays its workers' start-up warnings, and TensorFlow's Python logger its
# deprecation notices: neither needs action from a user.
_NOISY_LOGGERS = ("apache_beam.runners.portability.local_job_service", "tensorflow")


def preflight(config: PipelineConfig) -> None:
    """What a local run needs, checked before any work (one line each): its directories
    (``PipelineConfig.check_local_run_paths``); Beam arguments Beam accepts; an s3:// input dir
    or serving root that answers, so a wrong key or bucket never costs a training."""
    config.check_local_run_paths()
    check_beam_args(config.beam_args)
    for path in (config.input_base, config.serving_root):
        if object_store.is_s3(path):
            object_store.check_access(path)


def local_pipeline(config: PipelineConfig) -> tfx_pipeline.Pipeline:
    preflight(config)
    os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
    return create_pipeline(
        config,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(config.metadata_path),
    )


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, with the component it stopped in."""

    def __init__(self, component: str):
        super().__init__(component)
        self.component = component


FAILED_COMPONENT = "vae_mnist_component"  # set on an error that stopped a run: the component's name


def failed_component(error: BaseException) -> str | None:
    """The component a run's error came from, if it came from one."""
    return getattr(error, FAILED_COMPONENT, None)


def run_locally(config: PipelineConfig, progress: TextIO | None = sys.stdout) -> dict[str, ComponentRun]:
    """Runs the pipeline with LocalDagRunner and returns the run as ML Metadata recorded it,
    {node: ComponentRun}. With a ``progress`` stream: a line per component as it runs, and the
    table of the run at the end, also when a component fails (its error then propagates, naming
    the component: ``failed_component``; ``last_run`` reads what was recorded). Ctrl-C raises
    RunInterrupted after recording the interrupted executions as canceled."""
    dag = local_pipeline(config)
    watching = ConsoleProgress(len(dag.components), progress)
    try:
        with watching:
            LocalDagRunner().run(dag)
    except KeyboardInterrupt:
        mark_interrupted(config.metadata_path, config.pipeline_name)
        raise RunInterrupted(watching.running or "the start") from None
    except Exception as err:
        setattr(err, FAILED_COMPONENT, watching.running)
        raise
    finally:
        run_name, components = latest_run(config.metadata_path, config.pipeline_name)
        if progress and components:
            progress.write("\n" + format_summary(run_name, components) + "\n")
    return {c.node: c for c in components}


def last_run(config: PipelineConfig) -> dict[str, ComponentRun]:
    """The newest run of ``config``'s pipeline, {node: ComponentRun} in the order they started."""
    _, components = latest_run(config.metadata_path, config.pipeline_name)
    return {c.node: c for c in components}


class ConsoleProgress(logging.Handler):
    """Turns LocalDagRunner's 'Component X is running/finished' records into progress lines."""

    def __init__(self, total: int, stream: TextIO | None = sys.stdout):
        super().__init__(logging.INFO)
        self._total = total
        self._done = 0
        self._started = 0.0
        self._cached = False
        self._stream = stream  # None: only keep track of the running component
        self.running: str | None = None  # the component running now (or the last that ran)

    def emit(self, record: logging.LogRecord) -> None:
        line = None
        if record.msg == "Component %s is running.":
            self._started, self._cached, self.running = time.monotonic(), False, record.args[0]
            line = f"[{self._done + 1}/{self._total}] {record.args[0]} ..."
        elif record.msg.startswith("A cached execution"):
            self._cached = True
        elif record.msg == "Component %s is finished.":
            self._done += 1
            how = "reused from cache" if self._cached else f"done in {time.monotonic() - self._started:.1f} s"
            line = f"      {record.args[0]}: {how}"
        elif record.levelno >= logging.ERROR:
            line = f"      error: {record.getMessage()}"
        if line and self._stream:
            self._stream.write(line + "\n")
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


def _main() -> None:
    """The tfx CLI's entry: a bad VAE_MNIST_* value is one line, as on `vae-mnist run`."""
    try:
        config = PipelineConfig.from_env()
        preflight(config)
    except (ValueError, OSError) as err:
        sys.exit(f"{os.path.basename(__file__)}: error: {err}")
    with output_dir_lock(config.output_dir):
        LocalDagRunner().run(local_pipeline(config))  # the tfx CLI records this call


if __name__ == "__main__":
    _main()
