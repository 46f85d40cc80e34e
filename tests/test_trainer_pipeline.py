"""Transform and the Trainer in the real pipeline run: the exported SavedModel answers every
signature with the documented shapes, applying Transform (raw 0-255 in, probabilities out)."""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import read_idx_dataset, run_like_tf_serving, states


@pytest.fixture(scope="module")
def serving_model_dir(small_run):
    [model_dir] = glob.glob(os.path.join(small_run.pipeline_root, "Trainer", "model", "*", "Format-Serving"))
    return model_dir


@pytest.fixture(scope="module")
def serving_model(serving_model_dir):
    return tf.saved_model.load(serving_model_dir)


@pytest.fixture(scope="module")
def test_images(small_mnist):
    images, labels = read_idx_dataset(small_mnist)["eval"]
    return images[:16].reshape(-1, 784).astype(np.int64), labels[:16]


def serialized_examples(images, labels=None):
    def example(i):
        feature = {"image": tf.train.Feature(int64_list=tf.train.Int64List(value=images[i]))}
        if labels is not None:
            feature["label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[labels[i]]))
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    return tf.constant([example(i) for i in range(len(images))])


def test_transform_and_trainer_ran(small_run):
    assert states(small_run)["Transform"] == "ran"
    assert states(small_run)["Trainer"] == "ran"


def test_training_logs_reach_tensorboard(small_run):
    logs = glob.glob(
        os.path.join(small_run.pipeline_root, "Trainer", "model_run", "*", "**", "events.*"), recursive=True
    )
    assert logs, "no TensorBoard event files in the Trainer's model_run directory"


def test_serving_default_outputs(serving_model, test_images):
    images, _ = test_images
    out = serving_model.signatures["serving_default"](image=tf.constant(images))
    latent = 2  # the smoke preset keeps the tutorial's 2-D latent space
    assert out["reconstruction"].shape == (16, 784)
    for name in ("reconstruction_error", "kl", "neg_elbo"):
        assert out[name].shape == (16,)
    assert out["z_mean"].shape == (16, latent) and out["z_log_var"].shape == (16, latent)
    recon = out["reconstruction"].numpy()
    assert recon.min() >= 0.0 and recon.max() <= 1.0
    np.testing.assert_allclose(out["neg_elbo"], out["reconstruction_error"] + out["kl"], rtol=1e-5)
    assert (out["kl"].numpy() >= 0).all()
    # Three epochs on 2,000 images: well below the 543 nats of predicting 1/2 everywhere.
    assert float(tf.reduce_mean(out["neg_elbo"])) < 300


def test_serving_applies_transform(serving_model, test_images):
    """Transform's graph travels with the model: x / 255 on the way in, the label passed through,
    and the model's own reconstruction error matches one computed from x / 255 by hand."""
    images, labels = test_images
    transformed = serving_model.signatures["transform_features"](examples=serialized_examples(images, labels))
    np.testing.assert_allclose(transformed["pixels"].numpy(), images / 255.0, rtol=1e-6)
    assert transformed["label"].numpy().tolist() == labels.tolist()

    scored = serving_model.signatures["serving_default"](image=tf.constant(images))
    x, p = images / 255.0, np.clip(scored["reconstruction"].numpy().astype(np.float64), 1e-7, 1 - 1e-7)
    by_hand = -(x * np.log(p) + (1 - x) * np.log(1 - p)).sum(axis=1)
    np.testing.assert_allclose(scored["reconstruction_error"], by_hand, rtol=1e-3)


def test_tf_example_signature_agrees_with_serving_default(serving_model, test_images):
    images, _ = test_images
    by_pixels = serving_model.signatures["serving_default"](image=tf.constant(images))
    by_examples = serving_model.signatures["serving_tf_example"](examples=serialized_examples(images))
    for name in ("reconstruction", "neg_elbo", "z_mean"):
        np.testing.assert_allclose(by_examples[name], by_pixels[name], rtol=1e-5)
    scores = serving_model.signatures["score_tf_example"](examples=serialized_examples(images))
    assert sorted(scores) == [
        "anomaly_p_value",
        "anomaly_score",
        "is_anomaly",
        "kl",
        "neg_elbo",
        "pixel_mse",
        "reconstruction_error",
    ]
    for name, values in scores.items():
        np.testing.assert_allclose(values, by_pixels[name], rtol=1e-5)
    np.testing.assert_allclose(by_examples["anomaly_score"], by_pixels["anomaly_score"], rtol=1e-5)
    mse = np.mean((by_pixels["reconstruction"].numpy() - images / 255.0) ** 2, axis=1)
    np.testing.assert_allclose(scores["pixel_mse"], mse, rtol=1e-4)


def test_the_networks_rebuilt_from_the_export_answer_as_its_signatures(serving_model_dir, serving_model, test_images):
    """The export carries no Keras traces (model/export.py); ``load_networks`` rebuilds the
    networks from its recorded config and weights, for the benchmarks that need logits."""
    from model.export import load_networks

    images, _ = test_images
    networks = load_networks(serving_model_dir)
    z_mean, z_log_var = networks.encoder(tf.constant(images / 255.0, tf.float32))
    encoded = serving_model.signatures["encode"](image=tf.constant(images))
    np.testing.assert_allclose(z_mean, encoded["z_mean"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z_log_var, encoded["z_log_var"], rtol=1e-5, atol=1e-6)
    decoded = serving_model.signatures["decode"](z=encoded["z_mean"])["images"]
    np.testing.assert_allclose(tf.sigmoid(networks.decoder(z_mean)), decoded, rtol=1e-5, atol=1e-6)


def test_encode_decode_generate(serving_model, test_images):
    images, _ = test_images
    encoded = serving_model.signatures["encode"](image=tf.constant(images))
    scored = serving_model.signatures["serving_default"](image=tf.constant(images))
    np.testing.assert_allclose(encoded["z_mean"], scored["z_mean"], rtol=1e-5)
    decoded = serving_model.signatures["decode"](z=encoded["z_mean"])["images"]
    np.testing.assert_allclose(decoded, scored["reconstruction"], rtol=1e-5, atol=1e-6)

    generate = serving_model.signatures["generate"]
    first = generate(count=tf.constant(5), seed=tf.constant(7, tf.int64))["images"].numpy()
    again = generate(count=tf.constant(5), seed=tf.constant(7, tf.int64))["images"].numpy()
    other = generate(count=tf.constant(5), seed=tf.constant(8, tf.int64))["images"].numpy()
    assert first.shape == (5, 784) and 0.0 <= first.min() and first.max() <= 1.0
    np.testing.assert_array_equal(first, again)  # a seed makes samples reproducible
    assert not np.allclose(first, other)


@pytest.mark.parametrize(
    ("signature", "kwargs", "message"),
    [
        ("serving_default", {"image": tf.zeros([2, 700], tf.int64)}, r"image must be \[N, 784\] raw pixels"),
        ("serving_default", {"image": tf.fill([1, 784], tf.constant(300, tf.int64))}, "pixels must be <= 255"),
        ("serving_default", {"image": tf.fill([1, 784], tf.constant(-1, tf.int64))}, "pixels must be >= 0"),
        ("encode", {"image": tf.zeros([1, 783], tf.int64)}, r"image must be \[N, 784\]"),
        ("decode", {"z": tf.zeros([1, 5])}, r"z must be \[N, 2\] latent vectors"),
        ("generate", {"count": tf.constant(0), "seed": tf.constant(1, tf.int64)}, "count must be positive"),
        ("generate", {"count": tf.constant(10_001), "seed": tf.constant(1, tf.int64)}, "count must be at most 10000"),
        ("generate", {"count": tf.constant(100_000_000), "seed": tf.constant(-1, tf.int64)}, "at most 10000"),
        ("serving_tf_example", {"examples": tf.constant([b"garbage"])}, "Could not parse example input"),
    ],
)
def test_bad_inputs_fail_with_a_clear_error(serving_model, signature, kwargs, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        serving_model.signatures[signature](**kwargs)


def test_wrong_dtype_is_refused(serving_model):
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a int64 tensor but is a float tensor"):
        serving_model.signatures["serving_default"](image=tf.zeros([1, 784], tf.float32))


@pytest.mark.parametrize("input_mode", ["memory", "stream"])
def test_both_input_modes_feed_the_same_transformed_pixels(small_run, small_mnist, input_mode):
    """The Trainer's two input paths, on the run's real examples, its Transform graph and TFX's own
    data accessor: same pixels (x / 255), batched as configured, the training split reshuffled."""
    import tensorflow_transform as tft
    from tfx.components.trainer.fn_args_utils import DataAccessor
    from tfx.components.util import tfxio_utils
    from tfx.types import standard_artifacts

    from model.config import VaeConfig
    from model.trainer import fit_steps_per_execution, input_datasets
    from model.vae import build_vae

    transform_dir = os.path.join(small_run.pipeline_root, "Transform")
    [examples_uri] = glob.glob(os.path.join(small_run.pipeline_root, "IdxExampleGen", "examples", "*"))
    [graph_uri] = glob.glob(os.path.join(transform_dir, "transform_graph", "*"))
    examples = standard_artifacts.Examples()
    examples.uri, examples.split_names = examples_uri, '["train", "eval"]'
    accessor = DataAccessor(
        tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact([examples], []),
        record_batch_factory=None,
        data_view_decode_fn=None,
    )

    class FnArgs:
        train_files = [os.path.join(examples_uri, "Split-train", "*")]
        eval_files = [os.path.join(examples_uri, "Split-eval", "*")]
        data_accessor = accessor

    config = VaeConfig(batch_size=100, input_mode=input_mode)
    train, evaluation, _, _ = input_datasets(FnArgs, tft.TFTransformOutput(graph_uri), config)
    eval_pixels = np.concatenate(list(evaluation.as_numpy_iterator()))
    source = read_idx_dataset(small_mnist)["eval"][0].reshape(-1, 784) / 255.0
    np.testing.assert_allclose(eval_pixels, source, rtol=1e-6)  # eval: in order, exact
    first_batch = next(iter(train)).numpy()
    assert first_batch.shape == (100, 784) and first_batch.dtype == np.float32
    train_source = read_idx_dataset(small_mnist)["train"][0].reshape(-1, 784) / 255.0
    assert not np.allclose(first_batch, train_source[:100])  # shuffled

    # Both train: in memory several steps per call (the epoch's length is known), streamed one.
    fitted = fit_steps_per_execution(config, train, evaluation, None)
    assert fitted.steps_per_execution == (config.steps_per_execution if input_mode == "memory" else 1)
    history = build_vae(fitted).fit(train, validation_data=evaluation, epochs=1, verbose=0).history
    assert np.isfinite(history["val_neg_elbo"][0])


def test_tf_serving_session_refuses_oversized_generate(serving_model_dir):
    """What TF Serving runs: the SavedModel loaded into a TF1 session by its 'serve' tag and the
    signature's tensors fed and fetched by name. 10^8 images used to kill the process (SIGSEGV);
    the cap stops the request before anything is allocated, and the largest allowed count runs."""
    feeds = {"count": np.int32(100_000_000), "seed": np.int64(3)}
    with pytest.raises(tf.errors.InvalidArgumentError, match="count must be at most 10000"):
        run_like_tf_serving(serving_model_dir, "generate", feeds)
    images = run_like_tf_serving(serving_model_dir, "generate", {"count": np.int32(10_000), "seed": np.int64(3)})
    assert images["images"].shape == (10_000, 784)


def test_the_trainer_chooses_its_model_on_the_validation_split(small_run):
    """Early stopping and the learning-rate schedule see the validation split carved from the
    training images; the eval split (the test images) is left to the Evaluator."""
    from tfx.proto import trainer_pb2
    from tfx.utils import proto_utils

    from tests.helpers import store_of

    store = store_of(small_run)
    [trainer] = [e for e in store.get_executions() if e.type == "tfx.components.trainer.component.Trainer"]
    properties = {name: value.string_value for name, value in trainer.custom_properties.items()}
    train_args = proto_utils.json_to_proto(properties["train_args"], trainer_pb2.TrainArgs())
    eval_args = proto_utils.json_to_proto(properties["eval_args"], trainer_pb2.EvalArgs())
    assert list(train_args.splits) == ["train"] and list(eval_args.splits) == ["valid"]
    [evaluator] = [e for e in store.get_executions() if e.type.endswith("Evaluator")]
    assert json.loads(evaluator.custom_properties["example_splits"].string_value) == ["eval"]
