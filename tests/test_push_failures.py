"""A push that fails part-way, on a real file system in a real process, and the run after it.

The "full disk" is RLIMIT_FSIZE in the Pusher's own process (SIGXFSZ ignored, so a write past the
limit fails with EFBIG, as on a full disk): 1 MB leaves room for ML Metadata's SQLite file
(about 0.3 MB) and stops the model's 1.6 MB of variables part-way through the copy. A tmpfs of
that size would need root."""

import glob
import json
import os
import resource
import shutil
import signal
import subprocess
import sys

import pytest
from tfx import v1 as tfx
from tfx.orchestration.pipeline import RunOptions

from components import model_card, serving_layout
from pipeline import local_runner
from pipeline.config import PipelineConfig
from tests.helpers import REPO, SMALL_RUN, served_files, states, store_of

FILE_SIZE_LIMIT = 1 << 20


def full_disk() -> None:
    """Runs in the child before exec: both settings survive exec."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def pushed_models(config: PipelineConfig) -> list:
    store = store_of(config)
    return [a for a in store.get_artifacts_by_type("PushedModel") if a.state == a.LIVE]


@pytest.fixture(scope="module")
def push_attempts(tmp_path_factory, small_mnist, small_run):
    """A model blessed against a served version 1; its push fails on a full disk; then it is pushed."""
    settings = {
        **SMALL_RUN,
        "vae_overrides": {**SMALL_RUN["vae_overrides"], "seed": 7},  # a model unlike the served one
        "input_dir": small_mnist,
        "output_dir": str(tmp_path_factory.mktemp("push_failures")),
        # Judged on the bounds: this test is about the push.
        "regression_tolerance_nats": 100.0,
        "regression_tolerance_fraction": 10.0,
    }
    config = PipelineConfig(**settings)
    served = os.path.join(small_run.serving_model_dir, str(serving_layout.served_version(small_run.serving_model_dir)))
    shutil.copytree(served, os.path.join(config.serving_model_dir, "1"))
    # What TFX's own Pusher leaves when the disk fills: a newer version without saved_model.pb.
    shutil.copytree(served, os.path.join(config.serving_model_dir, "2"), ignore=shutil.ignore_patterns("*.pb"))
    before = served_files(config.serving_model_dir)

    runner = tfx.orchestration.LocalDagRunner()
    runner.run(local_runner.local_pipeline(config), run_options=RunOptions(to_nodes=["Evaluator"]))
    variables = {"VAE_MNIST_" + key.upper(): json.dumps(value) for key, value in settings.items()}
    failed = subprocess.run(
        [sys.executable, "-m", "tests.partial_run", "--from", "Pusher", "--to", "Pusher"],
        env=os.environ | variables,
        cwd=REPO,
        preexec_fn=full_disk,
        capture_output=True,
        text=True,
        timeout=600,
    )
    after_failure = {
        "served": served_files(config.serving_model_dir),
        "states": states(config),
        "pushed_models": pushed_models(config),
        "entries": sorted(os.listdir(config.serving_model_dir)),
    }
    runner.run(local_runner.local_pipeline(config), run_options=RunOptions(from_nodes=["Pusher"], to_nodes=["Pusher"]))
    return config, before, failed, after_failure


def test_a_full_disk_fails_the_push_part_way(push_attempts):
    _, _, failed, after = push_attempts
    assert failed.returncode != 0
    assert "File too large" in failed.stderr  # EFBIG: the copy itself failed
    [staging] = [name for name in after["entries"] if name.startswith(serving_layout.STAGING_PREFIX)]
    assert staging.startswith(".incoming-")  # the partial copy is where TF Serving does not look


def test_a_failed_push_leaves_nothing_to_serve_and_metadata_agrees(push_attempts):
    config, before, _, after = push_attempts
    # TF Serving sees exactly version 1, byte for byte as before; the half-written version 2 that
    # TFX's Pusher had left was removed before the copy began.
    assert {path: digest for path, digest in after["served"].items() if not path.startswith(".")} == {
        path: digest for path, digest in before.items() if path.startswith("1/")
    }
    assert [name for name in after["entries"] if name.isdigit()] == ["1"]
    assert after["states"].pop("Pusher") == "FAILED"
    assert set(after["states"].values()) == {"cached"}  # a partial run reuses the rest
    assert after["pushed_models"] == []  # ML Metadata records no push


def test_the_next_run_cleans_up_and_pushes(push_attempts):
    config, before, _, _ = push_attempts
    assert serving_layout.leftovers(config.serving_model_dir) == []
    assert not glob.glob(os.path.join(config.serving_model_dir, ".*"))
    [old, new] = serving_layout.versions(config.serving_model_dir)
    assert old == 1 and serving_layout.served_version(config.serving_model_dir) == new
    components = local_runner.last_run(config)
    assert components["Pusher"].state == "ran"
    [pushed] = pushed_models(config)
    new_dir = os.path.join(config.serving_model_dir, str(new))
    assert pushed.custom_properties["pushed"].int_value == 1
    assert pushed.custom_properties["pushed_destination"].string_value == new_dir
    # The archive ML Metadata points to, the served version and the Trainer's model are one model.
    [trained] = glob.glob(os.path.join(config.pipeline_root, "Trainer", "model", "*", "Format-Serving"))
    assert serving_layout.fingerprint(pushed.uri) == serving_layout.fingerprint(new_dir)
    # The served version is the trained model plus its model card.
    assert serving_layout.fingerprint(new_dir, ignore=model_card.CARD_FILES) == serving_layout.fingerprint(trained)
    assert serving_layout.fingerprint(new_dir) != serving_layout.fingerprint(trained)
    old_dir = os.path.join(config.serving_model_dir, "1")
    assert serving_layout.fingerprint(new_dir) != serving_layout.fingerprint(old_dir)
