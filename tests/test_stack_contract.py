"""What must be the same on both stacks (README, "Stacks"), pinned in one recorded file that both
stacks' suites compare against: tests/stack_contract.json. A stack that drifts (a component
rewired, a gate or setting changed, a signature that takes or returns something else, a task of the compiled
Kubeflow spec that runs another executor, a small run that is no longer blessed and pushed) fails
here, on the stack where it drifted.

After an intended change, rewrite the file on one stack and check the other passes unchanged:
``VAE_MNIST_WRITE_CONTRACT=1 .venv/bin/pytest tests/test_stack_contract.py``, then
``.ci/debian13 .venv/bin/pytest tests/test_stack_contract.py`` (or the reverse).
"""

from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import subprocess
import sys

import pytest
import yaml
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2

from pipeline import summary
from pipeline.config import PipelineConfig
from pipeline.kubeflow_runner import ClusterConfig, compile_pipeline
from pipeline.local_runner import last_run
from pipeline.pipeline import create_pipeline
from tests.helpers import REPO, SMALL_RUN, states

CONTRACT = os.path.join(REPO, "tests", "stack_contract.json")
# Fixed paths, so that the description holds no machine's directories; in a bucket, as a pod
# reaches nothing else (local paths are refused at compile time).
SETTINGS = {
    "input_dir": "gs://vae-mnist/mnist",
    "pipeline_root": "gs://vae-mnist/root",
    "serving_root": "gs://vae-mnist/serving",
    **SMALL_RUN,
}


def _plain(value):
    """A setting as data: JSON text parsed, this checkout's path and per-run tokens named."""
    if isinstance(value, str):
        try:
            return _plain(json.loads(value))
        except ValueError:
            return value.replace(REPO, "<repo>")
    if isinstance(value, dict):
        return {k: "<per run>" if k in ("lookup_nonce", "code_revision") else _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def pipeline_wiring() -> dict:
    """Each component: its class, the components it consumes, and every setting it was given (the
    gates' thresholds, the Evaluator's metrics and bounds, the model's configuration)."""
    pipeline = create_pipeline(PipelineConfig(**SETTINGS))
    return {
        c.id: {
            "class": type(c).__name__,
            "after": sorted(u.id for u in c.upstream_nodes),
            "settings": _plain({k: v for k, v in c.exec_properties.items() if v is not None}),
        }
        for c in pipeline.components
    }


def signatures(saved_model_dir: str) -> dict:
    """Every signature as TF Serving reads it from saved_model.pb: inputs and outputs, with dtype
    and shape (-1: any size)."""
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    [meta_graph] = saved_model.meta_graphs

    def tensors(infos) -> dict:
        return {
            name: [json_format.MessageToDict(info)["dtype"], [int(d.size) for d in info.tensor_shape.dim]]
            for name, info in sorted(infos.items())
        }

    return {
        name: {"inputs": tensors(s.inputs), "outputs": tensors(s.outputs), "method": s.method_name}
        for name, s in sorted(meta_graph.signature_def.items())
        if not name.startswith("__")
    }


def kubeflow_tasks(directory: str) -> dict:
    """Each task of the compiled KFP spec: the executor it runs, what it waits for, its inputs and
    outputs by name, whether KFP may cache it."""
    path = compile_pipeline(PipelineConfig(**SETTINGS), ClusterConfig(image="vae-mnist:test"), f"{directory}/p.yaml")
    with open(path) as f:
        spec = next(yaml.safe_load_all(f))
    described = {}
    for name, task in spec["root"]["dag"]["tasks"].items():
        component = spec["components"][task["componentRef"]["name"]]
        args = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]["args"]
        described[name] = {
            "executor": args[args.index("--executor_class_path") + 1],
            "after": sorted(task.get("dependentTasks", [])),
            "parameters": sorted(task.get("inputs", {}).get("parameters", {})),
            "artifacts": sorted(task.get("inputs", {}).get("artifacts", {})),
            "outputs": sorted(component.get("outputDefinitions", {}).get("artifacts", {})),
            "cached": task.get("cachingOptions", {}).get("enableCache", False),
        }
    return described


def outcome(config: PipelineConfig) -> dict:
    """What the run's summary says of the model: blessed, and pushed."""
    lines = summary.outcome_lines(last_run(config), config.serving_model_dir)
    return {"blessed": "BLESSED" in lines, "pushed": any(line.startswith("Pushed: ") for line in lines)}


@pytest.fixture(scope="module")
def described(small_run, tmp_path_factory) -> dict:
    [model_dir] = glob.glob(os.path.join(small_run.pipeline_root, "Trainer", "model", "*", "Format-Serving"))
    description = {
        "pipeline": pipeline_wiring(),
        "signatures": signatures(model_dir),
        "kubeflow": kubeflow_tasks(str(tmp_path_factory.mktemp("contract"))),
        "small_run": {"states": states(small_run), "outcome": outcome(small_run)},
    }
    if os.environ.get("VAE_MNIST_WRITE_CONTRACT"):
        with open(CONTRACT + ".tmp", "w") as f:
            json.dump(description, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(CONTRACT + ".tmp", CONTRACT)
    return json.loads(json.dumps(description))  # as the file holds it


@pytest.fixture(scope="module")
def recorded() -> dict:
    with open(CONTRACT) as f:
        return json.load(f)


@pytest.mark.parametrize("part", ["pipeline", "signatures", "kubeflow", "small_run"])
def test_this_stack_keeps_the_contract(described, recorded, part):
    assert described[part] == recorded[part]


def test_the_recorded_small_run_was_blessed_and_pushed(recorded):
    """The recorded run is one a reader would accept: every component ran, and the model was
    blessed and pushed."""
    assert set(recorded["small_run"]["states"].values()) == {"ran"} and "Pusher" in recorded["small_run"]["states"]
    assert recorded["small_run"]["outcome"] == {"blessed": True, "pushed": True}


def test_version_names_the_stack_it_runs_on():
    """`vae-mnist --version` as the README shows it: TFX, TensorFlow and Python of this
    environment, and its stack, whose lock pins this TFX."""
    import tensorflow as tf
    import tfx

    command = os.path.join(os.path.dirname(sys.executable), "vae-mnist")
    shown = subprocess.run([command, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    python = ".".join(map(str, sys.version_info[:3]))
    stack = "fallback" if tfx.__version__.startswith("1.16.") else "current"
    with open(os.path.join(REPO, "locks", f"{stack}.txt")) as f:
        assert f"tfx=={tfx.__version__}\n" in f.read()
    assert shown == (
        f"vae-mnist {importlib.metadata.version('vae-mnist')}: TFX {tfx.__version__}, "
        f"TensorFlow {tf.__version__}, Python {python} ({stack} stack)"
    )
