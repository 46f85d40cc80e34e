"""Evaluator, Pusher and local runs: only a good-enough model, no worse than the one served,
reaches the TF Serving directory; re-runs are cached; a crashed run resumes; the tfx CLI works."""

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from components import serving_layout
from pipeline import outcome, serving
from pipeline.config import PipelineConfig
from pipeline.run_report import latest_run
from tests.conftest import (
    DATA_STAGES,
    FAST_BEAM_ARGS,
    REPO,
    SMALL_RUN,
    read_idx_dataset,
    run_local,
    served_files,
    states,
)

VENV_BIN = os.path.dirname(sys.executable)


def components(config: PipelineConfig) -> dict:
    return {c.node: c for c in latest_run(config.metadata_path, config.pipeline_name)[1]}


def test_every_component_succeeds_and_the_model_is_blessed_and_pushed(small_run):
    assert set(states(small_run).values()) == {"ran"}
    lines = outcome.outcome_lines(components(small_run), small_run.serving_model_dir)
    assert "BLESSED" in lines
    [version] = serving_layout.versions(small_run.serving_model_dir)
    version_dir = os.path.join(small_run.serving_model_dir, str(version))
    assert os.path.isfile(os.path.join(version_dir, "saved_model.pb"))  # <root>/<model_name>/<version>/
    assert any(line == f"Pushed: {version_dir}" for line in lines)


def test_pushed_model_answers_tf_serving_requests(small_run, small_mnist):
    images = read_idx_dataset(small_mnist)["eval"][0][:4].reshape(4, 784)
    request = {"signature_name": "serving_default", "instances": [{"image": row.tolist()} for row in images]}
    response = serving.predict_in_process(small_run.serving_model_dir, request)
    assert len(response["predictions"]) == 4
    first = response["predictions"][0]
    assert len(first["reconstruction"]) == 784 and len(first["z_mean"]) == 2
    assert first["neg_elbo"] == pytest.approx(first["reconstruction_error"] + first["kl"], rel=1e-5)

    columnar = {"signature_name": "generate", "inputs": {"count": 3, "seed": 5}}
    images_out = np.asarray(serving.predict_in_process(small_run.serving_model_dir, columnar)["outputs"])
    assert images_out.shape == (3, 784) and 0 <= images_out.min() and images_out.max() <= 1


def test_evaluator_metrics_are_the_models_real_scores(small_run, small_mnist):
    """The Evaluator's mean -ELBO equals the pushed model's own scores of the eval split."""
    import tensorflow_model_analysis as tfma

    images, labels = read_idx_dataset(small_mnist)["eval"]
    response = serving.predict_in_process(
        small_run.serving_model_dir, serving.rest_request(images.reshape(-1, 784).astype(np.int64))
    )
    scores = np.array([p["neg_elbo"] for p in response["predictions"]])
    evaluation = components(small_run)["Evaluator"].output("evaluation").uri
    by_slice = {
        (key[0][1] if key else None): values[""][""]
        for key, values in tfma.load_eval_result(evaluation).slicing_metrics
    }
    assert by_slice[None]["neg_elbo"]["doubleValue"] == pytest.approx(scores.mean(), rel=1e-4)
    assert by_slice[None]["example_count"]["doubleValue"] == len(images)
    # Every digit has its slice, and each slice's mean is that digit's mean.
    assert sorted(k for k in by_slice if k is not None) == list(range(10))
    for digit in range(10):
        assert by_slice[digit]["neg_elbo"]["doubleValue"] == pytest.approx(scores[labels == digit].mean(), rel=1e-4)
    mse = by_slice[None]["pixel_mse"]["doubleValue"]
    reconstructions = np.array([p["reconstruction"] for p in response["predictions"]])
    assert mse == pytest.approx(np.mean((reconstructions - images.reshape(-1, 784) / 255.0) ** 2), rel=1e-3)


@dataclasses.dataclass
class Outcome:
    """What one run left behind, captured before the next run in the same directory."""

    states: dict[str, str]
    lines: list[str]
    served: dict[str, str]


@pytest.fixture(scope="module")
def release_runs(tmp_path_factory, small_mnist) -> dict[str, Outcome]:
    """Four runs in one output directory: good, the same again, a regression, an impossible bound."""
    output_dir = str(tmp_path_factory.mktemp("release"))

    def run(**changes) -> Outcome:
        settings = {**SMALL_RUN, "input_dir": small_mnist, "output_dir": output_dir, "beam_args": FAST_BEAM_ARGS}
        config = PipelineConfig(**(settings | changes))
        run_local(config)
        return Outcome(
            states(config),
            outcome.outcome_lines(components(config), config.serving_model_dir),
            served_files(config.serving_model_dir),
        )

    return {
        "good": run(),
        "again": run(),
        # One epoch instead of three: clearly worse, yet inside a loose absolute bound.
        "worse": run(vae_overrides={"epochs": 1}, max_neg_elbo=400.0),
        # The good model against a bound no VAE meets on MNIST.
        "strict": run(max_neg_elbo=50.0),
    }


def test_second_identical_run_is_cached_and_pushes_nothing(release_runs):
    assert "BLESSED" in release_runs["good"].lines and len(release_runs["good"].served) > 0
    again = release_runs["again"]
    # The served model is looked up afresh every run, so the Evaluator and Pusher look again;
    # everything else comes from the cache.
    fresh = ("ServedModel", "Evaluator", "Pusher")
    assert again.states == {node: "ran" if node in fresh else "cached" for node in again.states}
    [version] = {path.split("/")[0] for path in again.served}
    assert any(line.startswith("  against the served model (version ") for line in again.lines)
    assert f"Not pushed: this model is already served as version {version}" in again.lines
    assert again.served == release_runs["good"].served  # nothing new pushed


def test_regression_against_the_served_model_is_not_blessed(release_runs):
    worse = release_runs["worse"]
    assert worse.states["Trainer"] == "ran"
    regression = "against the served model (allowed: up to +1.00)"
    assert any(line.startswith("NOT BLESSED: neg_elbo is +") and regression in line for line in worse.lines)
    assert any(line.startswith("Not pushed: TF Serving keeps serving version") for line in worse.lines)
    assert worse.served == release_runs["good"].served  # the served version is untouched, byte for byte


def test_absolute_bound_can_fail(release_runs):
    strict = release_runs["strict"]
    assert any(line.startswith("NOT BLESSED: neg_elbo") and "is above the bound 50.0" in line for line in strict.lines)
    assert strict.served == release_runs["good"].served


def _trainer_running(metadata_path: str) -> bool:
    try:
        with sqlite3.connect(f"file:{metadata_path}?mode=ro", uri=True, timeout=1) as db:
            rows = db.execute(
                "SELECT 1 FROM Execution e JOIN Type t ON e.type_id = t.id "
                "WHERE t.name LIKE '%Trainer' AND e.last_known_state = 2"  # RUNNING
            ).fetchall()
        return bool(rows)
    except sqlite3.Error:  # not created yet, or locked by the writer
        return False


def pipeline_env(config_dir: str, small_mnist: str, home: str) -> dict:
    return {
        **os.environ,
        "PATH": VENV_BIN + os.pathsep + os.environ["PATH"],  # the tfx CLI needs this venv's pip
        "HOME": home,
        "VAE_MNIST_INPUT_DIR": small_mnist,
        "VAE_MNIST_OUTPUT_DIR": config_dir,
        "VAE_MNIST_PRESET": SMALL_RUN["preset"],
        "VAE_MNIST_VAE_OVERRIDES": '{"epochs": 3}',
        "VAE_MNIST_BEAM_ARGS": '["--direct_running_mode=in_memory"]',
    }


def _tfx(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [os.path.join(VENV_BIN, "tfx"), *args, "--engine", "local"], env=env, capture_output=True, text=True, cwd=REPO
    )


def test_a_crashed_run_resumes_through_the_tfx_cli(tmp_path, small_mnist):
    """The machine dies mid-training under ``python pipeline/local_runner.py``; ``tfx pipeline
    create`` and ``tfx run create`` (which execute the same file) resume from the last completed
    component and push once."""
    out = str(tmp_path / "out")
    env = pipeline_env(out, small_mnist, str(tmp_path))
    config = PipelineConfig.from_env(env)
    runner = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "pipeline", "local_runner.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not _trainer_running(config.metadata_path):
        assert runner.poll() is None, "the run ended before the Trainer started"
        assert time.monotonic() < deadline, "the Trainer never started"
        time.sleep(0.2)
    os.killpg(runner.pid, signal.SIGKILL)  # the machine dies mid-training
    runner.wait()
    assert not serving_layout.versions(config.serving_model_dir)

    create = _tfx(["pipeline", "create", "--pipeline_path", os.path.join(REPO, "pipeline", "local_runner.py")], env)
    assert create.returncode == 0, create.stderr[-3000:]
    assert 'Pipeline "vae-mnist" created successfully.' in create.stdout + create.stderr
    run = _tfx(["run", "create", "--pipeline_name", "vae-mnist"], env)
    assert run.returncode == 0, run.stderr[-3000:]
    resumed = states(config)
    assert {node: resumed[node] for node in (*DATA_STAGES, "Transform")} == dict.fromkeys(
        (*DATA_STAGES, "Transform"), "cached"
    )
    assert {node: resumed[node] for node in ("Trainer", "ServedModel", "Evaluator", "Pusher")} == dict.fromkeys(
        ("Trainer", "ServedModel", "Evaluator", "Pusher"), "ran"
    )
    assert len(serving_layout.versions(config.serving_model_dir)) == 1
