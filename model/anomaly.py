"""Anomaly scores: how badly the VAE explains an image, measured so that simple images do not pass.

A likelihood alone is a poor anomaly score: it tracks how complex an image is more than how
familiar. A 1 the model never saw costs fewer nats than a familiar 8, because a 1 is mostly
background. ``bench/anomaly_auroc.py`` measures each candidate below over ten held-out digits
(BENCHMARKS.md has the table); the serving signatures return ``SERVED`` as ``anomaly_score``.

Every candidate is in nats per image, computed by the model's own encoder and decoder:

- ``neg_elbo``: the negative ELBO at the posterior mean (what the Evaluator bounds);
- ``reconstruction_error``: its reconstruction term alone;
- ``iw_nll``: the importance-weighted estimate of -log p(x) (IWAE bound, ``IW_SAMPLES`` samples);
- ``png_corrected``: Serra et al. (ICLR 2020) as written, -log p(x) minus the image's PNG code
  length. Their score subtracts bits from bits; here a grey-level BCE, which is not a code length
  of the 8-bit image, meets a real one about ten times larger, and the PNG length swamps it;
- ``excess_nats``: -ELBO minus the grey-level entropy floor sum_i H(x_i), the least BCE any model
  reaches on x (grey edge pixels cost nats to every model). What is left is the sum over pixels of
  KL(Bernoulli(x_i) || Bernoulli(p_i)): the nats the model loses beyond what the image itself
  forces. The correction is in the BCE's own units, so nothing mixes. Served as ``anomaly_score``;
- ``complexity_residual``: -ELBO minus ``slope`` times that floor, the slope fitted on the
  validation split by least squares (about 3): how much worse the image is than normal images of
  its complexity. It ranks held-out digits better, but a fitted slope above 1 rewards complexity
  itself, and another dataset with more grey (Fashion-MNIST) then looks normal;
- ``latent_nll``: how unlikely the code is under the prior, |z_mean|^2 / 2;
- ``latent_mixture_nll``: how unlikely the code is where the training codes lie: -log p(z_mean)
  under a Gaussian mixture fitted to them (model/latent_mixture.py);
- ``mixture_elbo``: the -ELBO with that mixture as the prior instead of N(0, I) (its KL term as
  E_q[log q(z|x)] - log p_mix(z_mean)); ``mixture_excess``: the same beyond the entropy floor;
- ``fisher``: the ``FUSED`` scores combined, each turned into its conformal p-value against half
  the validation images, -sum log p (Fisher's statistic, up to a factor 2): an image must look
  normal to every score to look normal; ``max_z`` and ``sum_z``: the same scores as robust
  z-scores against that half (``robust_z``), their maximum and their sum.

``calibrate`` sets the threshold on the validation split after training; it is stored in the
exported model.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from model.latent_mixture import LatentMixture
from model.losses import kl_nats, reconstruction_nats
from schema import IMAGE_SIDE

IW_SAMPLES = 64
CANDIDATES = (
    "neg_elbo",
    "reconstruction_error",
    "iw_nll",
    "png_corrected",
    "excess_nats",
    "complexity_residual",
    "latent_nll",
    "latent_mixture_nll",
    "mixture_elbo",
    "mixture_excess",
    "fisher",
    "max_z",
    "sum_z",
)
FUSIONS = ("fisher", "max_z", "sum_z")
FUSED = ("excess_nats", "latent_mixture_nll")
# Served as anomaly_score: the best measured candidate that also catches another dataset (BENCHMARKS.md).
SERVED = "excess_nats"
_BATCH = 1000


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The threshold above which the served score flags an anomaly: ``false_positive_rate`` of the
    ``images`` validation images lie above it."""

    threshold: float
    false_positive_rate: float
    images: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def entropy_floor(pixels: tf.Tensor) -> tf.Tensor:
    """sum_i H(x_i) in nats, the smallest BCE any prediction reaches on grey levels x in [0, 1]."""
    x = tf.clip_by_value(pixels, 1e-7, 1.0 - 1e-7)
    return reconstruction_nats(pixels, tf.math.log(x) - tf.math.log1p(-x))


def png_nats(pixels: tf.Tensor) -> tf.Tensor:
    """Each image's PNG code length (maximum compression), in nats: a generic compressor's
    measure of its complexity."""
    images = tf.cast(tf.round(tf.reshape(pixels, [-1, IMAGE_SIDE, IMAGE_SIDE, 1]) * 255.0), tf.uint8)
    lengths = tf.map_fn(
        lambda image: tf.strings.length(tf.io.encode_png(image, compression=9)),
        images,
        fn_output_signature=tf.int32,
    )
    return tf.cast(lengths, tf.float32) * 8.0 * math.log(2.0)


def iw_nll(encoder, decoder, pixels: tf.Tensor, samples: int = IW_SAMPLES, seed: int = 0) -> tf.Tensor:
    """-log p(x) estimated with ``samples`` importance samples from q(z|x) (deterministic: the
    noise is a stateless draw from ``seed``)."""
    z_mean, z_log_var = encoder(pixels, training=False)
    batch, latent = tf.shape(z_mean)[0], tf.shape(z_mean)[1]
    noise = tf.random.stateless_normal(tf.stack([samples, batch, latent]), seed=[seed, 0])
    z = z_mean + tf.exp(0.5 * z_log_var) * noise  # [samples, batch, latent]
    logits = decoder(tf.reshape(z, [-1, latent]), training=False)
    log_px_z = tf.reshape(-reconstruction_nats(tf.tile(pixels, [samples, 1]), logits), [samples, batch])
    log_2pi = math.log(2.0 * math.pi)
    log_pz = -0.5 * tf.reduce_sum(log_2pi + tf.square(z), axis=-1)
    log_qz = -0.5 * tf.reduce_sum(log_2pi + z_log_var + tf.square(noise), axis=-1)
    return -(tf.reduce_logsumexp(log_px_z + log_pz - log_qz, axis=0) - math.log(samples))


def anomaly_score(neg_elbo: tf.Tensor, pixels: tf.Tensor) -> tf.Tensor:
    """The served score (``excess_nats``): the -ELBO beyond the image's grey-level entropy floor."""
    return neg_elbo - entropy_floor(pixels)


def _neg_elbo(encoder, decoder, pixels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """(-ELBO, its reconstruction term, z_mean, z_log_var) at the posterior mean."""
    z_mean, z_log_var = encoder(pixels, training=False)
    reconstruction = reconstruction_nats(pixels, decoder(z_mean, training=False))
    return reconstruction + kl_nats(z_mean, z_log_var), reconstruction, z_mean, z_log_var


def _neg_elbo_and_floor(encoder, decoder, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    neg_elbo, floor = [], []
    for start in range(0, len(pixels), _BATCH):
        batch = tf.constant(pixels[start : start + _BATCH], tf.float32)
        neg_elbo.append(_neg_elbo(encoder, decoder, batch)[0].numpy())
        floor.append(entropy_floor(batch).numpy())
    return np.concatenate(neg_elbo), np.concatenate(floor)


def calibrate(encoder, decoder, validation: np.ndarray, false_positive_rate: float) -> Calibration:
    """The threshold that flags ``false_positive_rate`` of the validation pixels ([n, 784] in [0, 1])."""
    neg_elbo, floor = _neg_elbo_and_floor(encoder, decoder, validation)
    threshold = float(np.quantile(neg_elbo - floor, 1.0 - false_positive_rate, method="higher"))
    return Calibration(threshold, false_positive_rate, len(validation))


def complexity_slope(encoder, decoder, validation: np.ndarray) -> float:
    """The least-squares slope of -ELBO on the entropy floor over validation pixels (for
    ``complexity_residual``)."""
    neg_elbo, floor = _neg_elbo_and_floor(encoder, decoder, validation)
    return float(np.polyfit(floor, neg_elbo, 1)[0])


@dataclasses.dataclass(frozen=True)
class Reference:
    """What some candidates compare an image with, fitted after training: the complexity slope,
    the mixture over the training codes, and each ``FUSED`` score of half the validation images,
    sorted (the other half is left for calibrating the fused score)."""

    slope: float
    mixture: LatentMixture | None = None
    validation_scores: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def fit_reference(encoder, decoder, training: np.ndarray, validation: np.ndarray, seed: int = 0) -> Reference:
    """The Reference for pixels ([n, 784] in [0, 1]) of training and validation images: the mixture
    fitted to the training codes and chosen on half the validation images, whose ``FUSED`` scores
    are the references; the other half is left for calibration."""

    def codes(pixels: np.ndarray) -> np.ndarray:
        parts = [
            encoder(tf.constant(pixels[i : i + _BATCH], tf.float32), training=False)[0].numpy()
            for i in range(0, len(pixels), _BATCH)
        ]
        return np.concatenate(parts)

    half = validation[0::2]
    mixture = LatentMixture.fit(codes(training), codes(half), seed=seed)
    base = Reference(complexity_slope(encoder, decoder, validation), mixture)
    scores = candidate_scores(encoder, decoder, half, base, FUSED)
    return dataclasses.replace(base, validation_scores={name: np.sort(scores[name]) for name in FUSED})


def conformal_p_value(reference_sorted: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The share of reference scores at least as high as each score, (1 + count) / (1 + n): the
    conformal p-value, valid for an image exchangeable with the reference images."""
    at_least = len(reference_sorted) - np.searchsorted(reference_sorted, scores, side="left")
    return (1.0 + at_least) / (1.0 + len(reference_sorted))


def _batch_scores(encoder, decoder, batch: tf.Tensor, reference: Reference, wanted: set[str]) -> dict[str, tf.Tensor]:
    neg_elbo, reconstruction, z_mean, z_log_var = _neg_elbo(encoder, decoder, batch)
    floor = entropy_floor(batch)
    scores = {
        "neg_elbo": neg_elbo,
        "reconstruction_error": reconstruction,
        "excess_nats": neg_elbo - floor,
        "complexity_residual": neg_elbo - reference.slope * floor,
        "latent_nll": 0.5 * tf.reduce_sum(tf.square(z_mean), axis=-1),
    }
    if wanted & {"latent_mixture_nll", "mixture_elbo", "mixture_excess"}:
        scores["latent_mixture_nll"] = reference.mixture.nll(z_mean)
        # E_q[log q(z|x)] for a diagonal Gaussian: minus its entropy.
        neg_entropy = -0.5 * tf.reduce_sum(1.0 + math.log(2.0 * math.pi) + z_log_var, axis=-1)
        scores["mixture_elbo"] = reconstruction + neg_entropy + scores["latent_mixture_nll"]
        scores["mixture_excess"] = scores["mixture_elbo"] - floor
    if wanted & {"iw_nll", "png_corrected"}:
        scores["iw_nll"] = iw_nll(encoder, decoder, batch)
        scores["png_corrected"] = scores["iw_nll"] - png_nats(batch)
    return scores


def robust_z(reference_sorted: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Scores in units of the reference's spread: (score - median) / (interquartile range / 1.349),
    the standard deviation of a normal with that range. Unlike a p-value it does not saturate, so an
    image far beyond every reference image stays far ahead of one just beyond them."""
    low, median, high = np.quantile(reference_sorted, [0.25, 0.5, 0.75])
    return (scores - median) / ((high - low) / 1.349)


def candidate_scores(
    encoder, decoder, pixels: np.ndarray, reference: Reference, names: tuple[str, ...] = CANDIDATES
) -> dict[str, np.ndarray]:
    """The ``names`` candidate scores of ``pixels`` ([N, 784] in [0, 1]), each [N] in nats (``fisher``:
    in -log p). The importance-weighted ones decode ``IW_SAMPLES`` times per image: leave them out
    to compare larger networks in minutes."""
    wanted = set(names) | (set(FUSED) if set(FUSIONS) & set(names) else set())
    parts: dict[str, list] = {name: [] for name in wanted - set(FUSIONS)}
    for start in range(0, len(pixels), _BATCH):
        scores = _batch_scores(
            encoder, decoder, tf.constant(pixels[start : start + _BATCH], tf.float32), reference, wanted
        )
        for name in parts:
            parts[name].append(scores[name].numpy())
    result = {name: np.concatenate(values) for name, values in parts.items()}
    if "fisher" in names:
        result["fisher"] = -sum(
            np.log(conformal_p_value(reference.validation_scores[name], result[name])) for name in FUSED
        )
    if {"max_z", "sum_z"} & set(names):
        z = np.stack([robust_z(reference.validation_scores[name], result[name]) for name in FUSED])
        result["max_z"], result["sum_z"] = z.max(axis=0), z.sum(axis=0)
    return {name: result[name] for name in names}
