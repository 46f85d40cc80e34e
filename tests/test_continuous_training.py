"""Continuous training, as a user lives it, through `vae-mnist run` on real MNIST spans.

Span 1 trains from scratch and is pushed; span 2 (clean) arrives, is scored by the served model,
passes the drift gate, retrains warm and is pushed; span 3 (turned a quarter round) is scored and
stopped at the drift gate; then the user rolls back with `vae-mnist serving pin`.
"""

import contextlib
import dataclasses
import io
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from components import serving_layout, spans
from components.idx_example_gen import SPANS_KEY
from components.span_scores import REPORT_FILE, read_rows
from model.export import EXTRA_DIR, WARMUP_FILE
from model.pictures import LEAST_ANOMALOUS_PNG, MOST_ANOMALOUS_PNG
from model.training_record import read_training_record
from pipeline import cli, local_runner
from pipeline.config import PipelineConfig
from tests.helpers import LOOSE_BOUNDS, read_idx_dataset, run_like_tf_serving, write_idx_dataset

SPAN_IMAGES = 2000 + 500  # training + eval images per span


@dataclasses.dataclass
class SpanRun:
    exit_code: int
    stdout: str
    stderr: str
    components: dict  # node -> ComponentRun
    versions: list[int]  # pushed versions after the run


@pytest.fixture(scope="module")
def story(tmp_path_factory, mnist_arrays):
    """Three spans of 2,000 + 500 real MNIST images, the third turned 90 degrees, arriving one by
    one in the input directory of `vae-mnist run --warm-start`."""
    root = tmp_path_factory.mktemp("story")
    (x_train, y_train), (x_test, y_test) = mnist_arrays["train"], mnist_arrays["eval"]
    source = write_idx_dataset(
        str(root / "source"), {"train": (x_train[:6000], y_train[:6000]), "eval": (x_test[:1500], y_test[:1500])}
    )
    made = spans.write_spans(source, str(root / "made"), 3, [spans.Drift.parse("3:rotate=90")])
    input_dir, output_dir = root / "input", str(root / "output")
    config = PipelineConfig(input_dir=str(input_dir), output_dir=output_dir)
    flags = ["--input-dir", str(input_dir), "--output-dir", output_dir, "--preset", "smoke", "--set", "epochs=3"]
    flags += ["--set", "warm_start_epochs=2"]
    flags += ["--warm-start"]
    flags += [f"--bound={name}={value}" for name, value in LOOSE_BOUNDS.items()]
    runs = {}
    for span in (1, 2, 3):
        shutil.copytree(made[span], spans.span_dir(str(input_dir), span))  # the new span arrives
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = cli.main(["run", *flags])
        runs[span] = SpanRun(
            code,
            stdout.getvalue(),
            stderr.getvalue(),
            local_runner.last_run(config),
            serving_layout.versions(config.serving_model_dir),
        )
    return config, made, runs


def training_record(run: SpanRun) -> dict:
    return read_training_record(run.components["Trainer"].output("model_run").uri)


def test_the_first_span_trains_from_scratch_and_is_pushed(story):
    _, _, runs = story
    first = runs[1]
    assert first.exit_code == 0, first.stderr
    assert training_record(first)["warm"] is False
    assert "  weights: no model is served yet: trained from scratch" in first.stdout
    assert "Drift gate: nothing earlier to compare with" in first.stdout
    assert "Scores: nothing is served yet; 2,500 images of span 1 summarized" in first.stdout
    assert len(first.versions) == 1 and "BLESSED" in first.stdout


def test_a_clean_span_is_ingested_alone_retrains_warm_and_is_pushed_and_scored(story):
    config, made, runs = story
    second = runs[2]
    assert second.exit_code == 0, second.stderr
    examples = second.components["IdxExampleGen"].output("examples")
    assert examples.properties["span"].int_value == 2 and examples.custom_properties[SPANS_KEY].string_value == "2"
    [first_version] = runs[1].versions
    assert second.components["ServedModel"].output("model").custom_properties["served_version"].int_value == (
        first_version
    )
    assert "Drift gate: span 2 against span 1: no drift" in second.stdout
    record = training_record(second)
    assert record["warm"] is True and record["warm_start"].startswith("warm start from the served model")
    assert len(record["epochs"]) == 2 < len(training_record(runs[1])["epochs"])  # its own epoch budget
    assert f"  against the served model (version {first_version}): " in second.stdout
    assert "BLESSED" in second.stdout and len(second.versions) == 2

    scores = second.components["SpanScores"].output("scores").uri
    rows = read_rows(scores)
    new_span = read_idx_dataset(made[2])
    assert len(rows) == SPAN_IMAGES == sum(len(labels) for _, labels in new_span.values())  # one row per image
    assert (rows["span"] == 2).all() and rows["neg_elbo"].notna().all()
    np.testing.assert_array_equal(rows.loc[rows["split"] == "eval", "label"], new_span["eval"][1])
    with open(os.path.join(scores, REPORT_FILE)) as f:
        assert json.load(f)["scored_by"] == first_version
    assert f"Scores of span 2 by served version {first_version}: 2,500 images, anomaly_score median " in second.stdout
    flagged = int(rows["is_anomaly"].sum())  # the served model's own threshold, applied to the new span
    assert f"; {flagged:,} above the model's threshold" in second.stdout


def test_a_drifted_span_is_stopped_with_a_named_reason_pushes_nothing_and_is_scored(story):
    _, _, runs = story
    third = runs[3]
    assert third.exit_code == 1
    message = third.stderr
    assert message.startswith("vae-mnist: run stopped: span 3 drifted from span 2; the run stops before training")
    assert "  row_spread: Jensen-Shannon divergence 0." in message and "above the threshold 0.1" in message
    assert third.components["DriftGate"].state == "FAILED"
    assert "Trainer" not in third.components and third.versions == runs[2].versions  # nothing pushed

    served = runs[2].versions[-1]
    scores = third.components["SpanScores"].output("scores").uri
    rows = read_rows(scores)
    assert len(rows) == SPAN_IMAGES and rows["neg_elbo"].notna().all()  # scored by the served model
    with open(os.path.join(scores, REPORT_FILE)) as f:
        assert json.load(f)["scored_by"] == served
    assert os.path.getsize(os.path.join(scores, MOST_ANOMALOUS_PNG)) > 0
    assert os.path.getsize(os.path.join(scores, LEAST_ANOMALOUS_PNG)) > 0
    # The turned images score worse than the clean span under the same model.
    clean = read_rows(runs[2].components["SpanScores"].output("scores").uri)
    assert rows["neg_elbo"].median() > clean["neg_elbo"].median()


def test_pin_rolls_back_and_later_writes_keep_the_pin(story, capsys):
    config, _, runs = story
    first, second = runs[2].versions
    model_dir = config.serving_model_dir
    assert serving_layout.served_version(model_dir) == second
    assert cli.main(["serving", "pin", str(first), "--output-dir", config.output_dir]) == 0
    with open(os.path.join(config.serving_root, "models.config")) as f:
        text = f.read()
    assert f"model_version_policy {{\n      specific {{\n        versions: {first}\n" in text
    assert serving_layout.served_version(model_dir) == first  # the baseline, warm start and scores follow
    serving_layout.write_models_config(model_dir)  # what every later run and push does
    assert serving_layout.pinned_version(model_dir) == first

    capsys.readouterr()
    assert cli.main(["serving", "list", "--output-dir", config.output_dir]) == 0
    listed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert listed[str(first)].endswith("SERVED (pinned)") and " 1 " in listed[str(first)]
    assert not listed[str(second)].endswith("SERVED")
    assert cli.main(["serving", "pin", "12345", "--output-dir", config.output_dir]) == 2  # not a pushed version
    assert cli.main(["serving", "unpin", "--output-dir", config.output_dir]) == 0
    assert serving_layout.served_version(model_dir) == second and serving_layout.pinned_version(model_dir) is None


def test_every_pushed_version_has_warm_up_requests_tf_serving_can_replay(story):
    from tensorflow_serving.apis import prediction_log_pb2

    config, _, runs = story
    version_dir = os.path.join(config.serving_model_dir, str(runs[2].versions[-1]))
    logs = [
        prediction_log_pb2.PredictionLog.FromString(record.numpy())
        for record in tf.data.TFRecordDataset(os.path.join(version_dir, EXTRA_DIR, WARMUP_FILE))
    ]
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log"] * 3
    for log in logs:  # each request, replayed the way TF Serving's loader runs the signature
        request = log.predict_log.request
        feeds = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        answer = run_like_tf_serving(version_dir, request.model_spec.signature_name, feeds)
        assert answer["neg_elbo"].shape == (len(next(iter(feeds.values()))),)
        assert np.isfinite(answer["neg_elbo"]).all()


def test_warm_start_loads_the_served_weights_only_into_the_same_architecture(story, mnist_arrays):
    from model.config import preset
    from model.trainer import warm_start
    from model.vae import build_vae

    config, _, runs = story
    served = os.path.join(config.serving_model_dir, str(runs[2].versions[-1]))
    images = mnist_arrays["eval"][0][:16].reshape(16, -1).astype(np.int64)
    served_z = tf.saved_model.load(served).signatures["encode"](image=tf.constant(images))["z_mean"].numpy()

    same = build_vae(preset("smoke"))
    warm, how = warm_start(same, served)
    assert warm and how == f"warm start from the served model ({served})"
    z_mean, _ = same.encoder(tf.constant(images / 255.0, tf.float32))
    np.testing.assert_allclose(z_mean.numpy(), served_z, rtol=1e-5, atol=1e-6)  # the served model's encoder

    other = build_vae(preset("smoke").replace(latent_dim=3, activation="elu"))
    untouched = [w.numpy() for w in other.weights]
    warm, how = warm_start(other, served)
    changed = "latent_dim 2 -> 3, activation relu -> elu"
    assert not warm and how == f"the architecture differs from the served model's ({changed}): trained from scratch"
    for before, after in zip(untouched, other.weights, strict=True):
        np.testing.assert_array_equal(before, after.numpy())
    assert warm_start(other, None) == (False, "no model is served yet: trained from scratch")


def test_without_warm_start_the_summary_says_so_even_when_a_model_is_served(story, small_run):
    """The served model is the Evaluator's baseline either way; the weights start from it only with
    --warm-start, and the summary must not claim that nothing is served."""
    from model.config import preset
    from model.trainer import warm_start
    from model.vae import build_vae

    config, _, runs = story
    served = os.path.join(config.serving_model_dir, str(runs[2].versions[-1]))
    same = build_vae(preset("smoke"))  # an architecture the served weights would fit
    untouched = [w.numpy() for w in same.weights]
    assert warm_start(same, served, requested=False) == (
        False,
        "trained from scratch (warm start off: --warm-start starts from the served model)",
    )
    for before, after in zip(untouched, same.weights, strict=True):
        np.testing.assert_array_equal(before, after.numpy())
    # What a run without --warm-start records, and its summary prints.
    record = read_training_record(local_runner.last_run(small_run)["Trainer"].output("model_run").uri)
    assert record["warm"] is False and record["warm_start"].startswith("trained from scratch (warm start off")
