"""The scale-out data path, exercised: the data stages, with the ``flink`` profile's arguments as
written (PortableRunner, a job endpoint, EXTERNAL SDK workers), run through Beam's own
pure-Python portable job service and Python worker pool on loopback. That is the protocol a Flink
or Spark job server speaks (job API + Fn API workers); only the engine behind the job service
differs, and its jars are not reachable here. The stages run under LocalDagRunner in one
time-limited process (tests/partial_run.py): on Kubeflow the same arguments reach the same
executors through the compiled spec (tests/test_kubeflow.py checks they are there)."""

import glob
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from pipeline import beam
from pipeline.config import PipelineConfig
from tests.helpers import DATA_STAGES, REPO, SMALL_RUN, expected_splits, read_examples, states

# Also upstream of Transform, without Beam: the served-model lookup, the span's scores, the drift gate.
GATES = ("ServedModel", "SpanScores", "DriftGate")

START_SECONDS, JOB_SECONDS = 90, 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def portable_beam(tmp_path_factory):
    """Beam's job service and a worker pool, both started from this project's Python; the pool
    starts its SDK workers as the first `python` on PATH, so that is this venv's too."""
    directory = tmp_path_factory.mktemp("beam_services")
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    port_file, pool_port = directory / "job_port", _free_port()
    logs = {name: open(directory / f"{name}.log", "w") for name in ("job_service", "worker_pool")}  # noqa: SIM115
    services = [
        subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main", "--port=0"]
            + [f"--port_file={port_file}"],
            env=env,
            stdout=logs["job_service"],
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={pool_port}"],
            env=env,
            stdout=logs["worker_pool"],
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ),
    ]
    try:
        deadline = time.monotonic() + START_SECONDS
        while not (port_file.exists() and port_file.read_text().strip() and _listening(pool_port)):
            assert all(s.poll() is None for s in services), f"a Beam service exited; see {directory}"
            assert time.monotonic() < deadline, f"Beam's job service or worker pool did not start in {START_SECONDS} s"
            time.sleep(0.5)
        yield int(port_file.read_text()), pool_port, env, directory
    finally:
        for service in services:
            service.terminate()
            service.wait(timeout=30)
        for log in logs.values():
            log.close()


@pytest.fixture(scope="module")
def portable_run(portable_beam, small_mnist, tmp_path_factory):
    job_port, pool_port, env, _ = portable_beam
    profile = beam.beam_args("flink", job_endpoint=f"localhost:{job_port}", environment_config=f"localhost:{pool_port}")
    settings = {"input_dir": small_mnist, "output_dir": str(tmp_path_factory.mktemp("portable_run")), **SMALL_RUN}
    variables = {"VAE_MNIST_" + k.upper(): json.dumps(v) for k, v in (settings | {"beam_args": profile}).items()}
    try:
        run = subprocess.run(
            [sys.executable, "-m", "tests.partial_run", "--to", "Transform"],
            env=env | variables,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=JOB_SECONDS,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"the data stages did not finish on the portable runner in {JOB_SECONDS} s. A portable job that never "
            "finishes usually means the worker pool started another Python than the project's (it runs the "
            "first `python` on PATH)."
        )
    assert run.returncode == 0, run.stderr[-4000:]
    return profile, PipelineConfig.from_env(variables)


def test_the_data_stages_run_on_the_portable_runner(portable_run, portable_beam):
    profile, config = portable_run
    assert profile == (
        "--runner=PortableRunner",
        f"--job_endpoint=localhost:{portable_beam[0]}",
        "--environment_type=EXTERNAL",
        f"--environment_config=localhost:{portable_beam[1]}",
    )
    assert states(config) == dict.fromkeys((*DATA_STAGES, "Transform", *GATES), "ran")
    # The jobs went through the job service, not an in-process runner.
    with open(portable_beam[3] / "job_service.log") as f:
        # One job each for IdxExampleGen and StatisticsGen. Transform runs no Beam job: with
        # materialize=False, disable_statistics=True and no analyzers, TFX runs it in place
        # (tfx/components/transform/executor.py, _RunInPlaceImpl), without reading the data.
        assert f.read().count("with state DONE") == 2


def test_the_portable_runner_wrote_every_example(portable_run, small_mnist):
    _, config = portable_run
    expected = expected_splits(config)
    for split in ("train", "valid", "eval"):
        images, labels = read_examples(config, split)
        np.testing.assert_array_equal(images, expected[split][0].reshape(-1, 784))
        np.testing.assert_array_equal(labels[:, 0], expected[split][1])
    assert glob.glob(os.path.join(config.pipeline_root, "Transform", "transform_graph", "*", "transform_fn", "*.pb"))
