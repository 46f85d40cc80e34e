"""The two stacks vae-mnist runs on, and everything that differs between them, in one place.

- ``current``: TFX 1.21 (TF 2.21, TFMA 0.52, Beam 2.77, protobuf 6, numpy 2) on Python 3.11-3.13.
  Its ml-metadata and TFDV wheels need glibc 2.39.
- ``fallback``: TFX 1.16 (TF 2.16, TFMA 0.47, Beam 2.74, protobuf 3.20, numpy 1.26) on Python
  3.10, for hosts with an older glibc (Debian 12, Ubuntu 22.04).

pyproject.toml picks the stack's packages by Python version, Make picks the Python
(``make stack``), and each stack has its own lock (``locks/``). What the code itself must do
differently lives here, and is kept small by writing code both stacks accept: TFMA's config protos
come from ``tensorflow_model_analysis.proto.config_pb2`` on both (TFMA 0.52 dropped most of them
from its top level), ``tensorboard`` is our own dependency (TF >= 2.20 no longer brings it).

Importing this module imports no TensorFlow.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

__all__ = ["name", "versions", "describe", "configure_environment"]

CURRENT, FALLBACK = "current", "fallback"


def name() -> str:
    """``current`` or ``fallback``, by the installed TFX."""
    return FALLBACK if _version("tfx").startswith("1.16.") else CURRENT


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """The stack's name and the versions that define it (the run summary, ``--version`` and every
    benchmark result record them)."""
    return {
        "name": name(),
        "tfx": _version("tfx"),
        "tensorflow": _version("tensorflow"),
        "apache_beam": _version("apache-beam"),
        "python": platform.python_version(),
    }


def describe() -> str:
    """One line naming the stack: TFX, TensorFlow, Python (for ``--version`` and run summaries)."""
    v = versions()
    return f"TFX {v['tfx']}, TensorFlow {v['tensorflow']}, Python {v['python']} ({v['name']} stack)"


def configure_environment() -> None:
    """Environment variables that must be set before TensorFlow is imported.

    ``TF_USE_LEGACY_KERAS=1``: ``tf.keras`` is Keras 2 (tf_keras), as in the pods. TFX 1.21's
    image sets it (``tfx/tools/docker/Dockerfile``); TFT 1.16 sets it itself when imported. Without
    it a local run on TF 2.21 would give TFX's and TFMA's internals Keras 3 while the pod gives
    them Keras 2. Our models are built with ``tf_keras`` either way.
    """
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
