"""TF Serving's directory layout: ``<serving_root>/<model_name>/<version>/saved_model.pb``.

The one place that knows which pushed version is "the model served now". ServedModel (the
Evaluator's baseline), our Pusher (is this model already served?), the run summary and the
``predict`` client all ask here, through TFX's ``fileio`` so that ``gs://`` serving roots work
as well as local ones.
"""

from __future__ import annotations

import hashlib
import os

from tfx.dsl.io import fileio

SAVED_MODEL_FILE = "saved_model.pb"


def versions(model_dir: str) -> list[int]:
    """The numeric version directories under a model's base path, oldest first. TF Serving
    ignores every other name, so a directory named otherwise is never served."""
    if not fileio.isdir(model_dir):
        return []
    return sorted(int(name.rstrip("/")) for name in fileio.listdir(model_dir) if name.rstrip("/").isdigit())


def served_version(model_dir: str) -> int | None:
    """The version TF Serving serves from ``model_dir``: the highest numeric version that holds a
    SavedModel (TF Serving's default ``latest`` policy; a version still missing
    ``saved_model.pb`` is not loadable and the previous one stays served). None: nothing served."""
    for version in reversed(versions(model_dir)):
        if fileio.exists(os.path.join(model_dir, str(version), SAVED_MODEL_FILE)):
            return version
    return None


def fingerprint(saved_model_dir: str) -> str:
    """SHA-256 over every file's relative path and bytes: equal for byte-identical models, so a
    model that is already served is recognised whatever version directory it sits in."""
    digest = hashlib.sha256()
    files = []
    for root, _, names in fileio.walk(saved_model_dir):
        files += [os.path.join(root, name) for name in names]
    for path in sorted(files):
        digest.update(os.path.relpath(path, saved_model_dir).encode() + b"\0")
        with fileio.open(path, "rb") as f:
            digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()
