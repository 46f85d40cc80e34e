"""Reliability, round 3: a failure a user can cause or meet is one line that names the problem
(and the component it stopped), with an exit code a shell can act on, and nothing is left looking
alive in ML Metadata. Each case goes through the real CLI or the real entry point."""

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.orchestration.pipeline import RunOptions

from components import serving_layout
from components.pusher import PINNED_KEY
from pipeline import cli, local_runner, summary
from pipeline.config import PipelineConfig
from pipeline.run_record import ComponentRun
from tests.helpers import DATA_ROOT, REPO, SMALL_RUN

VAE_MNIST = os.path.join(os.path.dirname(sys.executable), "vae-mnist")


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_bad_beam_argument_is_one_line_before_any_work(tmp_path, small_mnist, capsys):
    argv = ["run", "--input-dir", small_mnist, "--output-dir", str(tmp_path), "--beam-arg=--direct_num_workers=abc"]
    assert cli.main(argv) == 2
    line = one_error_line(capsys)
    assert line == "vae-mnist: error: Beam argument: argument --direct_num_workers: invalid int value: 'abc'"
    assert not os.path.exists(tmp_path / "metadata")


def test_the_tfx_cli_entry_reports_a_bad_setting_in_one_line(tmp_path, monkeypatch):
    """`python pipeline/local_runner.py` (what the tfx CLI runs), as __main__, in this process:
    its exit carries one line (Python prints it to stderr, exit code 1), not a traceback."""
    import runpy

    monkeypatch.setenv("VAE_MNIST_MODEL_NAME", "../escape")
    monkeypatch.setenv("VAE_MNIST_OUTPUT_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(os.path.join(REPO, "pipeline", "local_runner.py"), run_name="__main__")
    assert isinstance(exited.value.code, str) and "\n" not in exited.value.code
    assert exited.value.code.startswith("local_runner.py: error: PipelineConfig.model_name must be")


def test_a_run_that_fails_before_ml_metadata_exists_reports_its_own_error(tmp_path, small_mnist):
    config = PipelineConfig(input_dir=small_mnist, output_dir=str(tmp_path), drift_thresholds={"nope": 1.0})
    with pytest.raises(ValueError, match=r"drift_thresholds: unknown features \['nope'\]") as raised:
        local_runner.run_locally(config, progress=None)
    assert "sqlite" not in repr(raised.value.__context__)  # not buried under the summary's read-back


def as_from_a_terminal() -> None:
    """In the forked child, before exec: SIGINT handled by default and not blocked, as a shell
    starts a command. A child inherits both from this test process, where (in the whole suite, on
    some worker, after other tests) something had left SIGINT ignored or blocked: twice in CI the
    run never saw the signal and trained to the end."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def sigint_reaches(pid: int) -> bool:
    """Neither blocked nor ignored in the process (its /proc status masks), with Python's handler."""
    with open(f"/proc/{pid}/status") as f:
        masks = {k: int(v, 16) for k, v in (line.split(":", 1) for line in f) if k in ("SigBlk", "SigIgn", "SigCgt")}
    bit = 1 << (signal.SIGINT - 1)
    return not masks["SigBlk"] & bit and not masks["SigIgn"] & bit and bool(masks["SigCgt"] & bit)


def test_ctrl_c_during_a_run_is_one_line_exit_130_and_leaves_nothing_running(tmp_path, small_mnist, small_run):
    """A real SIGINT to a real run, while the Trainer trains (everything before it is cached)."""
    output_dir = str(tmp_path / "outputs")
    shutil.copytree(small_run.output_dir, output_dir)
    command = [VAE_MNIST, "run", "--input-dir", small_mnist, "--output-dir", output_dir]
    # A Trainer still training when stopped: many epochs, and no early stopping to end them.
    command += ["--preset", SMALL_RUN["preset"], "--set", "epochs=500", "--set", "early_stopping_patience=0"]
    run = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=as_from_a_terminal
    )
    for line in run.stdout:
        if line.startswith("Epoch 2/"):  # the Trainer is in model.fit, past tracing
            break
    assert sigint_reaches(run.pid), "the run would not see a Ctrl-C"
    run.send_signal(signal.SIGINT)
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == cli.EXIT_INTERRUPTED
    assert stderr.strip().splitlines()[-1] == (
        "vae-mnist: run interrupted during Trainer; run the same command to resume"
    )
    assert "Traceback" not in stderr
    config = PipelineConfig(input_dir=small_mnist, output_dir=output_dir, **SMALL_RUN)
    states = {node: run.state for node, run in local_runner.last_run(config).items()}
    assert states["Trainer"] == "canceled" and "running" not in states.values()


class Misbehaving(http.server.BaseHTTPRequestHandler):
    """A "TF Serving" that answers HTML, JSON of another shape, or nothing at all."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.server.mode == "silent":
            time.sleep(5)
            return
        body = b"<html>502 Bad Gateway</html>" if self.server.mode == "html" else json.dumps({"result": 1}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("html", "answered something that is not JSON: b'<html>502 Bad Gateway</html>'"),
        ("shape", "answered JSON without 'predictions' or 'outputs': ['result']"),
        ("silent", "did not answer within 1 s"),
    ],
)
def test_a_server_that_misbehaves_is_one_line_naming_the_url(mnist_dir, mode, message, capsys):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
    server.mode = mode
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        argv = ["predict", "--server", url, "--count", "1", "--timeout", "1", "--data-root", DATA_ROOT]
        assert cli.main(argv) == 2
    finally:
        server.shutdown()
    assert one_error_line(capsys) == f"vae-mnist: error: TF Serving at {url}/v1/models/vae-mnist:predict {message}"


def test_a_rank_1_image_is_refused_with_the_shape_the_model_wants(small_run, tmp_path, capsys):
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"inputs": {"image": [0] * 784}}))  # [784], not [N, 784]
    assert cli.main(["predict", "--model-dir", small_run.serving_model_dir, "--request", str(request)]) == 2
    assert one_error_line(capsys) == "vae-mnist: error: image must be [N, 784], got [784]"


@pytest.fixture
def serving_copy(small_run, tmp_path) -> str:
    """A copy of small_run's serving root (one pushed version and its models.config)."""
    # A deep path, as serving roots on shared volumes are: messages must keep their advice whole.
    root = str(tmp_path / ("deep-" * 30) / "serving")
    shutil.copytree(small_run.serving_root, root)
    serving_layout.write_models_config(os.path.join(root, "vae-mnist"))
    return root


def test_a_corrupt_models_config_names_file_and_line_and_unpin_force_repairs_it(serving_copy, capsys):
    path = os.path.join(serving_copy, serving_layout.MODELS_CONFIG)
    with open(path, "a") as f:
        f.write("model_config_list {\n  config { name: \n")  # a write cut short
    [version] = serving_layout.versions(os.path.join(serving_copy, "vae-mnist"))
    where = ["--serving-root", serving_copy, "--output-dir", serving_copy]
    for command in (["list"], ["pin", str(version)], ["unpin"]):
        assert cli.main(["serving", *command, *where]) == 2, command
        line = one_error_line(capsys)
        assert line.startswith(f"vae-mnist: error: {path}: not a TF Serving model config (line "), line
        assert line.endswith("or `vae-mnist serving unpin --force` to write it afresh")
    assert cli.main(["serving", "unpin", "--force", *where]) == 0
    [entry] = serving_layout.read_models_config(serving_copy).model_config_list.config
    assert entry.name == "vae-mnist" and not entry.HasField("model_version_policy")
    assert f"TF Serving serves version {version}" in capsys.readouterr().out


def test_a_pin_to_a_version_that_does_not_exist_is_called_what_it_is(serving_copy, capsys):
    model_dir = os.path.join(serving_copy, "vae-mnist")
    serving_layout.write_models_config(model_dir, pinned=123)  # by hand, past `serving pin`'s check
    assert serving_layout.served_version(model_dir) is None
    # A run that pushes under that pin, and one that does not push.
    pushed = metadata_store_pb2.Artifact()
    for key, value in {"pushed": 1, PINNED_KEY: 123}.items():
        pushed.custom_properties[key].int_value = value
    pushed.custom_properties["pushed_destination"].string_value = f"{model_dir}/1800000000"
    pusher = ComponentRun("Pusher", "ran", 0.0, 1, {"pushed_model": [pushed]})
    assert summary.push_lines(pusher, model_dir)[1] == (
        "  models.config pins version 123, which does not exist: TF Serving serves nothing"
    )
    nothing = ComponentRun("Pusher", "ran", 0.0, 1, {})
    assert summary.push_lines(nothing, model_dir) == [
        f"Not pushed: models.config pins version 123, which does not exist: TF Serving serves nothing ({model_dir})"
    ]
    assert cli.main(["serving", "list", "--serving-root", serving_copy, "--output-dir", serving_copy]) == 0
    assert "Pinned to version 123, which is not complete: TF Serving serves nothing" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("body", "flags", "message"),
    [
        (
            '{"instances": [[0]]}',
            ["--max-request-mb", "0.00001"],
            "holds 0.0 MB; the limit is 1e-05 MB (--max-request-mb)",
        ),
        (json.dumps({"instances": [[0] * 784] * 3}), ["--max-rows", "2"], "holds 3 rows; the limit is 2 per request"),
        ("[" * 100_000 + "]" * 100_000, [], "is not a JSON request: nested too deeply"),
        (
            json.dumps({"instances": [[10**30] * 784]}),
            [],
            "input 'image': JSON value 1000000000000000000000000000000 is out of range for int64",
        ),
        (json.dumps({"instances": [[-1] * 784]}), [], "pixels must be >= 0"),
    ],
)
def test_hostile_requests_are_one_line(small_run, tmp_path, body, flags, message, capsys):
    request = tmp_path / "request.json"
    request.write_text(body)
    argv = ["predict", "--model-dir", small_run.serving_model_dir, "--request", str(request), *flags]
    assert cli.main(argv) == 2
    line = one_error_line(capsys)
    assert line.startswith("vae-mnist: error: ") and message in line, line


def test_non_finite_answers_print_as_json(small_run, tmp_path, capsys):
    """A float input takes NaN (Python's JSON reads it); what comes back must still parse as JSON."""
    request = tmp_path / "request.json"
    request.write_text('{"signature_name": "decode", "instances": [[NaN, 0.0]]}')
    for full in ([], ["--full"]):
        assert cli.main(["predict", "--model-dir", small_run.serving_model_dir, "--request", str(request), *full]) == 0
        json.loads(capsys.readouterr().out)  # strict: NaN printed as null


def test_paths_that_cannot_hold_a_run_are_refused_before_any_work(tmp_path, small_mnist, capsys):
    run = ["run", "--input-dir", small_mnist]
    assert cli.main([*run, "--output-dir", ""]) == 2
    assert (
        one_error_line(capsys) == "vae-mnist: error: PipelineConfig.output_dir must name a directory, got an empty path"
    )
    dangling = tmp_path / "gone"
    dangling.symlink_to(tmp_path / "nowhere")
    assert cli.main([*run, "--output-dir", str(dangling)]) == 2
    assert one_error_line(capsys) == (
        f"vae-mnist: error: {dangling} is a symbolic link to {tmp_path / 'nowhere'}, which does not exist"
    )
    a_file = tmp_path / "serving"
    a_file.write_text("not a directory")
    assert cli.main([*run, "--output-dir", str(tmp_path / "out"), "--serving-root", str(a_file)]) == 2
    assert one_error_line(capsys) == f"vae-mnist: error: {a_file} is a file; a directory is needed there"
    assert not (tmp_path / "out" / "metadata").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--gpus", "-1"], "--gpus must be 0 (train on CPU) or more, got -1"),
        (["--input-dir", "data/mnist"], "--input-dir must be gs:// or s3:// (what a pod can reach), got "),
        (["--pipeline-root", "/tmp/root"], "--pipeline-root for kfp must start with gs:// or s3:// or minio://"),
    ],
)
def test_kubeflow_compile_holds_only_what_a_pod_can_reach(tmp_path, flags, message, capsys):
    argv = ["kubeflow", "compile", "--image", "vae-mnist:test", "--pipeline-root", "s3://b/root"]
    argv += ["--input-dir", "s3://b/mnist", "--serving-root", "s3://b/serving", "--output", str(tmp_path)]
    assert cli.main(argv + flags) == 2
    assert one_error_line(capsys).startswith(f"vae-mnist: error: {message}")
    assert cli.main(argv) == 0  # into the directory, not beside it
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'vae-mnist.yaml'}"


def test_a_served_version_whose_graph_is_corrupt_is_skipped_with_a_warning(serving_copy, small_mnist, tmp_path):
    model_dir = os.path.join(serving_copy, "vae-mnist")
    [old] = serving_layout.versions(model_dir)
    broken = os.path.join(model_dir, "2000000000")
    shutil.copytree(serving_layout.version_path(model_dir, old), broken)
    with open(os.path.join(broken, serving_layout.SAVED_MODEL_FILE), "wb") as f:
        f.write(b"\x0a\xff" * 100)  # a length that runs past the end: a file cut short
    skipped = []
    assert serving_layout.served_version(model_dir, skipped) == old  # what TF Serving keeps serving
    assert [version for version, _ in skipped] == [2000000000] and "does not parse" in skipped[0][1]
    # ServedModel, the real component, alone: the Evaluator's baseline is the version served.
    config = PipelineConfig(
        input_dir=small_mnist, output_dir=str(tmp_path / "out"), serving_root=serving_copy, **SMALL_RUN
    )
    tfx.orchestration.LocalDagRunner().run(
        local_runner.local_pipeline(config), run_options=RunOptions(to_nodes=["ServedModel"])
    )
    model = local_runner.last_run(config)["ServedModel"].output("model")
    assert model.custom_properties["served_version"].int_value == old
    assert model.custom_properties["skipped_versions"].string_value == "2000000000"


def test_a_full_disk_in_a_component_is_one_line_naming_it(tmp_path, small_mnist, small_run):
    """A "full disk" (RLIMIT_FSIZE in the run's own process, as tests/test_push_failures.py does):
    1 MB leaves room for ML Metadata's file and stops the first copy of the model's 1.6 MB of
    variables, ServedModel's copy of the served version (TensorFlow's error, through TFX)."""
    import resource

    def full_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    output_dir = str(tmp_path / "outputs")
    shutil.copytree(small_run.output_dir, output_dir)  # the data stages are reused from its cache
    command = [VAE_MNIST, "run", "--input-dir", small_mnist, "--output-dir", output_dir]
    command += ["--preset", SMALL_RUN["preset"], "--set", f"epochs={SMALL_RUN['vae_overrides']['epochs']}"]
    done = subprocess.run(command, cwd=REPO, preexec_fn=full_disk, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    served_copy = os.path.join(output_dir, "pipeline_root", "vae-mnist", "ServedModel", "model")
    assert last.startswith(f"vae-mnist: error: ServedModel: {served_copy}/") and last.endswith("File too large"), last
    assert "Traceback" not in done.stderr


def test_our_rewrites_keep_a_hand_edited_models_config_comments_and_other_models(serving_copy, capsys):
    path = os.path.join(serving_copy, serving_layout.MODELS_CONFIG)
    [version] = serving_layout.versions(os.path.join(serving_copy, "vae-mnist"))
    with open(path, "w") as f:
        f.write(
            "# The cluster's models: keep this line.\n"
            "model_config_list {\n"
            '  config { name: "other" base_path: "/models/other" model_platform: "tensorflow" }  # theirs\n'
            '  config { name: "vae-mnist" base_path: "/models/vae-mnist" model_platform: "tensorflow" }\n'
            "}\n"
        )
    where = ["--serving-root", serving_copy, "--output-dir", serving_copy]
    assert cli.main(["serving", "pin", str(version), *where]) == 0
    assert serving_layout.pinned_version(os.path.join(serving_copy, "vae-mnist")) == version
    assert cli.main(["serving", "unpin", *where]) == 0
    with open(path) as f:
        text = f.read()
    assert text.startswith("# The cluster's models: keep this line.\n")
    assert '  config { name: "other" base_path: "/models/other" model_platform: "tensorflow" }  # theirs\n' in text
    names = [c.name for c in serving_layout.read_models_config(serving_copy).model_config_list.config]
    assert names == ["other", "vae-mnist"]


def test_a_models_config_write_on_a_full_disk_leaves_the_old_file_whole(serving_copy):
    """`serving pin` on a full disk used to leave models.config cut short (an in-place rewrite);
    the write is now a temporary file renamed over it. Here the pin's write runs in its own
    process with a file-size limit just above the old file's size."""
    import resource

    path = os.path.join(serving_copy, serving_layout.MODELS_CONFIG)
    model_dir = os.path.join(serving_copy, "vae-mnist")
    [version] = serving_layout.versions(model_dir)
    with open(path) as f:
        before = f.read()
    limit = len(before.encode()) + 8  # the pinned file is longer than that

    def full_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    code = "import sys; from components import serving_layout; serving_layout.pin(sys.argv[1], int(sys.argv[2]))"
    done = subprocess.run(
        [sys.executable, "-c", code, model_dir, str(version)],
        cwd=REPO,
        preexec_fn=full_disk,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0 and "File too large" in done.stderr
    with open(path) as f:
        assert f.read() == before  # whole, as it was
    assert sorted(os.listdir(serving_copy)) == sorted(["vae-mnist", serving_layout.MODELS_CONFIG])  # no temp left
