"""What the tests share besides fixtures: real MNIST's location, small IDX datasets written and
read back, pipeline runs and what ML Metadata recorded of them, and a SavedModel run the way TF
Serving runs it. Fixtures live in conftest.py; tests import these from here."""

from __future__ import annotations

import glob
import hashlib
import os

# isort: off
import pipeline  # noqa: F401  (first: quiets TensorFlow's and google-api-core's start-up noise)

# isort: on
import numpy as np
import tensorflow as tf
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.dsl.io import fileio

from components import datasets
from pipeline import local_runner
from pipeline.config import PipelineConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tests reuse the data `make run` fetched; CI fetches it once per clone.
DATA_ROOT = os.environ.get("VAE_MNIST_DATA_ROOT", os.path.join(REPO, "data"))
# The stages that read and judge the data, before Transform.
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
    """Every file under a model's serving directory (local or in a bucket) with its SHA-256: what
    TF Serving would see."""
    result = {}
    for directory, _, names in fileio.walk(serving_model_dir):
        for name in names:
            path = os.path.join(directory, name)
            with fileio.open(path, "rb") as f:
                result[os.path.relpath(path, serving_model_dir)] = hashlib.sha256(f.read()).hexdigest()
    return dict(sorted(result.items()))


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
    return {node: run.state for node, run in local_runner.last_run(config).items()}
