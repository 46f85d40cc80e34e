"""``s3://`` outside Kubeflow, against a real S3 server (moto's, on loopback): TFX's ``fileio``
over our file system (components/object_store.py), a local run pushing into a bucket, the serving
commands on it, TF Serving's local copy (``serving mirror``), a store that stops mid-push and the
run after it, and a wrong key, a missing bucket or an unreachable store refused before any work.
(Kubeflow with every path in a bucket: tests/test_kubeflow_run.py.)"""

import contextlib
import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from tfx import v1 as tfx
from tfx.dsl.io import fileio
from tfx.orchestration.pipeline import RunOptions
from tfx.utils import io_utils

from components import datasets, idx_example_gen, object_store, serving_layout, spans
from pipeline import cli, local_runner
from pipeline.config import PipelineConfig
from tests.conftest import new_bucket
from tests.helpers import SMALL_RUN, read_idx_dataset, run_like_tf_serving, served_files, states, store_of
from tests.s3_server import FaultyLink, MotoServer, free_port


def bucket_keys(bucket: str) -> list[str]:
    pages = object_store.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def test_fileio_reads_and_writes_a_bucket(s3_store, tmp_path):
    bucket = new_bucket("fileio")
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f.bin").write_bytes(bytes(range(256)))
    (tmp_path / "top.txt").write_text("top")
    io_utils.copy_dir(str(tmp_path), f"{bucket}/copy")  # local -> bucket
    assert list(fileio.walk(f"{bucket}/copy")) == [
        (f"{bucket}/copy", ["a"], ["top.txt"]),
        (f"{bucket}/copy/a", ["b"], []),
        (f"{bucket}/copy/a/b", [], ["f.bin"]),
    ]
    assert fileio.isdir(f"{bucket}/copy/a") and not fileio.isdir(f"{bucket}/copy/top.txt")
    assert fileio.exists(f"{bucket}/copy/top.txt") and not fileio.exists(f"{bucket}/nothing")
    assert fileio.listdir(f"{bucket}/copy") == ["a", "top.txt"]
    assert fileio.glob(f"{bucket}/copy/*/b/*.bin") == [f"{bucket}/copy/a/b/f.bin"]
    assert fileio.stat(f"{bucket}/copy/a/b/f.bin").length == 256
    io_utils.copy_dir(f"{bucket}/copy", f"{bucket}/again")  # server-side copies
    assert served_files(f"{bucket}/again") == served_files(str(tmp_path))
    fileio.makedirs(f"{bucket}/empty")
    assert not [key for key in bucket_keys("fileio") if key.endswith("/")]  # no directory markers
    fileio.rmtree(f"{bucket}/again")
    assert not fileio.exists(f"{bucket}/again")
    with pytest.raises(fileio.NotFoundError):
        fileio.listdir(f"{bucket}/again")


def test_a_write_that_fails_midway_leaves_the_old_object(s3_store):
    path = f"{new_bucket('atomic')}/{serving_layout.MODELS_CONFIG}"
    object_store.write_text_atomically(path, "old")
    with pytest.raises(RuntimeError), fileio.open(path, "w") as f:
        f.write("half of the new")
        raise RuntimeError("the writer died")
    with fileio.open(path) as f:
        assert f.read() == "old"


@pytest.fixture(scope="module")
def s3_local_run(tmp_path_factory, small_mnist, small_run, s3_store):
    """`vae-mnist run --serving-root s3://...` over a copy of small_run's output directory, so
    everything upstream of the served-model lookup is reused from its cache."""
    serving_root = f"{new_bucket('local-run')}/serving"
    output_dir = str(tmp_path_factory.mktemp("s3_local_run") / "outputs")
    shutil.copytree(small_run.output_dir, output_dir, ignore=shutil.ignore_patterns("serving"))
    argv = ["run", "--input-dir", small_mnist, "--output-dir", output_dir, "--serving-root", serving_root]
    argv += ["--preset", SMALL_RUN["preset"], "--set", f"epochs={SMALL_RUN['vae_overrides']['epochs']}"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(argv)
    config = PipelineConfig(input_dir=small_mnist, output_dir=output_dir, serving_root=serving_root, **SMALL_RUN)
    return code, config, printed.getvalue()


def test_a_local_run_pushes_into_a_bucket(s3_local_run):
    code, config, printed = s3_local_run
    assert code == 0
    run = local_runner.last_run(config)
    assert run["Pusher"].state == "ran" and run["IdxExampleGen"].state == "cached"
    [version] = serving_layout.versions(config.serving_model_dir)
    assert serving_layout.served_version(config.serving_model_dir) == version
    models_config = serving_layout.read_models_config(config.serving_root)
    assert models_config.model_config_list.config[0].base_path == "s3://local-run/serving/vae-mnist"
    assert not [key for key in bucket_keys("local-run") if key.endswith("/") or "/.incoming-" in key]
    assert f"Pushed: s3://local-run/serving/vae-mnist/{version}\n" in printed
    assert "Serve it: kubeflow/serving/tf-serving-s3.yaml, or `vae-mnist serving mirror --serving-root" in printed


def test_serving_commands_work_on_a_bucket(s3_local_run, capsys):
    _, config, _ = s3_local_run
    [version] = serving_layout.versions(config.serving_model_dir)
    where = ["--output-dir", config.output_dir, "--serving-root", config.serving_root]
    capsys.readouterr()
    assert cli.main(["serving", "list", *where]) == 0
    listing = capsys.readouterr().out
    assert f"{version}  " in listing and "SERVED" in listing  # with its evaluation from ML Metadata
    assert "(not in this ML Metadata)" not in listing
    assert cli.main(["serving", "pin", str(version), *where]) == 0
    assert serving_layout.pinned_version(config.serving_model_dir) == version
    assert f"Pinned {config.serving_model_dir} to version {version}" in capsys.readouterr().out
    assert cli.main(["serving", "unpin", *where]) == 0
    assert serving_layout.pinned_version(config.serving_model_dir) is None
    assert f"TF Serving serves version {version}" in capsys.readouterr().out


def test_serving_mirror_gives_tf_serving_a_whole_local_copy(s3_local_run, small_mnist, tmp_path, capsys):
    _, config, _ = s3_local_run
    [version] = serving_layout.versions(config.serving_model_dir)
    local = str(tmp_path / "models")
    capsys.readouterr()
    assert cli.main(["serving", "mirror", "--serving-root", config.serving_root, "--to", local]) == 0
    assert f"copied vae-mnist version {version}" in capsys.readouterr().out
    version_dir = os.path.join(local, "vae-mnist", str(version))
    assert served_files(version_dir) == served_files(os.path.join(config.serving_model_dir, str(version)))
    mirrored = serving_layout.read_models_config(local).model_config_list.config[0]
    assert mirrored.base_path == f"{serving_layout.DOCKER_MOUNT}/vae-mnist"  # where TF Serving sees it
    images = read_idx_dataset(small_mnist)["eval"][0][:2].reshape(2, 784).astype(np.int64)
    assert run_like_tf_serving(version_dir, "serving_default", {"image": images})["reconstruction"].shape == (2, 784)
    assert serving_layout.mirror(config.serving_root, local) == []  # nothing new: nothing done


@pytest.fixture(scope="module")
def s3_push_fault(tmp_path_factory, small_mnist, small_run, s3_store):
    """A model blessed against served version 1 in a bucket; the store goes away after two of the
    publish step's server-side copies; then the Pusher runs again with the store back."""
    settings = {
        **SMALL_RUN,
        "vae_overrides": {**SMALL_RUN["vae_overrides"], "seed": 7},  # a model unlike the served one
        "input_dir": small_mnist,
        "output_dir": str(tmp_path_factory.mktemp("s3_push_fault")),
        "serving_root": f"{new_bucket('push-fault')}/serving",
        "regression_tolerance_nats": 100.0,  # judged on the bounds: this is about the push
        "regression_tolerance_fraction": 10.0,
    }
    config = PipelineConfig(**settings)
    served = os.path.join(small_run.serving_model_dir, str(serving_layout.served_version(small_run.serving_model_dir)))
    io_utils.copy_dir(served, os.path.join(config.serving_model_dir, "1"))
    serving_layout.write_models_config(config.serving_model_dir)
    before = served_files(config.serving_root)
    runner = tfx.orchestration.LocalDagRunner()
    runner.run(local_runner.local_pipeline(config), run_options=RunOptions(to_nodes=["Evaluator"]))

    link = FaultyLink(s3_store.port, allowed=2)
    pusher_only = RunOptions(from_nodes=["Pusher"], to_nodes=["Pusher"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", link.endpoint)
        with pytest.raises(Exception) as failure:
            runner.run(local_runner.local_pipeline(config), run_options=pusher_only)
    link.close()
    after_failure = {"served": served_files(config.serving_root), "states": states(config)}
    after_failure["served_version"] = serving_layout.served_version(config.serving_model_dir)
    runner.run(local_runner.local_pipeline(config), run_options=pusher_only)
    return config, before, failure.value, link, after_failure


def test_a_store_gone_mid_push_fails_the_push_with_one_line(s3_push_fault):
    _, _, error, link, _ = s3_push_fault
    assert link.counted == 2  # the store went away inside the publish step's copies
    cause = error
    while cause is not None and not isinstance(cause, object_store.ObjectStoreError):
        cause = cause.__cause__ or cause.__context__
    assert cause is not None and str(cause).startswith(f"s3://push-fault at {link.endpoint}: ")
    assert "\n" not in str(cause)


def test_a_store_gone_mid_push_leaves_the_served_version_whole(s3_push_fault):
    _, before, _, _, after = s3_push_fault
    assert after["served_version"] == 1
    # Version 1 and models.config byte for byte as before; what the copy left is not loadable.
    assert {k: v for k, v in after["served"].items() if k.startswith(("vae-mnist/1/", "models"))} == before
    partial = {k for k in after["served"] if k not in before}
    assert partial and not [k for k in partial if k.endswith(serving_layout.SAVED_MODEL_FILE) and "/." not in k]
    assert after["states"]["Pusher"] == "FAILED"


def test_the_next_push_cleans_up_and_publishes(s3_push_fault):
    config, before, _, _, _ = s3_push_fault
    assert serving_layout.leftovers(config.serving_model_dir) == []
    [old, new] = serving_layout.versions(config.serving_model_dir)
    assert old == 1 and serving_layout.served_version(config.serving_model_dir) == new
    assert local_runner.last_run(config)["Pusher"].state == "ran"
    [pushed] = [a for a in store_of(config).get_artifacts_by_type("PushedModel") if a.state == a.LIVE]
    assert pushed.custom_properties["pushed_destination"].string_value == f"{config.serving_model_dir}/{new}"
    assert serving_layout.fingerprint(pushed.uri) == serving_layout.fingerprint(f"{config.serving_model_dir}/{new}")
    assert not [key for key in bucket_keys("push-fault") if "/." in key]  # no staging left


def run_refused(capsys, *argv) -> str:
    """Runs `vae-mnist run ...`; asserts it failed before any work; returns its one error line."""
    capsys.readouterr()
    assert cli.main(["run", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def local_data_run(tmp_path, small_mnist):
    output_dir = str(tmp_path / "outputs")
    yield ["--input-dir", small_mnist, "--output-dir", output_dir]
    assert not os.path.exists(os.path.join(output_dir, "metadata"))  # nothing ran


def test_a_missing_bucket_is_refused_before_any_work(s3_store, local_data_run, capsys):
    line = run_refused(capsys, *local_data_run, "--serving-root", "s3://no-such-bucket/serving")
    assert (
        line
        == f"vae-mnist: error: s3://no-such-bucket at {s3_store.endpoint}: the bucket 'no-such-bucket' does not exist"
    )


def test_a_wrong_key_is_refused_before_any_work(local_data_run, capsys, monkeypatch):
    refusing = MotoServer(refuse_all=True)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", refusing.endpoint)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
        line = run_refused(capsys, *local_data_run, "--serving-root", "s3://models/serving")
    finally:
        refusing.stop()
    assert line.startswith(f"vae-mnist: error: s3://models at {refusing.endpoint}: access denied")
    assert line.endswith("check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")


def test_an_unreachable_store_is_refused_before_any_work(local_data_run, capsys, monkeypatch):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    line = run_refused(capsys, *local_data_run, "--serving-root", "s3://models/serving")
    assert line.startswith(f"vae-mnist: error: s3://models at {endpoint}: cannot connect to the store")


def test_a_local_run_refuses_an_s3_output_dir_or_pipeline_root(local_data_run, capsys):
    line = run_refused(capsys, *local_data_run[:2], "--output-dir", "s3://x/o")
    assert line.startswith("vae-mnist: error: --output-dir must be a local directory (ML Metadata's SQLite file")
    with pytest.raises(ValueError, match="a local run's pipeline root must be local or gs://"):
        local_runner.preflight(PipelineConfig(pipeline_root="s3://x/root"))


def test_a_process_that_used_the_store_exits_cleanly(s3_local_run):
    """The exit code decides a Kubeflow task: a fresh process that read the bucket (the pods in the
    KFP harness are forked and end with os._exit, skipping what runs at exit) must end with 0."""
    _, config, _ = s3_local_run
    command = [os.path.join(os.path.dirname(sys.executable), "vae-mnist"), "serving", "list"]
    done = subprocess.run(
        [*command, "--output-dir", config.output_dir, "--serving-root", config.serving_root],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "SERVED" in done.stdout and "pure virtual method called" not in done.stderr


def test_spans_and_split_files_are_found_in_a_bucket(s3_store, small_mnist, tmp_path):
    """What IdxExampleGen looks up in an s3:// input dir: the newest span, each split's IDX pair."""
    local = spans.write_spans(small_mnist, str(tmp_path / "spans"), 2)
    bucket = new_bucket("spans")
    io_utils.copy_dir(str(tmp_path / "spans"), f"{bucket}/mnist")
    found = spans.find_spans(f"{bucket}/mnist")
    assert found == {span: f"{bucket}/mnist/span-{span}" for span in local}
    images, labels = idx_example_gen.resolve_split_files(found[2], datasets.MNIST.splits["train"].pattern)
    assert (images, labels) == (
        f"{bucket}/mnist/span-2/train-images-idx3-ubyte.gz",
        f"{bucket}/mnist/span-2/train-labels-idx1-ubyte.gz",
    )
