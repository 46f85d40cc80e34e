"""Spans: a dataset cut into numbered batches, the way new data arrives in production.

A spanned input directory holds ``span-<N>/`` subdirectories (N = 1, 2, ...), each with the
dataset's four standard IDX files: that span's training images and its own eval images. A run
ingests the newest span (or a window of the newest ones); a directory without spans is one
dataset, as always.

``write_spans`` (``vae-mnist data spans``) cuts a dataset into N spans in source order, for demos
and tests, and can make chosen spans *drift*, each drift applied to the span's training and eval
images alike:

- ``fashion=F``: a fraction F of the images replaced by Fashion-MNIST images (another dataset
  arriving in the same feed);
- ``invert``: 255 - pixel (a scanner that inverts);
- ``rotate=D``: every image turned by D degrees, a multiple of 90 (a feeder turned around);
- ``without=D``: digit D missing (a class that stopped arriving).
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from components import datasets

SPAN_DIR = re.compile(r"span-(\d+)")
DRIFT_KINDS = ("fashion", "invert", "rotate", "without")


def span_dir(root: str, span: int) -> str:
    return os.path.join(root, f"span-{span}")


def find_spans(root: str) -> dict[int, str]:
    """{span number: directory} of a spanned input directory, oldest first; {} if it has none."""
    from tfx.dsl.io import fileio  # gs:// as well as local paths

    found = {}
    for name in fileio.listdir(root) if fileio.isdir(root) else []:
        match = SPAN_DIR.fullmatch(name.rstrip("/"))
        if match and fileio.isdir(os.path.join(root, name)):
            found[int(match.group(1))] = os.path.join(root, name.rstrip("/"))
    return dict(sorted(found.items()))


@dataclasses.dataclass(frozen=True)
class Drift:
    span: int
    kind: str
    value: float | None = None

    @classmethod
    def parse(cls, text: str) -> Drift:
        """``SPAN:KIND[=VALUE]``, e.g. ``3:rotate=90``, ``3:fashion=0.5``, ``3:invert``, ``3:without=4``."""
        span, colon, rest = text.partition(":")
        kind, equals, value = rest.partition("=")
        usage = f"--drift takes SPAN:KIND[=VALUE] with KIND one of {', '.join(DRIFT_KINDS)}, e.g. 3:rotate=90"
        if not colon or not span.isdigit() or int(span) < 1 or kind not in DRIFT_KINDS:
            raise ValueError(f"{usage}; got {text!r}")
        needs_value = kind != "invert"
        if needs_value != bool(equals):
            raise ValueError(f"{usage}; {kind} {'needs' if needs_value else 'takes no'} value, got {text!r}")
        try:
            number = float(value) if equals else None
        except ValueError:
            raise ValueError(f"{usage}; {value!r} is not a number") from None
        checks = {
            "fashion": (number is not None and 0 < number <= 1, "a fraction in (0, 1]"),
            "rotate": (number is not None and number % 90 == 0 and number % 360 != 0, "a multiple of 90 degrees"),
            "without": (number is not None and number in range(10), "a digit 0-9"),
            "invert": (True, ""),
        }
        ok, expected = checks[kind]
        if not ok:
            raise ValueError(f"--drift {kind} takes {expected}, got {text!r}")
        return cls(int(span), kind, number)

    def apply(
        self, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, fashion: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The drifted (images [n, 28, 28], labels [n])."""
        if self.kind == "invert":
            return 255 - images, labels
        if self.kind == "rotate":
            return np.ascontiguousarray(np.rot90(images, k=int(self.value) // 90, axes=(1, 2))), labels
        if self.kind == "without":
            keep = labels != int(self.value)
            return images[keep], labels[keep]
        # fashion: replace a fraction of the images; labels keep their 0-9 range (and mean nothing).
        images = images.copy()
        replaced = rng.choice(len(images), size=round(len(images) * self.value), replace=False)
        images[replaced] = fashion[rng.choice(len(fashion), size=len(replaced), replace=False)]
        return images, labels


def write_spans(
    source_dir: str,
    output_dir: str,
    count: int,
    drifts: list[Drift] = (),
    spec: datasets.DatasetSpec = datasets.MNIST,
    fashion_dir: str | None = None,
    seed: int = 0,
) -> dict[int, str]:
    """Cuts the dataset in ``source_dir`` into ``count`` spans under ``output_dir`` (each split in
    contiguous, source-order parts) and applies the drifts. Returns {span: directory}."""
    if count < 1:
        raise ValueError(f"--spans must be at least 1, got {count}")
    if find_spans(output_dir):
        raise ValueError(f"{output_dir} already holds spans; write new spans to an empty directory")
    for drift in drifts:
        if drift.span > count:
            raise ValueError(f"--drift {drift.span}:{drift.kind}: there are only {count} spans")
    fashion = None
    if any(d.kind == "fashion" for d in drifts):
        if not fashion_dir:
            raise ValueError("a fashion drift needs Fashion-MNIST (vae-mnist data fetch --dataset fashion_mnist)")
        fashion = np.concatenate([datasets.FASHION_MNIST.read_split(fashion_dir, s)[0] for s in ("train", "eval")])
    rng = np.random.default_rng(seed)
    parts = {split: [np.array_split(a, count) for a in spec.read_split(source_dir, split)] for split in spec.splits}
    written = {}
    for span in range(1, count + 1):
        arrays = {split: (images[span - 1], labels[span - 1]) for split, (images, labels) in parts.items()}
        for drift in (d for d in drifts if d.span == span):
            arrays = {split: drift.apply(*pair, rng, fashion) for split, pair in arrays.items()}
        directory = span_dir(output_dir, span)
        os.makedirs(directory, exist_ok=True)
        spec.write_splits(directory, arrays)
        written[span] = directory
    return written
