"""Shared fixtures: real MNIST (fetched once, reused), small IDX datasets cut from it, and
pipeline runs on them. Pipeline runs are session-scoped: each costs tens of seconds. The helpers
they use, and tests import, are in tests/helpers.py."""

from __future__ import annotations

# isort: off
import pipeline  # noqa: F401  (first: quiets TensorFlow's and google-api-core's start-up noise)

# isort: on
import pytest

from components import datasets, fetch, object_store
from pipeline.config import PipelineConfig
from pipeline.local_runner import run_locally
from tests.helpers import DATA_ROOT, SMALL_RUN, read_idx_dataset, write_idx_dataset
from tests.s3_server import MotoServer


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


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, small_mnist) -> PipelineConfig:
    """One whole pipeline run on 2,000 + 500 real MNIST images, with the default Beam (in-process)."""
    config = PipelineConfig(input_dir=small_mnist, output_dir=str(tmp_path_factory.mktemp("small_run")), **SMALL_RUN)
    run_locally(config, progress=None)
    return config


@pytest.fixture(scope="session")
def s3_store():
    """A real S3-compatible server (moto's) on loopback, reached through AWS's standard variables,
    set for the whole session as a user or a pod sets them."""
    server = MotoServer()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in server.env().items():
            patch.setenv(name, value)
        try:
            yield server
        finally:
            server.stop()


def new_bucket(name: str) -> str:
    """An empty bucket on the session's S3 server; returns s3://<name>."""
    object_store.client().create_bucket(Bucket=name)
    return f"s3://{name}"
