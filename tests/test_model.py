"""The VAE's maths and plumbing, without TFX: the loss against NumPy, KL, gradients, configs."""

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from model import losses
from model.config import PRESETS, VaeConfig, preset
from model.features import PIXELS_KEY, preprocessing_fn
from model.trainer import KlWarmup
from model.vae import build_vae
from pipeline.config import PipelineConfig
from schema import IMAGE_KEY, LABEL_KEY, NUM_CLASSES, NUM_PIXELS, SCHEMA_FILE


def numpy_neg_elbo(x, logits, z_mean, z_log_var):
    """Reference: BCE-with-logits summed over pixels + closed-form KL, per example."""
    p = 1.0 / (1.0 + np.exp(-logits))
    bce = -(x * np.log(p) + (1 - x) * np.log(1 - p)).sum(axis=1)
    kl = -0.5 * (1 + z_log_var - z_mean**2 - np.exp(z_log_var)).sum(axis=1)
    return bce, kl


def test_loss_matches_numpy_on_a_hand_made_batch():
    x = np.array([[0.0, 1.0, 0.5], [0.2, 0.9, 0.0]])
    logits = np.array([[-2.0, 3.0, 0.0], [1.0, -1.0, 0.5]])
    z_mean = np.array([[0.5, -1.0], [0.0, 2.0]])
    z_log_var = np.array([[0.1, -0.3], [0.0, 1.0]])
    bce, kl = numpy_neg_elbo(x, logits, z_mean, z_log_var)
    np.testing.assert_allclose(losses.reconstruction_nats(tf.constant(x), tf.constant(logits)), bce, rtol=1e-6)
    np.testing.assert_allclose(losses.kl_nats(tf.constant(z_mean), tf.constant(z_log_var)), kl, rtol=1e-6)
    # One hand-checked value: example 0's KL = -1/2 [(1 + .1 - .25 - e^.1) + (1 - .3 - 1 - e^-.3)].
    assert kl[0] == pytest.approx(-0.5 * ((1.1 - 0.25 - math.exp(0.1)) + (0.7 - 1.0 - math.exp(-0.3))))


def test_kl_is_zero_at_the_prior():
    assert losses.kl_nats(tf.zeros([4, 2]), tf.zeros([4, 2])).numpy().tolist() == [0.0] * 4


def test_kl_is_positive_away_from_the_prior():
    assert (losses.kl_nats(tf.constant([[0.3, 0.0]]), tf.constant([[0.0, -0.5]])).numpy() > 0).all()


def test_reconstruction_of_a_constant_image():
    # Logit 0 predicts p = 1/2 for every pixel: each of 784 pixels costs ln 2, whatever its value.
    for value in (0.0, 0.5, 1.0):
        nats = losses.reconstruction_nats(tf.fill([1, 784], value), tf.zeros([1, 784]))
        assert nats.numpy()[0] == pytest.approx(784 * math.log(2), rel=1e-6)
    # A grey 0.5 image is best explained by p = 1/2, and even then costs 784 ln 2 (its entropy).
    worse = losses.reconstruction_nats(tf.fill([1, 784], 0.5), tf.fill([1, 784], 1.0))
    assert worse.numpy()[0] > 784 * math.log(2)


@pytest.mark.parametrize("conv", [False, True])
def test_gradients_reach_every_weight(conv):
    vae = build_vae(VaeConfig(conv=conv, hidden_units=(32,), latent_dim=3))
    pixels = tf.random.stateless_uniform([8, 784], seed=[1, 2])
    with tf.GradientTape() as tape:
        reconstruction, kl = vae.per_example_terms(pixels, training=True)
        loss = tf.reduce_mean(reconstruction + kl)
    grads = tape.gradient(loss, vae.trainable_variables)
    assert len(grads) == len(vae.trainable_variables) > 0
    for variable, grad in zip(vae.trainable_variables, grads, strict=True):
        assert grad is not None, variable.name
        assert float(tf.reduce_max(tf.abs(grad))) > 0, variable.name


def test_training_lowers_the_negative_elbo():
    tf.keras.utils.set_random_seed(0)
    vae = build_vae(VaeConfig(hidden_units=(64,), latent_dim=2, learning_rate=3e-3))
    pixels = (tf.random.stateless_uniform([256, 784], seed=[3, 4]) > 0.7).numpy().astype("float32")
    history = vae.fit(pixels, batch_size=32, epochs=5, verbose=0)
    # Independent Bernoulli(0.3) pixels: no model beats their entropy, 784 * H(0.3) = 479 nats.
    floor = -784 * (0.3 * math.log(0.3) + 0.7 * math.log(0.7))
    assert history.history["neg_elbo"][0] > floor + 40
    assert floor - 5 < history.history["neg_elbo"][-1] < floor + 10
    # The logged terms add up: neg_elbo = reconstruction + kl (without warm-up, loss too).
    last = {k: v[-1] for k, v in history.history.items()}
    assert last["neg_elbo"] == pytest.approx(last["reconstruction"] + last["kl"], rel=1e-5)
    assert last["loss"] == pytest.approx(last["neg_elbo"], rel=1e-5)


def test_the_tutorial_preset_is_the_tutorials_network_and_the_default_widens_its_codes():
    def shapes(vae):
        return [tuple(w.shape) for w in vae.encoder.weights] + [tuple(w.shape) for w in vae.decoder.weights]

    assert shapes(build_vae(preset("tutorial"))) == [
        (784, 256), (256,), (256, 2), (2,), (256, 2), (2,), (2, 256), (256,), (256, 784), (784,)
    ]  # fmt: skip
    default = PipelineConfig().vae
    assert shapes(build_vae(default)) == [
        (784, 256), (256,), (256, 20), (20,), (256, 20), (20,), (20, 256), (256,), (256, 784), (784,)
    ]  # fmt: skip
    assert default.replace(latent_dim=2) == preset("tutorial")  # the same schedule


def test_kl_warmup_ramps_to_one():
    vae = build_vae(VaeConfig(hidden_units=(8,)))
    warmup = KlWarmup(epochs=3)
    warmup.set_model(vae)
    weights = []
    for epoch in range(5):
        warmup.on_epoch_begin(epoch)
        weights.append(round(float(vae.kl_weight.numpy()), 3))
    assert weights == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_config_survives_the_trainer_custom_config_round_trip():
    for config in PRESETS.values():
        assert VaeConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_config_rejects_unknown_fields_and_bad_values():
    with pytest.raises(ValueError, match="unknown VaeConfig fields: hiden_units"):
        VaeConfig.from_dict({"hiden_units": [1]})
    with pytest.raises(ValueError, match="input_mode"):
        VaeConfig(input_mode="disk")
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


def test_the_schema_constants_are_the_schema_files():
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    with open(SCHEMA_FILE) as f:
        schema = text_format.Parse(f.read(), schema_pb2.Schema())
    features = {feature.name: feature for feature in schema.feature}
    assert set(features) == {IMAGE_KEY, LABEL_KEY}
    assert [dim.size for dim in features[IMAGE_KEY].shape.dim] == [NUM_PIXELS]
    assert (features[LABEL_KEY].int_domain.min, features[LABEL_KEY].int_domain.max) == (0, NUM_CLASSES - 1)


def test_preprocessing_scales_pixels_and_passes_the_label():
    out = preprocessing_fn({IMAGE_KEY: tf.constant([[0, 51, 255]], tf.int64), LABEL_KEY: tf.constant([7], tf.int64)})
    np.testing.assert_allclose(out[PIXELS_KEY].numpy(), [[0.0, 0.2, 1.0]])
    assert out[PIXELS_KEY].dtype == tf.float32
    assert out[LABEL_KEY].numpy().tolist() == [7]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("epochs=abc", "VaeConfig.epochs must be an integer, got 'abc'"),
        ("epochs=1.5", "VaeConfig.epochs must be an integer, got 1.5"),
        ("learning_rate=abc", "VaeConfig.learning_rate must be a number, got 'abc'"),
        ("learning_rate=-0.1", "VaeConfig.learning_rate must be positive, got -0.1"),
        ("latent_dim=2.5", "VaeConfig.latent_dim must be an integer, got 2.5"),
        ("hidden_units=abc", "VaeConfig.hidden_units must be a list of integers, got 'abc'"),
        ("hidden_units=[256,0]", r"VaeConfig.hidden_units must be at least 1, got \(256, 0\)"),
        ("steps_per_epoch=-5", "VaeConfig.steps_per_epoch must be at least 1, got -5"),
        ("early_stopping_patience=-1", "VaeConfig.early_stopping_patience must be at least 0, got -1"),
        ("conv=maybe", "VaeConfig.conv must be true or false, got 'maybe'"),
        ("epochs", "--set takes FIELD=VALUE, e.g. epochs=3, got 'epochs'"),
    ],
)
def test_typed_overrides_name_the_field(setting, message):
    with pytest.raises(ValueError, match=message):
        PRESETS["smoke"].replace(**VaeConfig.parse_overrides([setting]))


def test_a_single_number_is_a_one_layer_tuple():
    assert PRESETS["smoke"].replace(**VaeConfig.parse_overrides(["hidden_units=512"])).hidden_units == (512,)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "epochs=abc"], "VaeConfig.epochs must be an integer, got 'abc'"),
        (["--bound", "neg_elbo=-3"], "Bounds.neg_elbo must be positive, got -3.0"),
        (["--bound", "neg_elbo=NaN"], "Bounds.neg_elbo must be a number, got nan"),
        (
            ["--bound", "pixel_mse_per_digit=[0.1,0.2]"],
            "Bounds.pixel_mse_per_digit takes one bound per digit (10) or one for all, got 2",
        ),
        (
            ["--bound", "kl=3"],
            "unknown bounds: kl; known: neg_elbo, reconstruction_error, pixel_mse, "
            "reconstruction_error_per_digit, pixel_mse_per_digit",
        ),
        (["--bound", "neg_elbo"], "--bound takes FIELD=VALUE, e.g. neg_elbo=160, got 'neg_elbo'"),
        # Sizes that cannot fit, and values TensorFlow or numpy would refuse after the data stages.
        (["--set", "hidden_units=[10000000]"], "VaeConfig.hidden_units must be at most 65,536, got (10000000,)"),
        (
            ["--set", "hidden_units=[60000,60000]"],
            "VaeConfig: the network would hold 7,297,920,824 weights (108.7 GB to train with Adam); "
            "at most 50,000,000 (hidden_units, latent_dim, conv_filters)",
        ),
        (["--set", "seed=-1"], "VaeConfig.seed must be at least 0, got -1"),
        (["--set", "learning_rate=Infinity"], "VaeConfig.learning_rate must be a number, got inf"),
        (
            ["--set", "conv=true", "--set", "conv_filters=[8,8,8]"],
            "VaeConfig.conv_filters: at most 2 layers (28 pixels must halve exactly at each), got [8, 8, 8]",
        ),
    ],
)
def test_the_cli_refuses_bad_settings_before_any_work(tmp_path, capsys, argv, message):
    from pipeline import cli

    out = tmp_path / "out"
    assert cli.main(["run", "--output-dir", str(out), "--data-root", str(tmp_path / "data"), *argv]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"vae-mnist: error: {message}"]
    assert not out.exists() and not (tmp_path / "data").exists()  # nothing fetched, nothing written


@pytest.mark.parametrize("name", ["../x", "..", "a/b", "", ".hidden"])
def test_model_name_is_one_safe_path_component(tmp_path, name):
    from pipeline.config import PipelineConfig

    with pytest.raises(ValueError, match="PipelineConfig.model_name must be one plain directory name"):
        PipelineConfig(output_dir=str(tmp_path), model_name=name)


def test_settings_from_the_environment_are_typed_too(tmp_path):
    from pipeline.config import PipelineConfig

    with pytest.raises(ValueError, match="PipelineConfig.records_per_shard must be an integer, got 'many'"):
        PipelineConfig.from_env({"VAE_MNIST_RECORDS_PER_SHARD": "many", "VAE_MNIST_OUTPUT_DIR": str(tmp_path)})


def test_training_that_diverges_stops_with_a_clear_error(tmp_path):
    """The Trainer's own callbacks on the real network: a NaN loss ends training with an error
    that says what to change, instead of exporting broken weights for the Evaluator."""
    from model.trainer import TrainingDivergedError, training_callbacks

    config = PRESETS["smoke"].replace(epochs=3)
    vae = build_vae(config)
    pixels = np.random.default_rng(0).random((64, 784), dtype=np.float32)
    pixels[5, 100] = np.nan  # one bad pixel poisons the epoch's mean loss
    dataset = tf.data.Dataset.from_tensor_slices(pixels).batch(32)
    callbacks = training_callbacks(config, str(tmp_path), examples_per_epoch=64)
    with pytest.raises(TrainingDivergedError, match=r"training diverged in epoch 1: .*loss is nan.* learning_rate"):
        vae.fit(dataset, validation_data=dataset, epochs=config.epochs, callbacks=callbacks, verbose=0)


def test_a_nan_metric_is_reported_as_nan():
    from tensorflow_model_analysis.proto import metrics_for_slice_pb2, validation_result_pb2

    from pipeline.summary import _reason

    failure = validation_result_pb2.ValidationFailure()
    failure.metric_key.CopyFrom(metrics_for_slice_pb2.MetricKey(name="neg_elbo"))
    failure.metric_threshold.value_threshold.upper_bound.value = 165.0
    failure.metric_value.double_value.value = float("nan")
    assert _reason(failure) == "-ELBO is NaN"


def test_the_weight_count_that_bounds_a_config_is_keras_own():
    """VaeConfig refuses networks over MAX_PARAMETERS by counting weights from the architecture;
    the count must be the one Keras builds, or the bound means nothing."""
    from model.config import PRESETS, preset
    from model.vae import build_vae

    for name in PRESETS:
        config = preset(name)
        vae = build_vae(config)
        assert config.parameter_count() == vae.encoder.count_params() + vae.decoder.count_params(), name
