"""The served anomaly detector: one score, its conformal p-value and its threshold, fitted after training.

An image can be unlike the training images in two ways, and each of two scores catches one that
the other misses (bench/anomaly_auroc.py; BENCHMARKS.md has the measurements):

- it reconstructs badly (``reconstruction_error``, nats): another kind of image altogether, such as
  Fashion-MNIST's clothes. But a digit the model never saw can reconstruct well: a held-out 1 costs
  fewer nats than a familiar 8;
- its code lies off the training images' codes (``latent_mixture_nll``, model/latent_mixture.py):
  a digit the model never saw is coded between the clusters of the digits it knows. But clothes
  are coded near the digits.

``anomaly_score`` is the larger of the two, each as a robust z-score against normal images (its
median and spread over half the validation split): an image is as anomalous as its most anomalous
view. Unit: spreads of normal images (one is the standard deviation of a normal distribution with
the same interquartile range). The maximum, rather than a sum or Fisher's product of p-values, keeps
a far anomaly far ahead: one score far out is enough, and z-scores do not saturate the way
p-values do at 1/(n+1).

``anomaly_p_value`` is the conformal p-value of ``anomaly_score`` against the other half of the
validation split: (1 + how many of its n images score at least as high) / (1 + n). For a new normal
image (exchangeable with the validation images) P(p <= a) <= a, without assuming any distribution.
``is_anomaly`` is p <= ``VaeConfig.anomaly_false_positive_rate``, which is ``anomaly_score >
threshold``. The halves: even-numbered validation images choose the mixture's size and set the
z-scores; odd-numbered ones calibrate. A p-value is valid only against images that chose nothing.

Everything is computed from the encoder's z_mean and the reconstruction at it, with constants the
SavedModel stores, so TF Serving serves the p-value, not only the score.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from model.latent_mixture import LatentMixture
from model.losses import reconstruction_nats

FUSED = ("reconstruction_error", "latent_mixture_nll")
IQR_PER_SPREAD = 1.349  # a normal distribution's interquartile range, in standard deviations
_BATCH = 1000


def conformal_p_value(reference_sorted: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The share of reference scores at least as high as each score, (1 + count) / (1 + n): the
    conformal p-value, valid for an image exchangeable with the reference images."""
    at_least = len(reference_sorted) - np.searchsorted(reference_sorted, scores, side="left")
    return (1.0 + at_least) / (1.0 + len(reference_sorted))


def robust_spread(reference: np.ndarray) -> tuple[float, float]:
    """(median, interquartile range / IQR_PER_SPREAD) of reference scores."""
    low, median, high = np.quantile(reference, [0.25, 0.5, 0.75])
    return float(median), float(max(high - low, 1e-6) / IQR_PER_SPREAD)


def robust_z(reference: np.ndarray, scores):
    """Scores (NumPy or TensorFlow) in units of the reference's spread, from its median."""
    median, spread = robust_spread(reference)
    return (scores - median) / spread


@dataclasses.dataclass(frozen=True)
class Detector:
    """The mixture over the training codes, each ``FUSED`` score of the reference half of the
    validation split (sorted), and the served score of the calibration half (sorted)."""

    mixture: LatentMixture
    reference_scores: dict[str, np.ndarray]
    calibration_scores: np.ndarray
    false_positive_rate: float

    def parts(self, reconstruction_error: tf.Tensor, z_mean: tf.Tensor) -> dict[str, tf.Tensor]:
        """Each ``FUSED`` score [N], in nats."""
        return {"reconstruction_error": reconstruction_error, "latent_mixture_nll": self.mixture.nll(z_mean)}

    def score(self, parts: dict[str, tf.Tensor]) -> tf.Tensor:
        """``anomaly_score`` [N]: the largest robust z-score of the parts."""
        return tf.reduce_max(tf.stack([robust_z(self.reference_scores[name], parts[name]) for name in FUSED]), axis=0)

    def outputs(self, reconstruction_error: tf.Tensor, z_mean: tf.Tensor) -> dict[str, tf.Tensor]:
        """What the signatures serve: ``anomaly_score``, ``anomaly_p_value`` and ``is_anomaly`` [N]."""
        score = self.score(self.parts(reconstruction_error, z_mean))
        calibration = tf.constant(self.calibration_scores, tf.float32)
        count = tf.cast(tf.size(calibration), tf.float32)
        below = tf.cast(tf.searchsorted(calibration, score, side="left"), tf.float32)
        return {
            "anomaly_score": score,
            "anomaly_p_value": (1.0 + count - below) / (1.0 + count),
            "is_anomaly": score > self.threshold,
        }

    @property
    def threshold(self) -> float:
        """The score above which p <= false_positive_rate: at most m = floor(a (n + 1)) - 1
        calibration images may score at least as high, so it is the (m + 1)-th highest of them.
        With fewer than 1/a - 1 calibration images no p-value reaches a: nothing is flagged (inf)."""
        ordered = self.calibration_scores
        allowed = math.floor(self.false_positive_rate * (len(ordered) + 1) + 1e-9) - 1
        return float(ordered[len(ordered) - 1 - allowed]) if allowed >= 0 else math.inf

    def to_dict(self) -> dict:
        """What the exported model records for people and reports (the arrays stay in the graph):
        ``anomaly_score`` above ``threshold`` flags an image (its p-value is at most
        ``false_positive_rate``), calibrated on ``images`` validation images."""
        return {
            "threshold": self.threshold,
            "false_positive_rate": self.false_positive_rate,
            "images": len(self.calibration_scores),
            "score": f"max robust z of {', '.join(FUSED)}",
            "spread": {
                name: dict(zip(("median", "spread"), robust_spread(values), strict=True))
                for name, values in self.reference_scores.items()
            },
            "mixture_components": len(self.mixture.weights),
            "reference_images": len(next(iter(self.reference_scores.values()))),
        }


def encode(encoder, batches: Iterable) -> np.ndarray:
    """z_mean [n, latent] of batches of pixels ([b, 784] in [0, 1])."""
    return np.concatenate([encoder(tf.convert_to_tensor(b, tf.float32), training=False)[0].numpy() for b in batches])


def batches(pixels: np.ndarray) -> list[tf.Tensor]:
    """``pixels`` in batches of ``_BATCH``, as tensors."""
    return [tf.constant(pixels[i : i + _BATCH], tf.float32) for i in range(0, len(pixels), _BATCH)]


def _in_batches(score, encoder, decoder, pixels: np.ndarray) -> dict[str, np.ndarray]:
    parts: dict[str, list] = {}
    for batch in batches(pixels):
        z_mean, _ = encoder(batch, training=False)
        for name, value in score(reconstruction_nats(batch, decoder(z_mean, training=False)), z_mean).items():
            parts.setdefault(name, []).append(value.numpy())
    return {name: np.concatenate(values) for name, values in parts.items()}


def fit_detector(
    encoder, decoder, training_codes: np.ndarray, validation: np.ndarray, false_positive_rate: float, seed: int = 0
) -> Detector:
    """The Detector of a trained VAE: the mixture fitted to ``training_codes`` ([n, latent]), its
    size and the z-scores set by the even-numbered ``validation`` images (pixels [n, 784] in [0, 1]),
    the p-values by the odd-numbered."""
    reference, calibration = validation[0::2], validation[1::2]
    mixture = LatentMixture.fit(training_codes, encode(encoder, batches(reference)), seed=seed)
    unfitted = Detector(mixture, {}, np.zeros(0, np.float32), false_positive_rate)
    parts = _in_batches(unfitted.parts, encoder, decoder, reference)
    scoring = dataclasses.replace(unfitted, reference_scores={name: np.sort(parts[name]) for name in FUSED})
    calibration_scores = np.sort(_in_batches(scoring.outputs, encoder, decoder, calibration)["anomaly_score"])
    detector = dataclasses.replace(scoring, calibration_scores=calibration_scores)
    if math.isinf(detector.threshold):
        logging.warning(
            "%d calibration images cannot certify a false-positive rate of %g: nothing will be flagged",
            len(calibration_scores),
            false_positive_rate,
        )
    return detector
