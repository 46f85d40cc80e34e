"""The drift gate's comparison on real MNIST: which per-image summaries see which drift.

Spans of 2,000 real MNIST training images, drifted with the same code as `vae-mnist data spans`;
the served model's score is exercised in tests/test_continuous_training.py.
"""

import os

import numpy as np
import pandas as pd
import pytest

from components import datasets
from components.drift_gate import DEFAULT_THRESHOLDS, LABEL, compare
from components.span_scores import SUMMARIES, summarize
from components.spans import Drift

SPAN = 2000


def frame(images: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    rows = pd.DataFrame({"split": "train", LABEL: labels.astype(np.int64)})
    for name, values in summarize(images).items():
        rows[name] = values
    return rows


@pytest.fixture(scope="module")
def two_spans(mnist_arrays):
    """(previous, new): two disjoint clean spans of real MNIST training images."""
    images, labels = mnist_arrays["train"]
    return (images[:SPAN], labels[:SPAN]), (images[SPAN : 2 * SPAN], labels[SPAN : 2 * SPAN])


def drifted_features(previous, new) -> dict[str, str]:
    return {c.feature: c.describe() for c in compare(frame(*new), frame(*previous), DEFAULT_THRESHOLDS) if c.drifted}


def test_a_clean_span_passes_on_every_feature(two_spans):
    comparisons = compare(frame(*two_spans[1]), frame(*two_spans[0]), DEFAULT_THRESHOLDS)
    assert {c.feature for c in comparisons} == {LABEL, *SUMMARIES}  # every model-free feature compared
    assert not [c.describe() for c in comparisons if c.drifted]


@pytest.mark.parametrize(
    ("drift", "expected"),
    [
        ("1:rotate=90", {"row_spread", "col_spread"}),  # digits are taller than wide
        ("1:invert", {"ink", "row_spread", "col_spread"}),
        ("1:without=4", {LABEL}),  # the pixels of the other digits look as ever
    ],
)
def test_a_drifted_span_is_caught_by_the_features_that_see_it(two_spans, drift, expected):
    previous, (images, labels) = two_spans
    new = Drift.parse(drift).apply(images, labels, np.random.default_rng(0))
    found = drifted_features(previous, new)
    assert expected <= set(found), found
    assert all("above the threshold" in line for line in found.values())


@pytest.mark.skipif(not os.path.isdir(datasets.FASHION_MNIST.debian_dir), reason="dataset-fashion-mnist not installed")
def test_half_fashion_mnist_is_caught(two_spans):
    fashion, _ = datasets.FASHION_MNIST.read_split(datasets.FASHION_MNIST.debian_dir, "eval", stop=SPAN)
    previous, (images, labels) = two_spans
    new = Drift.parse("1:fashion=0.5").apply(images, labels, np.random.default_rng(0), fashion)
    assert {"ink", "row_spread"} <= set(drifted_features(previous, new))


def test_a_half_turn_keeps_every_summary(two_spans):
    """Why the gate also compares the served model's score: a half turn maps (r, c) to (-r, -c),
    which leaves ink, both spreads and the slant as they were."""
    previous, (images, labels) = two_spans
    assert drifted_features(previous, Drift.parse("1:rotate=180").apply(images, labels, None)) == {}


def test_a_threshold_names_the_distance_it_allows(two_spans):
    new = frame(*two_spans[1])
    [ink] = [c for c in compare(new, frame(*two_spans[0]), {"ink": 0.0}) if c.feature == "ink"]
    assert ink.drifted and ink.describe().startswith("ink: Jensen-Shannon divergence 0.")
    assert ink.describe().endswith("above the threshold 0")
