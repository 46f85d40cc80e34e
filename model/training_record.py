"""The Trainer's own account of a run, ``training_record.json`` in its model-run directory: every
epoch's metrics, seconds and throughput, how the weights started, and the wall seconds of each
phase of ``run_fn`` (reading data, building, fitting, calibrating, exporting).

The run summary and the benchmarks read it. The phases are there because the Trainer's time
outside its epochs was once a third of a default run and nobody could say where it went.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time

import tensorflow as tf
import tf_keras as keras

TRAINING_RECORD = "training_record.json"


class TrainingRecord(keras.callbacks.Callback):
    """Records every epoch's metrics, seconds and training throughput, and writes the record when
    training ends; ``save`` writes it again once the phases after training are known."""

    def __init__(self, path: str, examples_per_epoch: int | None, notes: dict | None = None):
        """``notes``: more to record, e.g. how the weights started (``warm_start``)."""
        super().__init__()
        self.path = path
        self.examples_per_epoch = examples_per_epoch
        self.notes = dict(notes or {})
        self.epochs: list[dict] = []

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        seconds = time.perf_counter() - self._started
        record = {"epoch": epoch + 1, "seconds": seconds, **{k: float(v) for k, v in (logs or {}).items()}}
        if self.examples_per_epoch:
            record["train_examples_per_second"] = self.examples_per_epoch / seconds
        self.epochs.append(record)

    def on_train_end(self, logs=None) -> None:
        self.save()

    def save(self, **notes) -> None:
        """Writes the record, with ``notes`` added to it."""
        self.notes.update(notes)
        best = min(self.epochs, key=lambda e: e.get("val_neg_elbo", float("inf")), default=None)
        with tf.io.gfile.GFile(self.path, "w") as f:
            json.dump({**self.notes, "epochs": self.epochs, "best_epoch": best}, f, indent=1)


class Phases:
    """Wall seconds per named phase, in the order they ran: ``with phases("export"): ...``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


def read_training_record(model_run_dir: str) -> dict | None:
    """The Trainer's training_record.json, plus ``examples_per_second``: the median over the epochs
    after the first (the first also traces the graph), or the first's when it is the only one."""
    path = os.path.join(model_run_dir, TRAINING_RECORD)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        record = json.load(f)
    speeds = [e["train_examples_per_second"] for e in record["epochs"] if "train_examples_per_second" in e]
    steady = speeds[1:] or speeds
    record["examples_per_second"] = statistics.median(steady) if steady else None
    return record
