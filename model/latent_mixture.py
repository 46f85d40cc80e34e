"""A Gaussian mixture over the VAE's latent codes: where the training images' codes really lie.

The VAE's prior N(0, I) is what the KL term pulls codes toward, not where they end up: the
aggregate posterior of MNIST is a set of digit clusters with gaps between them. A code in a gap
(an image unlike any training digit, however well it reconstructs) is unlikely under a mixture
fitted to the training codes and likely under N(0, I). The fit is scikit-learn's EM (in TFX's
own dependencies, on both stacks); the density is evaluated in TensorFlow, so the SavedModel
serves it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

# The mixture sizes tried; the one whose fit gives held-out normal codes (validation images) the
# highest mean log-likelihood is kept: the test images never choose.
COMPONENT_CHOICES = (10, 20, 40)
FIT_CODES = 20_000  # codes the EM sees: more buys nothing measurable, and EM is O(codes)


@dataclasses.dataclass(frozen=True)
class LatentMixture:
    """Weights [K], means [K, D] and precision Cholesky factors [K, D, D] (scikit-learn's)."""

    weights: np.ndarray
    means: np.ndarray
    precision_cholesky: np.ndarray

    @classmethod
    def fit(cls, codes: np.ndarray, held_out: np.ndarray, seed: int = 0) -> LatentMixture:
        """The mixture of ``COMPONENT_CHOICES`` fitted to ``codes`` that explains ``held_out`` (codes
        of other normal images) best. Sizes with fewer than dim + 1 codes per component are not
        tried (a full covariance needs them); one component when no size has enough."""
        from sklearn.mixture import GaussianMixture

        rng = np.random.default_rng(seed)
        if len(codes) > FIT_CODES:
            codes = codes[rng.choice(len(codes), FIT_CODES, replace=False)]
        sizes = [k for k in COMPONENT_CHOICES if k * (codes.shape[1] + 1) <= len(codes)] or [1]
        fits = [
            GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=seed, max_iter=200).fit(
                codes.astype(np.float64)
            )
            for k in sizes
        ]
        best = max(fits, key=lambda fit: fit.score(held_out.astype(np.float64)))
        return cls(
            best.weights_.astype(np.float32),
            best.means_.astype(np.float32),
            best.precisions_cholesky_.astype(np.float32),
        )

    def nll(self, z: tf.Tensor) -> tf.Tensor:
        """-log p(z) under the mixture, in nats, for codes [N, D]."""
        means = tf.constant(self.means)
        chol = tf.constant(self.precision_cholesky)
        # y_k = (z - mu_k)^T L_k: [N, K, D]
        centred = z[:, None, :] - means[None, :, :]
        y = tf.einsum("nkd,kde->nke", centred, chol)
        log_det = tf.reduce_sum(tf.math.log(tf.linalg.diag_part(chol)), axis=-1)  # [K]
        dim = float(self.means.shape[1])
        log_normal = -0.5 * tf.reduce_sum(tf.square(y), axis=-1) + log_det - 0.5 * dim * math.log(2.0 * math.pi)
        return -tf.reduce_logsumexp(log_normal + tf.math.log(tf.constant(self.weights)), axis=-1)
