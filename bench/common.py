"""What every benchmark shares: the machine it ran on, where results go, MNIST as arrays, plain training."""

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


def commit() -> str | None:
    """The code measured: the checkout's commit, with "+changes" when its code differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        )
        code = [".", ":!bench/results", ":!BENCHMARKS.md"]  # what the figures themselves change does not count
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *code],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def stack() -> dict:
    """The stack measured (README, "Stacks"): its name and its TFX, TensorFlow, Beam and Python."""
    from pipeline import stack as stacks

    return stacks.versions()


def record(name: str, result: dict) -> str:
    """Appends one result (with the machine, the stack, the time and the commit) to
    bench/results/<name>.json, written whole or not at all."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    history = []
    if os.path.exists(path):
        with open(path) as f:
            history = json.load(f)
    when = datetime.datetime.now().isoformat(timespec="seconds")
    history.append({"when": when, "machine": machine(), "stack": stack(), "commit": commit(), **result})
    with open(path + ".tmp", "w") as f:
        json.dump(history, f, indent=1)
    os.replace(path + ".tmp", path)
    return path


def mnist_splits(stop: int | None = None) -> dict:
    """MNIST as the pipeline splits it, as NumPy arrays: {"train", "valid", "eval"} -> (pixels
    float32 [n, 784] in [0, 1] (Transform's x / 255), labels [n]). ``valid`` is the training files'
    last ``PipelineConfig.validation_fraction`` (components/idx_example_gen.py:output_splits);
    ``stop`` keeps the first ``stop`` images of ``train``."""
    import numpy as np

    from components import datasets, fetch
    from pipeline.config import PipelineConfig

    directory = fetch.fetch(datasets.MNIST, os.path.join(REPO, "data"))

    def load(split: str):
        images, labels = datasets.MNIST.read_split(directory, split)
        return images.reshape(len(images), -1).astype(np.float32) / 255.0, labels

    (x, y), test = load("train"), load("eval")
    cut = len(x) - max(1, round(len(x) * PipelineConfig.validation_fraction))
    return {"train": (x[:cut][:stop], y[:cut][:stop]), "valid": (x[cut:], y[cut:]), "eval": test}


def plain_fit(config, epochs: int, train, valid) -> dict:
    """The training alone, the tutorial's way: ``model.fit`` on in-memory arrays, ``epochs`` epochs,
    validating every epoch as the Trainer does. Returns {"seconds": wall time of fit,
    "examples_per_second": the median over the epochs after the first}."""
    import statistics
    import tempfile
    import time

    from model.training_record import TrainingRecord
    from model.vae import build_vae

    vae = build_vae(config)
    with tempfile.TemporaryDirectory() as scratch:
        record = TrainingRecord(os.path.join(scratch, "record.json"), examples_per_epoch=len(train))
        started = time.perf_counter()
        vae.fit(
            train,
            validation_data=(valid,),
            batch_size=config.batch_size,
            epochs=epochs,
            shuffle=True,
            callbacks=[record],
            verbose=0,
        )
        seconds = time.perf_counter() - started
    speeds = [e["train_examples_per_second"] for e in record.epochs]
    return {"seconds": seconds, "examples_per_second": statistics.median(speeds[1:] or speeds)}
