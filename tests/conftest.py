"""Shared fixtures: real MNIST (fetched once, reused), small IDX datasets cut from it, and
pipeline runs on them. Pipeline runs are session-scoped: each costs tens of seconds."""

from __future__ import annotations

import os

import numpy as np
import pytest

import pipeline  # noqa: F401  (quiets import-time noise before TF loads)
from components import datasets, fetch, idx_format

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tests reuse the data `make run` fetched; CI fetches it once per clone.
DATA_ROOT = os.environ.get("VAE_MNIST_DATA_ROOT", os.path.join(REPO, "data"))
FAST_BEAM_ARGS = ("--direct_running_mode=in_memory",)


def write_idx_dataset(
    directory: str,
    arrays: dict[str, tuple[np.ndarray, np.ndarray]],
    spec: datasets.DatasetSpec = datasets.MNIST,
) -> str:
    """Writes {split: (images, labels)} under the dataset's standard file names."""
    os.makedirs(directory, exist_ok=True)
    for split_name, (images, labels) in arrays.items():
        split = spec.splits[split_name]
        idx_format.write_array(os.path.join(directory, split.images), images)
        idx_format.write_array(os.path.join(directory, split.labels), labels)
    return directory


def read_idx_dataset(directory: str, spec: datasets.DatasetSpec = datasets.MNIST) -> dict:
    return {
        name: (
            idx_format.read_array(os.path.join(directory, split.images), idx_format.IMAGES_MAGIC),
            idx_format.read_array(os.path.join(directory, split.labels), idx_format.LABELS_MAGIC),
        )
        for name, split in spec.splits.items()
    }


@pytest.fixture(scope="session")
def mnist_dir() -> str:
    """The full, verified MNIST dataset (fetched on first use)."""
    return fetch.fetch(datasets.MNIST, DATA_ROOT)


@pytest.fixture(scope="session")
def mnist_arrays(mnist_dir) -> dict:
    return read_idx_dataset(mnist_dir)


@pytest.fixture(scope="session")
def small_mnist(tmp_path_factory, mnist_arrays) -> str:
    """The first 2,000 training and 500 test images of real MNIST, as IDX files."""
    (x_train, y_train), (x_test, y_test) = mnist_arrays["train"], mnist_arrays["eval"]
    return write_idx_dataset(
        str(tmp_path_factory.mktemp("small_mnist")),
        {"train": (x_train[:2000], y_train[:2000]), "eval": (x_test[:500], y_test[:500])},
    )
