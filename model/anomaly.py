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
- ``latent_nll``: how unlikely the code is under the prior, |z_mean|^2 / 2.

``calibrate`` sets the threshold on the validation split after training; it is stored in the
exported model.
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

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
)
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


def _neg_elbo(encoder, decoder, pixels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    z_mean, z_log_var = encoder(pixels, training=False)
    reconstruction = reconstruction_nats(pixels, decoder(z_mean, training=False))
    return reconstruction + kl_nats(z_mean, z_log_var), reconstruction, z_mean


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


def candidate_scores(
    encoder, decoder, pixels: np.ndarray, slope: float, names: tuple[str, ...] = CANDIDATES
) -> dict[str, np.ndarray]:
    """The ``names`` candidate scores of ``pixels`` ([N, 784] in [0, 1]), each [N] in nats;
    ``slope`` is ``complexity_slope``'s. The importance-weighted ones decode ``IW_SAMPLES`` times
    per image: leave them out to compare larger networks in minutes."""
    parts: dict[str, list] = {name: [] for name in names}
    for start in range(0, len(pixels), _BATCH):
        batch = tf.constant(pixels[start : start + _BATCH], tf.float32)
        neg_elbo, reconstruction, z_mean = _neg_elbo(encoder, decoder, batch)
        floor = entropy_floor(batch)
        scores = {
            "neg_elbo": neg_elbo,
            "reconstruction_error": reconstruction,
            "excess_nats": anomaly_score(neg_elbo, batch),
            "complexity_residual": neg_elbo - slope * floor,
            "latent_nll": 0.5 * tf.reduce_sum(tf.square(z_mean), axis=-1),
        }
        if {"iw_nll", "png_corrected"} & set(names):
            scores["iw_nll"] = iw_nll(encoder, decoder, batch)
            scores["png_corrected"] = scores["iw_nll"] - png_nats(batch)
        for name in names:
            parts[name].append(scores[name].numpy())
    return {name: np.concatenate(values) for name, values in parts.items()}
