"""Shared fixtures: real MNIST (fetched once, reused), small IDX datasets cut from it, and
pipeline runs on them. Pipeline runs are session-scoped: each costs tens of seconds."""

from __future__ import annotations

import glob
import hashlib
import os

# isort: off
import pipeline  # noqa: F401  (first: quiets TensorFlow's and google-api-core's start-up noise)

# isort: on
import numpy as np
import pytest
import tensorflow as tf
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from components import datasets, fetch
from pipeline import local_runner, run_report
from pipeline.config import PipelineConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tests reuse the data `make run` fetched; CI fetches it once per clone.
DATA_ROOT = os.environ.get("VAE_MNIST_DATA_ROOT", os.path.join(REPO, "data"))
FAST_BEAM_ARGS = ("--direct_running_mode=in_memory",)
DATA_STAGES = ("IdxExampleGen", "ImportSchemaGen", "StatisticsGen", "ExampleValidator", "DataGate")
SMALL_RUN = {"preset": "smoke", "vae_overrides": {"epochs": 3}}
# Bounds a badly trained model still meets: for runs where only the regression check should decide.
LOOSE_BOUNDS = {
    "neg_elbo": 400.0,
    "reconstruction_error": 400.0,
    "pixel_mse": 0.2,
    "reconstruction_error_per_digit": 500.0,
    "pixel_mse_per_digit": 0.25,
}


def write_idx_dataset(
    directory: str,
    arrays: dict[str, tuple[np.ndarray, np.ndarray]],
    spec: datasets.DatasetSpec = datasets.MNIST,
) -> str:
    """Writes {split: (images, labels)} under the dataset's standard file names."""
    os.makedirs(directory, exist_ok=True)
    spec.write_splits(directory, arrays)
    return directory


def read_idx_dataset(directory: str, spec: datasets.DatasetSpec = datasets.MNIST) -> dict:
    return {name: spec.read_split(directory, name) for name in spec.splits}


def expected_splits(config: PipelineConfig, spec: datasets.DatasetSpec = datasets.MNIST) -> dict:
    """The splits IdxExampleGen should write from ``config.input_base``: the last
    ``validation_fraction`` of the training records (rounded) as ``valid``, the rest as ``train``."""
    source = read_idx_dataset(config.input_base, spec)
    images, labels = source.pop("train")
    cut = len(labels) - round(len(labels) * config.validation_fraction)
    return {"train": (images[:cut], labels[:cut]), "valid": (images[cut:], labels[cut:]), **source}


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


def run_local(config: PipelineConfig) -> None:
    tfx.orchestration.LocalDagRunner().run(local_runner.local_pipeline(config))


def read_examples(config: PipelineConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
    files = sorted(
        glob.glob(os.path.join(config.pipeline_root, "IdxExampleGen", "examples", "*", f"Split-{split}", "*"))
    )
    images, labels = [], []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        features = tf.train.Example.FromString(record).features.feature
        images.append(features["image"].int64_list.value)
        labels.append(features["label"].int64_list.value)
    return np.array(images), np.array(labels)


def served_files(serving_model_dir: str) -> dict[str, str]:
    """Every file under a model's serving directory with its SHA-256: what TF Serving would see."""
    result = {}
    for path in sorted(glob.glob(os.path.join(serving_model_dir, "**"), recursive=True)):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                result[os.path.relpath(path, serving_model_dir)] = hashlib.sha256(f.read()).hexdigest()
    return result


def run_like_tf_serving(saved_model_dir: str, signature: str, feeds: dict[str, np.ndarray]) -> dict:
    """A signature run the way TF Serving's C++ loader runs it: the 'serve' MetaGraph loaded into
    a TF1 session, inputs fed and outputs fetched by the tensor names in its SignatureDef."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], saved_model_dir)
        signature_def = meta_graph.signature_def[signature]
        fetches = {name: info.name for name, info in signature_def.outputs.items()}
        return session.run(fetches, {signature_def.inputs[name].name: value for name, value in feeds.items()})


def store_of(config: PipelineConfig) -> metadata_store.MetadataStore:
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = config.metadata_path
    return metadata_store.MetadataStore(connection)


def states(config: PipelineConfig) -> dict[str, str]:
    _, runs = run_report.latest_run(config.metadata_path, config.pipeline_name)
    return {r.node: r.state for r in runs}


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, small_mnist) -> PipelineConfig:
    """One whole pipeline run on 2,000 + 500 real MNIST images, with the default (multi-process) Beam."""
    config = PipelineConfig(input_dir=small_mnist, output_dir=str(tmp_path_factory.mktemp("small_run")), **SMALL_RUN)
    run_local(config)
    return config
