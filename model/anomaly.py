"""Anomaly scores: how badly the VAE explains an image, measured so that simple images do not pass.

A likelihood alone is a poor anomaly score: it tracks how complex an image is more than how
familiar. A 1 the model never saw costs fewer nats than a familiar 8, because a 1 is mostly
background. ``bench/anomaly_auroc.py`` measures each candidate below over ten held-out digits
(BENCHMARKS.md has the table); the serving signatures return ``SERVED`` as ``anomaly_score``
(model/detector.py computes it in the SavedModel; this module only measures).

Every candidate but the fusions is in nats per image, computed by the model's own encoder and decoder:

- ``neg_elbo``: the negative ELBO at the posterior mean (what the Evaluator bounds);
- ``reconstruction_error``: its reconstruction term alone;
- ``iw_nll``: the importance-weighted estimate of -log p(x) (IWAE bound, ``IW_SAMPLES`` samples);
- ``png_corrected``: Serra et al. (ICLR 2020) as written, -log p(x) minus the image's PNG code
  length. Their score subtracts bits from bits; here a grey-level BCE, which is not a code length
  of the 8-bit image, meets a real one about ten times larger, and the PNG length swamps it;
- ``excess_nats``: -ELBO minus the grey-level entropy floor sum_i H(x_i), the least BCE any model
  reaches on x (grey edge pixels cost nats to every model). What is left is the sum over pixels of
  KL(Bernoulli(x_i) || Bernoulli(p_i)): the nats the model loses beyond what the image itself
  forces. The correction is in the BCE's own units, so nothing mixes. Served until issue 28;
- ``complexity_residual``: -ELBO minus ``slope`` times that floor, the slope fitted on the
  validation split by least squares (about 3): how much worse the image is than normal images of
  its complexity. It ranks held-out digits better, but a fitted slope above 1 rewards complexity
  itself, and another dataset with more grey (Fashion-MNIST) then looks normal;
- ``latent_nll``: how unlikely the code is under the prior, |z_mean|^2 / 2;
- ``latent_mixture_nll``: how unlikely the code is where the training codes lie: -log p(z_mean)
  under a Gaussian mixture fitted to them (model/latent_mixture.py);
- ``mixture_elbo``: the -ELBO with that mixture as the prior instead of N(0, I) (its KL term as
  E_q[log q(z|x)] - log p_mix(z_mean)); ``mixture_excess``: the same beyond the entropy floor;
- ``likelihood_ratio``: Ren et al. (NeurIPS 2019), -ELBO minus the -ELBO of a background model,
  the same network trained on the training images with a share of their pixels replaced by noise
  (bench/anomaly_auroc.py trains it with ``--background``). What both models explain, such as the
  background and the stroke statistics, cancels; what only the digits teach remains;
- ``max_z``: the served ``anomaly_score`` (model/detector.py): the larger of the ``FUSED`` scores'
  robust z-scores against half the validation images; ``sum_z``: their sum; ``fisher``: each
  turned into its conformal p-value against that half, -sum log p (Fisher's statistic, up to a
  factor 2): p-values saturate at 1/(n+1), so far anomalies tie.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from model import detector as detectors
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
    "likelihood_ratio",
    "fisher",
    "max_z",
    "sum_z",
)
FUSIONS = ("fisher", "max_z", "sum_z")
# Served as anomaly_score (model/detector.py): the best measured candidate that also catches
# another dataset (BENCHMARKS.md).
SERVED = "max_z"
_BATCH = 1000


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


def _neg_elbo(encoder, decoder, pixels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """(-ELBO, its reconstruction term, z_mean, z_log_var) at the posterior mean."""
    z_mean, z_log_var = encoder(pixels, training=False)
    reconstruction = reconstruction_nats(pixels, decoder(z_mean, training=False))
    return reconstruction + kl_nats(z_mean, z_log_var), reconstruction, z_mean, z_log_var


def complexity_slope(encoder, decoder, validation: np.ndarray) -> float:
    """The least-squares slope of -ELBO on the entropy floor over validation pixels (for
    ``complexity_residual``)."""
    neg_elbo, floor = [], []
    for start in range(0, len(validation), _BATCH):
        batch = tf.constant(validation[start : start + _BATCH], tf.float32)
        neg_elbo.append(_neg_elbo(encoder, decoder, batch)[0].numpy())
        floor.append(entropy_floor(batch).numpy())
    return float(np.polyfit(np.concatenate(floor), np.concatenate(neg_elbo), 1)[0])


@dataclasses.dataclass(frozen=True)
class Reference:
    """What some candidates compare an image with, fitted after training: the complexity slope and
    the served detector (the mixture over the training codes, the validation halves' scores)."""

    slope: float
    detector: detectors.Detector
    background: object = None  # a background VAE for ``likelihood_ratio``, when one was trained


def fit_reference(
    encoder, decoder, training: np.ndarray, validation: np.ndarray, false_positive_rate: float, seed: int = 0
) -> Reference:
    """The Reference for pixels ([n, 784] in [0, 1]) of training and validation images; the detector
    is fitted as the Trainer fits it."""
    codes = detectors.encode(encoder, detectors.batches(training))
    detector = detectors.fit_detector(encoder, decoder, codes, validation, false_positive_rate, seed=seed)
    return Reference(complexity_slope(encoder, decoder, validation), detector)


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
    if wanted & {"latent_mixture_nll", "mixture_elbo", "mixture_excess", *FUSIONS}:
        scores["latent_mixture_nll"] = reference.detector.mixture.nll(z_mean)
        # E_q[log q(z|x)] for a diagonal Gaussian: minus its entropy.
        neg_entropy = -0.5 * tf.reduce_sum(1.0 + math.log(2.0 * math.pi) + z_log_var, axis=-1)
        scores["mixture_elbo"] = reconstruction + neg_entropy + scores["latent_mixture_nll"]
        scores["mixture_excess"] = scores["mixture_elbo"] - floor
        scores["max_z"] = reference.detector.score(scores)
    if "likelihood_ratio" in wanted:
        scores["likelihood_ratio"] = (
            neg_elbo - _neg_elbo(reference.background.encoder, reference.background.decoder, batch)[0]
        )
    if wanted & {"iw_nll", "png_corrected"}:
        scores["iw_nll"] = iw_nll(encoder, decoder, batch)
        scores["png_corrected"] = scores["iw_nll"] - png_nats(batch)
    return scores


def candidate_scores(
    encoder, decoder, pixels: np.ndarray, reference: Reference, names: tuple[str, ...] = CANDIDATES
) -> dict[str, np.ndarray]:
    """The ``names`` candidate scores of ``pixels`` ([N, 784] in [0, 1]), each [N]. The
    importance-weighted ones decode ``IW_SAMPLES`` times per image: leave them out to compare
    larger networks in minutes."""
    wanted = set(names) | (set(detectors.FUSED) if set(FUSIONS) & set(names) else set())
    parts: dict[str, list] = {name: [] for name in wanted - {"fisher", "sum_z"}}
    for start in range(0, len(pixels), _BATCH):
        scores = _batch_scores(
            encoder, decoder, tf.constant(pixels[start : start + _BATCH], tf.float32), reference, wanted
        )
        for name in parts:
            parts[name].append(scores[name].numpy())
    result = {name: np.concatenate(values) for name, values in parts.items()}
    references = reference.detector.reference_scores
    if "fisher" in names:
        result["fisher"] = -sum(
            np.log(detectors.conformal_p_value(references[name], result[name])) for name in detectors.FUSED
        )
    if "sum_z" in names:
        result["sum_z"] = sum(detectors.robust_z(references[name], result[name]) for name in detectors.FUSED)
    return {name: result[name] for name in names}
