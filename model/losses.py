"""The VAE's objective: the per-example negative evidence lower bound (ELBO), in nats.

For a grey-level image x in [0, 1]^784 with a Bernoulli decoder (logits) and a diagonal Gaussian
posterior q(z|x) = N(z_mean, exp(z_log_var)) against the prior N(0, I):

  -ELBO(x) = sum over pixels of BCE(x, sigmoid(logits))  +  KL(q(z|x) || N(0, I))

with KL = -1/2 * sum(1 + z_log_var - z_mean^2 - exp(z_log_var)). Both terms are sums over one
example, so they are on the same scale; the training loss is their mean over the batch. (The
tutorial this model started from averaged the BCE over pixels, summed it over the batch and added a
per-example KL: three different scales.)
"""

import tensorflow as tf


def reconstruction_nats(pixels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Per-example Bernoulli negative log-likelihood: BCE summed over the pixels. Shape [batch]."""
    return tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=pixels, logits=logits), axis=-1)


def kl_nats(z_mean: tf.Tensor, z_log_var: tf.Tensor) -> tf.Tensor:
    """Per-example KL(N(z_mean, exp(z_log_var)) || N(0, I)), closed form. Shape [batch]."""
    return -0.5 * tf.reduce_sum(1.0 + z_log_var - tf.square(z_mean) - tf.exp(z_log_var), axis=-1)
