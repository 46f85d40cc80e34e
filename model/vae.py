"""The variational autoencoder, built with tf_keras (Keras 2, which TFT and TFMA 1.16 need).

``Vae`` trains on the per-example negative ELBO (``model/losses.py``) averaged over the batch, and
logs its parts, ``reconstruction`` and ``kl`` (nats per image), beside ``neg_elbo`` and the
optimised ``loss`` (which differs from ``neg_elbo`` only during KL warm-up).
"""

import tensorflow as tf
import tf_keras as keras

from model.config import VaeConfig
from model.losses import kl_nats, reconstruction_nats
from schema import IMAGE_SIDE, NUM_PIXELS


def build_encoder(config: VaeConfig) -> keras.Model:
    """pixels [batch, 784] in [0, 1] -> (z_mean, z_log_var), each [batch, latent_dim]."""
    pixels = keras.Input(shape=(NUM_PIXELS,), name="pixels")
    x = pixels
    if config.conv:
        x = keras.layers.Reshape((IMAGE_SIDE, IMAGE_SIDE, 1))(x)
        for filters in config.conv_filters:
            x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation=config.activation)(x)
        x = keras.layers.Flatten()(x)
    for units in config.hidden_units:
        x = keras.layers.Dense(units, activation=config.activation)(x)
    # The heads stay float32 under mixed precision: exp(z_log_var) overflows float16 easily.
    z_mean = keras.layers.Dense(config.latent_dim, name="z_mean", dtype="float32")(x)
    z_log_var = keras.layers.Dense(config.latent_dim, name="z_log_var", dtype="float32")(x)
    return keras.Model(pixels, [z_mean, z_log_var], name="encoder")


def build_decoder(config: VaeConfig) -> keras.Model:
    """z [batch, latent_dim] -> Bernoulli logits [batch, 784]."""
    z = keras.Input(shape=(config.latent_dim,), name="z")
    x = z
    for units in reversed(config.hidden_units):
        x = keras.layers.Dense(units, activation=config.activation)(x)
    if config.conv:
        side = IMAGE_SIDE // 2 ** len(config.conv_filters)
        x = keras.layers.Dense(side * side * config.conv_filters[-1], activation=config.activation)(x)
        x = keras.layers.Reshape((side, side, config.conv_filters[-1]))(x)
        for filters in reversed(config.conv_filters):
            x = keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation=config.activation)(x)
        x = keras.layers.Conv2DTranspose(1, 3, padding="same")(x)
        x = keras.layers.Flatten()(x)
    else:
        x = keras.layers.Dense(NUM_PIXELS)(x)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(x)
    return keras.Model(z, logits, name="decoder")


def sample(z_mean: tf.Tensor, z_log_var: tf.Tensor) -> tf.Tensor:
    """The reparameterisation trick: z = mean + sigma * eps, differentiable in mean and sigma."""
    return z_mean + tf.exp(0.5 * z_log_var) * tf.random.normal(tf.shape(z_mean))


class Vae(keras.Model):
    def __init__(self, config: VaeConfig, **kwargs):
        super().__init__(name="vae", **kwargs)
        self.config = config
        self.encoder = build_encoder(config)
        self.decoder = build_decoder(config)
        # The KL weight, 1 except during warm-up (the Trainer's KlWarmup sets it each epoch).
        self.kl_weight = tf.Variable(1.0, trainable=False, dtype=tf.float32, name="kl_weight")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "neg_elbo", "reconstruction", "kl")}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, pixels: tf.Tensor, training: bool = False) -> tf.Tensor:
        z_mean, z_log_var = self.encoder(pixels, training=training)
        return self.decoder(sample(z_mean, z_log_var), training=training)

    def per_example_terms(self, pixels: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """(reconstruction, kl) in nats for each example, with one posterior sample."""
        z_mean, z_log_var = self.encoder(pixels, training=training)
        logits = self.decoder(sample(z_mean, z_log_var), training=training)
        return reconstruction_nats(pixels, logits), kl_nats(z_mean, z_log_var)

    def _update_metrics(self, loss, reconstruction, kl) -> dict[str, tf.Tensor]:
        self.trackers["loss"].update_state(loss)
        self.trackers["neg_elbo"].update_state(reconstruction + kl)
        self.trackers["reconstruction"].update_state(reconstruction)
        self.trackers["kl"].update_state(kl)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    # No AutoGraph for the steps: they have no Python control flow on tensors, and converting them
    # (and the Keras code they call) made the first epoch 25 s instead of 8 s on 2 cores (issue 15).
    @tf.autograph.experimental.do_not_convert
    def train_step(self, data):
        pixels = _features_only(data)
        with tf.GradientTape() as tape:
            reconstruction, kl = self.per_example_terms(pixels, training=True)
            per_example_loss = reconstruction + self.kl_weight * kl
            # The mean over the *global* batch, so that gradients summed across replicas are right.
            loss = tf.nn.compute_average_loss(per_example_loss)
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        return self._update_metrics(per_example_loss, reconstruction, kl)

    @tf.autograph.experimental.do_not_convert
    def test_step(self, data):
        pixels = _features_only(data)
        reconstruction, kl = self.per_example_terms(pixels, training=False)
        # Validation loss is the true negative ELBO, whatever the warm-up weight: early stopping
        # must compare epochs on one scale.
        return self._update_metrics(reconstruction + kl, reconstruction, kl)

    def get_config(self):
        return {"config": self.config.to_dict()}


def _features_only(data):
    """Accepts `pixels` or `(pixels, ...)`: Keras passes tuples when a dataset yields them."""
    return data[0] if isinstance(data, tuple) else data


def build_vae(config: VaeConfig) -> Vae:
    model = Vae(config)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        steps_per_execution=config.steps_per_execution,
    )
    model.build((None, NUM_PIXELS))
    return model
