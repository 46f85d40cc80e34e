"""The serving SavedModel: signatures a TF Serving client needs, each applying Transform first.

- ``serving_default``: ``image`` int64 [N, 784], raw pixels 0-255 ->
  ``reconstruction`` float [N, 784] in [0, 1]; ``reconstruction_error``, ``kl``, ``neg_elbo``
  float [N] in nats; ``pixel_mse`` float [N], the reconstruction's mean squared error over the
  pixels (in [0, 1] units); ``anomaly_score`` float [N] (spreads of normal images),
  ``anomaly_p_value`` float [N] in (0, 1], its conformal p-value against validation images, and
  ``is_anomaly`` bool [N], the p-value at most the configured false-positive rate
  (model/detector.py); ``z_mean``, ``z_log_var`` float [N, latent].
- ``serving_tf_example``: ``examples`` string [N], serialized tf.Examples holding ``image`` ->
  the same outputs (for batch scoring).
- ``score_tf_example``: ``examples`` string [N] -> only the per-image scores ``neg_elbo``,
  ``reconstruction_error``, ``kl``, ``pixel_mse``, ``anomaly_score``, ``anomaly_p_value``,
  ``is_anomaly`` [N]: what the Evaluator and batch scoring need, without 784 reconstructed pixels
  per image to carry.
- ``encode``: ``image`` int64 [N, 784] -> ``z_mean``, ``z_log_var`` float [N, latent].
- ``decode``: ``z`` float [N, latent] -> ``images`` float [N, 784] in [0, 1].
- ``generate``: ``count`` int32 scalar, 1 to ``MAX_GENERATE`` (10,000), ``seed`` int64 scalar
  (-1 for a fresh random draw) -> ``images`` float [count, 784] in [0, 1], decoded from the
  prior N(0, I).
- ``transform_features``: ``examples`` string [N] with ``image`` and ``label`` -> Transform's
  outputs ``pixels`` float [N, 784] and ``label`` int64 [N] (TFMA's preprocessing).

Beside the SavedModel, in ``assets.extra/`` (copied with it, ignored by the TF loader):
``tf_serving_warmup_requests``, a few real requests as TF Serving ``PredictionLog`` records that
TF Serving replays when it loads the version, so the first client request is not the slow one
(tensorflow_serving/g3doc/saved_model_warmup.md); and ``vae_config.json``, the architecture, so
a warm start can tell whether the served model's weights fit a new network, with the anomaly
detector's calibration (threshold, false-positive rate, its references) for people and reports.

Scores are deterministic: the reconstruction decodes the posterior mean, and
``reconstruction_error`` is the BCE (nats) of that reconstruction against the input, so
``neg_elbo`` = ``reconstruction_error`` + ``kl`` is the negative ELBO evaluated at z = z_mean.
Pixels outside [0, 255] fail with an InvalidArgumentError that says so; wrong shapes and dtypes
are refused by the signatures themselves. A request may not size an allocation by itself: every
other input's size is the size of the request, and ``generate``'s ``count``, the one number that
sets how much the model allocates, is capped (a count of 10^8 would take 300 GB and kill the
server).
"""

import json
import os

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

# tf_keras' switch for what model.save(save_traces=False) does; it has no public name for
# tf.saved_model.save (tf_keras/src/saving/legacy/saved_model/utils.py, save.py).
from tf_keras.src.saving.legacy.saved_model.utils import keras_option_scope

from model.config import VaeConfig
from model.detector import Detector
from model.features import PIXELS_KEY
from model.losses import kl_nats, reconstruction_nats
from model.vae import Vae, build_vae
from schema import IMAGE_KEY, LABEL_KEY, NUM_PIXELS

MAX_GENERATE = 10_000  # images per generate request: 31 MB of output
EXTRA_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
CONFIG_FILE = "vae_config.json"
# Per image, what the Evaluator averages (the mean of is_anomaly: the share of images flagged; of
# anomaly_p_value: about 1/2 on normal images, lower when the eval split holds anomalies).
SCORES = ("neg_elbo", "reconstruction_error", "kl", "pixel_mse", "anomaly_score", "anomaly_p_value", "is_anomaly")


class ServingModule(tf.Module):
    """The signatures, traced without AutoGraph as the training steps are: none has Python control
    flow on tensors (``generate`` uses ``tf.cond``)."""

    def __init__(self, vae: Vae, tf_transform_output: tft.TFTransformOutput, detector: Detector):
        super().__init__(name="vae_mnist")
        self.detector = detector
        self.encoder = vae.encoder
        self.decoder = vae.decoder
        self.latent_dim = vae.config.latent_dim
        self.tft_layer = tf_transform_output.transform_features_layer()
        self._raw_spec = tf_transform_output.raw_feature_spec()
        self._serving_spec = {k: v for k, v in self._raw_spec.items() if k != LABEL_KEY}

    def _pixels(self, image: tf.Tensor) -> tf.Tensor:
        """Checks raw pixels (a loaded signature does not enforce its shape) and applies Transform."""
        checks = [
            tf.debugging.assert_equal(
                tf.shape(image)[1], NUM_PIXELS, message=f"image must be [N, {NUM_PIXELS}] raw pixels"
            ),
            tf.debugging.assert_greater_equal(image, tf.constant(0, image.dtype), message="pixels must be >= 0"),
            tf.debugging.assert_less_equal(image, tf.constant(255, image.dtype), message="pixels must be <= 255"),
        ]
        with tf.control_dependencies(checks):
            return self.tft_layer({IMAGE_KEY: tf.identity(image)})[PIXELS_KEY]

    def _score(self, pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        z_mean, z_log_var = self.encoder(pixels, training=False)
        logits = self.decoder(z_mean, training=False)
        reconstruction_error = reconstruction_nats(pixels, logits)
        kl = kl_nats(z_mean, z_log_var)
        reconstruction = tf.sigmoid(logits)
        neg_elbo = reconstruction_error + kl
        return {
            "reconstruction": reconstruction,
            "reconstruction_error": reconstruction_error,
            "kl": kl,
            "neg_elbo": neg_elbo,
            "pixel_mse": tf.reduce_mean(tf.square(reconstruction - pixels), axis=-1),
            **self.detector.outputs(reconstruction_error, z_mean),
            "z_mean": z_mean,
            "z_log_var": z_log_var,
        }

    @tf.function(input_signature=[tf.TensorSpec([None, NUM_PIXELS], tf.int64, name=IMAGE_KEY)], autograph=False)
    def serve_pixels(self, image):
        return self._score(self._pixels(image))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")], autograph=False)
    def serve_tf_examples(self, examples):
        image = tf.io.parse_example(examples, self._serving_spec)[IMAGE_KEY]
        return self._score(self._pixels(image))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")], autograph=False)
    def score_tf_examples(self, examples):
        scores = self.serve_tf_examples(examples)
        return {name: scores[name] for name in SCORES}

    @tf.function(input_signature=[tf.TensorSpec([None, NUM_PIXELS], tf.int64, name=IMAGE_KEY)], autograph=False)
    def encode(self, image):
        z_mean, z_log_var = self.encoder(self._pixels(image), training=False)
        return {"z_mean": z_mean, "z_log_var": z_log_var}

    @tf.function(autograph=False)
    def decode(self, z):
        check = tf.debugging.assert_equal(
            tf.shape(z)[1], self.latent_dim, message=f"z must be [N, {self.latent_dim}] latent vectors"
        )
        with tf.control_dependencies([check]):
            return {"images": tf.sigmoid(self.decoder(tf.identity(z), training=False))}

    @tf.function(
        input_signature=[tf.TensorSpec([], tf.int32, name="count"), tf.TensorSpec([], tf.int64, name="seed")],
        autograph=False,
    )
    def generate(self, count, seed):
        checks = [
            tf.debugging.assert_positive(count, message="count must be positive"),
            tf.debugging.assert_less_equal(count, MAX_GENERATE, message=f"count must be at most {MAX_GENERATE}"),
        ]
        with tf.control_dependencies(checks):
            shape = tf.stack([count, self.latent_dim])
        z = tf.cond(
            seed >= 0,
            lambda: tf.random.stateless_normal(shape, seed=tf.stack([seed, tf.constant(0, tf.int64)])),
            lambda: tf.random.normal(shape),
        )
        return {"images": tf.sigmoid(self.decoder(z, training=False))}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")], autograph=False)
    def transform_features(self, examples):
        return self.tft_layer(tf.io.parse_example(examples, self._raw_spec))

    def signatures(self) -> dict:
        return {
            "serving_default": self.serve_pixels,
            "serving_tf_example": self.serve_tf_examples,
            "score_tf_example": self.score_tf_examples,
            "encode": self.encode,
            "decode": self.decode.get_concrete_function(tf.TensorSpec([None, self.latent_dim], tf.float32, name="z")),
            "generate": self.generate,
            "transform_features": self.transform_features,
        }


def warmup_logs(images: np.ndarray) -> list:
    """PredictionLogs for TF Serving's warm-up: ``serving_default`` with one image and with all of
    ``images`` (raw pixels [n, 784]), and ``serving_tf_example`` with them as tf.Examples."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    images = np.asarray(images, dtype=np.int64)
    examples = [
        tf.train.Example(
            features=tf.train.Features(
                feature={IMAGE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=row.tolist()))}
            )
        ).SerializeToString()
        for row in images
    ]
    requests = [
        ("serving_default", "image", images[:1]),
        ("serving_default", "image", images),
        ("serving_tf_example", "examples", np.array(examples, dtype=object)),
    ]
    logs = []
    for signature, name, value in requests:
        request = predict_pb2.PredictRequest()
        request.model_spec.signature_name = signature
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def read_exported_config(export_dir: str) -> dict:
    """The exported model's ``vae_config.json`` ({} for a model exported before it existed)."""
    path = os.path.join(export_dir, EXTRA_DIR, CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def read_architecture(export_dir: str) -> dict | None:
    """The exported model's architecture (VaeConfig.architecture()), None if it did not record one."""
    return read_exported_config(export_dir).get("architecture")


def read_weights(vae: Vae, export_dir: str) -> None:
    """Loads an exported model's encoder and decoder weights into ``vae`` (same architecture);
    fails if any of ``vae``'s weights is missing from it."""
    checkpoint = tf.train.Checkpoint(encoder=vae.encoder, decoder=vae.decoder)
    checkpoint.read(os.path.join(export_dir, "variables", "variables")).assert_existing_objects_matched()


def load_networks(export_dir: str) -> Vae:
    """The exported model's networks as a Keras ``Vae`` (its recorded configuration and weights),
    for code that needs more than the signatures, e.g. the decoder's logits."""
    recorded = read_exported_config(export_dir).get("config")
    if recorded is None:
        raise ValueError(f"{export_dir} does not record its VaeConfig ({EXTRA_DIR}/{CONFIG_FILE})")
    vae = build_vae(VaeConfig.from_dict(recorded))
    read_weights(vae, export_dir)
    return vae


def export_serving_model(
    vae: Vae,
    tf_transform_output: tft.TFTransformOutput,
    export_dir: str,
    warmup_images: np.ndarray,
    detector: Detector,
) -> None:
    """Saves the signatures, then the warm-up requests (``warmup_images``: raw pixels [n, 784]) and
    the configuration into ``assets.extra/``.

    Without Keras' traces: by default tf.saved_model.save has every Keras layer and model in the
    module trace its call functions (with AutoGraph) so that a Keras loader could call them, which
    took 8 to 12 s of a 2-core export; nothing here loads the model as Keras (TF Serving, TFMA and
    our components call the signatures; ``load_networks`` rebuilds the networks from the weights).
    Export took 2.6 s without them (issue 15)."""
    module = ServingModule(vae, tf_transform_output, detector)
    with keras_option_scope(save_traces=False):
        tf.saved_model.save(module, export_dir, signatures=module.signatures())
    extra = os.path.join(export_dir, EXTRA_DIR)
    tf.io.gfile.makedirs(extra)
    with tf.io.TFRecordWriter(os.path.join(extra, WARMUP_FILE)) as writer:
        for log in warmup_logs(warmup_images):
            writer.write(log.SerializeToString())
    config = {
        "architecture": vae.config.architecture(),
        "config": vae.config.to_dict(),
        "anomaly": detector.to_dict(),
    }
    with tf.io.gfile.GFile(os.path.join(extra, CONFIG_FILE), "w") as f:
        json.dump(config, f, indent=1, sort_keys=True)
