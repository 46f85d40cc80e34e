"""What every benchmark shares: the machine it ran on, where results go, a pipeline run."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
OUTPUTS_DIR = os.path.join(REPO, "outputs", "bench")

sys.path.insert(0, REPO)
import pipeline  # noqa: E402,F401  (quiets TensorFlow's start-up before anything imports it)


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        gpus = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, check=True
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        gpus = []
    gpus = [g for g in gpus if g.strip()]
    return {"cores": os.cpu_count(), "cpu": cpu, "gpus": gpus, "python": platform.python_version()}


def record(name: str, result: dict) -> str:
    """Appends one result (with the machine and the time) to bench/results/<name>.json."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    history = []
    if os.path.exists(path):
        with open(path) as f:
            history = json.load(f)
    history.append({"when": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(), **result})
    with open(path, "w") as f:
        json.dump(history, f, indent=1)
    return path


def run_pipeline(config) -> dict:
    """Runs the pipeline locally with progress lines; returns {node: ComponentRun} of that run."""
    from tfx import v1 as tfx

    from pipeline import local_runner, run_report

    tfx_pipeline = local_runner.local_pipeline(config)
    with run_report.ConsoleProgress(total=len(tfx_pipeline.components)):
        tfx.orchestration.LocalDagRunner().run(tfx_pipeline)
    run_name, components = run_report.latest_run(config.metadata_path, config.pipeline_name)
    print(run_report.format_summary(run_name, components))
    return {c.node: c for c in components}
