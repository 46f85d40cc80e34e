"""The served anomaly detector: the exported model computes the benchmark's score, its p-value and
its threshold through TF Serving's session path; the p-values of new normal images are calibrated,
and another dataset is flagged far more often.

The model here is trained in-process on 10,000 MNIST training images (seconds) and its detector is
fitted on the training files' last 5,000, as the Trainer fits it on the pipeline's validation
split; it is exported by the Trainer's own export function with the small run's Transform graph.
"""

import glob
import os
import sys

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from components import datasets
from components.idx_example_gen import serialize_examples
from model import anomaly
from model import detector as detectors
from model.config import preset
from model.export import export_serving_model, read_exported_config
from tests.helpers import run_like_tf_serving

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench"))
from anomaly_auroc import auroc  # noqa: E402

FALSE_POSITIVE_RATE = 0.01
VALIDATION = 5000
SERVED = ("anomaly_score", "anomaly_p_value", "is_anomaly")


@pytest.fixture(scope="module")
def scored_model(small_run, mnist_arrays, tmp_path_factory):
    """(vae, reference (with the detector), export directory, loaded SavedModel)."""
    import tensorflow_transform as tft
    import tf_keras as keras

    from model.vae import build_vae

    images = mnist_arrays["train"][0].reshape(-1, 784)
    config = preset("smoke").replace(epochs=2, latent_dim=8, anomaly_false_positive_rate=FALSE_POSITIVE_RATE)
    keras.utils.set_random_seed(config.seed)
    vae = build_vae(config)
    training = images[:10_000] / 255.0
    vae.fit(training, batch_size=config.batch_size, epochs=config.epochs, verbose=0)
    validation = images[-VALIDATION:] / 255.0
    reference = anomaly.fit_reference(vae.encoder, vae.decoder, training, validation, FALSE_POSITIVE_RATE)
    [transform] = glob.glob(os.path.join(small_run.pipeline_root, "Transform", "transform_graph", "*"))
    export_dir = str(tmp_path_factory.mktemp("anomaly") / "model")
    warmup = images[:4].astype(np.int64)
    export_serving_model(vae, tft.TFTransformOutput(transform), export_dir, warmup, reference.detector)
    return vae, reference, export_dir, tf.saved_model.load(export_dir)


def served(model, images: np.ndarray) -> dict[str, np.ndarray]:
    parts: dict[str, list] = {}
    for start in range(0, len(images), 2000):
        batch = tf.constant(images[start : start + 2000].reshape(-1, 784), tf.int64)
        outputs = model.signatures["serving_default"](image=batch)
        for name in SERVED:
            parts.setdefault(name, []).append(outputs[name].numpy())
    return {name: np.concatenate(values) for name, values in parts.items()}


def test_tf_serving_serves_the_benchmarks_score_its_p_value_and_threshold(scored_model, mnist_arrays):
    """Through the session path TF Serving runs, every scoring signature returns what the benchmark
    measures (model/anomaly.py's SERVED, from the networks), its conformal p-value against the
    calibration images, and is_anomaly exactly when that p-value is at most the rate."""
    vae, reference, export_dir, _ = scored_model
    images = mnist_arrays["eval"][0][:1000].reshape(-1, 784)
    benchmark = anomaly.candidate_scores(vae.encoder, vae.decoder, images / 255.0, reference, (anomaly.SERVED,))
    detector = reference.detector
    examples = np.array(serialize_examples(images, np.zeros(len(images), np.int64)), dtype=object)
    for signature, feeds in (
        ("serving_default", {"image": images.astype(np.int64)}),
        ("serving_tf_example", {"examples": examples}),
        ("score_tf_example", {"examples": examples}),
    ):
        outputs = run_like_tf_serving(export_dir, signature, feeds)
        np.testing.assert_allclose(outputs["anomaly_score"], benchmark[anomaly.SERVED], rtol=1e-4, atol=1e-3)
        expected_p = detectors.conformal_p_value(detector.calibration_scores, outputs["anomaly_score"])
        np.testing.assert_allclose(outputs["anomaly_p_value"], expected_p, rtol=1e-6)
        np.testing.assert_array_equal(outputs["is_anomaly"], outputs["anomaly_p_value"] <= FALSE_POSITIVE_RATE)
        np.testing.assert_array_equal(outputs["is_anomaly"], outputs["anomaly_score"] > detector.threshold)
    recorded = read_exported_config(export_dir)["anomaly"]
    assert recorded["threshold"] == detector.threshold and recorded["images"] == VALIDATION // 2
    assert recorded["reference_images"] == VALIDATION // 2


def test_p_values_of_new_normal_images_are_calibrated(scored_model, mnist_arrays):
    """MNIST's test images are normal for this model (all ten digits were trained on): the share with
    p <= a is about a. The calibration set's m-th order statistic puts the share of new images above
    it at Beta(m + 1, n - m) (n = 2,500); the 10,000 test images add binomial noise."""
    _, reference, _, model = scored_model
    p = served(model, mnist_arrays["eval"][0])["anomaly_p_value"]
    n = len(reference.detector.calibration_scores)
    for a in (0.01, 0.05, 0.2):
        above = int(np.floor(a * (n + 1))) - 1
        low, high = stats.beta.ppf([0.0005, 0.9995], above + 1, n - above)
        noise = 3.3 * np.sqrt(a * (1 - a) / len(p))
        assert low - noise <= (p <= a).mean() <= high + noise, (a, (p <= a).mean(), low, high)


@pytest.mark.skipif(not os.path.isdir(datasets.FASHION_MNIST.debian_dir), reason="dataset-fashion-mnist not installed")
def test_another_dataset_is_flagged_far_more_often(scored_model, mnist_arrays):
    _, _, _, model = scored_model
    fashion, _ = datasets.FASHION_MNIST.read_split(datasets.FASHION_MNIST.debian_dir, "eval", stop=2000)
    digits = served(model, mnist_arrays["eval"][0][:2000])
    clothes = served(model, fashion)
    assert clothes["is_anomaly"].mean() > 0.5 > 20 * digits["is_anomaly"].mean()
    is_fashion = np.r_[np.zeros(2000, bool), np.ones(2000, bool)]
    assert auroc(np.r_[digits["anomaly_score"], clothes["anomaly_score"]], is_fashion) > 0.9


def test_the_served_score_sees_a_half_turn_the_pixel_summaries_cannot(scored_model, mnist_arrays):
    """A span turned by 180 degrees keeps every pixel summary (tests/test_drift.py); the drift gate's
    own comparison of the served model's scores, through batch scoring's scorer, sees it. (Here and
    not on the continuous-training story's served model: its 1,833 training images and three epochs
    make a model whose score moves too little, JS 0.04; a full default model moves it by 0.34.)"""
    import pandas as pd

    from components.drift_gate import DEFAULT_THRESHOLDS, compare
    from components.span_scores import scorer

    _, _, export_dir, _ = scored_model
    score = scorer(export_dir)

    def frame(pixels):
        return pd.DataFrame({"split": "eval", **score(pixels.reshape(len(pixels), -1))})

    images = mnist_arrays["eval"][0][5000:7000]
    reference = frame(mnist_arrays["eval"][0][:2000])
    clean, turned = frame(images), frame(np.rot90(images, 2, axes=(1, 2)))
    thresholds = {name: DEFAULT_THRESHOLDS[name] for name in ("neg_elbo", "anomaly_score")}
    assert not any(comparison.drifted for comparison in compare(clean, reference, thresholds))
    assert {c.feature for c in compare(turned, reference, thresholds) if c.drifted} == {"anomaly_score", "neg_elbo"}


def test_the_threshold_is_the_p_values_and_needs_enough_calibration_images():
    """is_anomaly is p <= a: with n = 100 calibration scores and a = 1 %, only a score above all of
    them (p = 1/101) is flagged; at a = 0.5 % no p-value can reach a, and nothing is flagged."""
    mixture = None  # not needed: the threshold reads the calibration scores alone
    scores = np.arange(100, dtype=np.float32)
    detector = detectors.Detector(mixture, {}, scores, 0.01)
    assert detector.threshold == 99.0
    p = detectors.conformal_p_value(scores, np.array([99.0, 99.5]))
    assert list(p <= 0.01) == [False, True]
    assert detectors.Detector(mixture, {}, scores, 0.05).threshold == 95.0  # 4 of 100 may score at least as high
    assert detectors.Detector(mixture, {}, scores, 0.005).threshold == float("inf")


def test_auroc_is_the_chance_a_positive_outscores_a_negative():
    positive = np.array([False, False, True, True])
    assert auroc(np.array([1.0, 2.0, 3.0, 4.0]), positive) == 1.0
    assert auroc(np.array([4.0, 3.0, 2.0, 1.0]), positive) == 0.0
    assert auroc(np.array([1.0, 3.0, 2.0, 4.0]), positive) == 0.75
    assert auroc(np.ones(4), positive) == 0.5


def test_the_latent_mixture_density_is_scikit_learns_and_its_size_is_chosen_on_held_out_codes():
    """The mixture's -log p(z), computed in TensorFlow (as a SavedModel would serve it), is the one
    scikit-learn fitted; of the sizes tried, the held-out codes choose."""
    from sklearn.mixture import GaussianMixture

    from model.latent_mixture import COMPONENT_CHOICES, LatentMixture

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 6, (12, 3))
    codes = centres[rng.integers(0, 12, 6000)] + rng.normal(0, 0.5, (6000, 3))
    held_out = centres[rng.integers(0, 12, 2000)] + rng.normal(0, 0.5, (2000, 3))
    mixture = LatentMixture.fit(codes, held_out, seed=0)
    assert len(mixture.weights) in COMPONENT_CHOICES
    reference = GaussianMixture(len(mixture.weights), covariance_type="full", reg_covar=1e-4, random_state=0)
    reference.fit(codes)
    probe = held_out[:500].astype(np.float32)
    np.testing.assert_allclose(mixture.nll(tf.constant(probe)).numpy(), -reference.score_samples(probe), rtol=1e-3)
    far = mixture.nll(tf.constant(np.full((1, 3), 40.0, np.float32))).numpy()[0]
    assert far > -reference.score_samples(probe).max() + 100  # a code off every cluster is unlikely


def test_conformal_p_values_of_normal_images_are_uniform():
    """The share of exchangeable scores with p <= a is about a: within the spread the reference
    set's own sampling gives it (binomial, n = 5,000)."""
    rng = np.random.default_rng(1)
    reference = np.sort(rng.normal(size=5000))
    p = detectors.conformal_p_value(reference, rng.normal(size=200_000))
    for a in (0.01, 0.05, 0.2):
        assert abs((p <= a).mean() - a) <= 4 * np.sqrt(a * (1 - a) / 5000), a
    assert detectors.conformal_p_value(reference, np.array([1e9]))[0] == 1 / 5001
