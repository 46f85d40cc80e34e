"""The compiled Kubeflow pipeline, executed. Every task of the spec runs its own command and args
(pipeline/kfp_pod.py around TFX's Kubeflow entrypoint, and our executors: the code a pod runs)
under tests/kfp_harness.py, which does what open-source KFP's driver and launcher do around a pod,
staging artifacts through the object store as the launcher does. Everything lives in a real S3
server (moto's, on loopback), as on a cluster whose store is SeaweedFS or MinIO: the pipeline
root, the input directory and the serving root. Pods get the store's endpoint from the compiled
container env and its keys from the "cluster's" secret through the PlatformSpec, nothing else.
Three runs share one "cluster" (its metadata and cache): the first pushes, a worse model is
refused, and an unchanged re-run pushes nothing."""

import os
import sys

import numpy as np
import pytest
import yaml
from tfx.dsl.io import fileio
from tfx.utils import io_utils

from components import model_card, object_store, serving_layout
from pipeline import serving
from pipeline.config import PipelineConfig
from pipeline.kubeflow_runner import ClusterConfig, compile_pipeline
from tests.conftest import new_bucket
from tests.helpers import (
    DATA_STAGES,
    LOOSE_BOUNDS,
    REPO,
    SMALL_RUN,
    read_idx_dataset,
    run_like_tf_serving,
    served_files,
)
from tests.kfp_harness import KfpHarness, RefusedByKfp, check_supported
from tests.pod_forker import ForkedPods
from tests.s3_server import ACCESS_KEY, SECRET_KEY
from tests.test_pictures import MODEL_PICTURES

DATA_TASKS = (*DATA_STAGES, "Transform")
# The served model is looked up afresh on every run, and what reads it runs again.
ALWAYS_RUN = ("ServedModel", "SpanScores", "DriftGate", "Evaluator", "Pusher")


# The cluster's secret with the store's keys, under KFP's own names (components/object_store.py).
CLUSTER_SECRETS = {
    object_store.KFP_SECRET: dict(zip(object_store.KFP_SECRET_KEYS, (ACCESS_KEY, SECRET_KEY), strict=True))
}


def compile_for_test(directory, name: str, bucket: str = "s3://kfp-run", endpoint: str = "", **changes):
    """(config, spec path) of a pipeline whose root, input dir and serving root are in ``bucket``."""
    settings = {
        "pipeline_root": f"{bucket}/root",
        "serving_root": f"{bucket}/serving",
        "input_dir": f"{bucket}/mnist",
        **SMALL_RUN,
    }
    config = PipelineConfig(**(settings | changes))
    cluster = ClusterConfig(image="vae-mnist:test", s3_endpoint=endpoint or object_store.KFP_ENDPOINT)
    return config, compile_pipeline(config, cluster, os.path.join(directory, name))


@pytest.fixture(scope="module")
def kfp_runs(tmp_path_factory, small_mnist, s3_store):
    directory = str(tmp_path_factory.mktemp("kfp_run"))
    bucket = new_bucket("kfp-run")
    io_utils.copy_dir(small_mnist, f"{bucket}/mnist")  # the user's data, in the store
    config, good = compile_for_test(directory, "good.yaml", endpoint=s3_store.endpoint)
    # One epoch instead of three: clearly worse, yet inside a loose absolute bound.
    _, worse = compile_for_test(
        directory, "worse.yaml", endpoint=s3_store.endpoint, vae_overrides={"epochs": 1}, bounds=LOOSE_BOUNDS
    )
    # The pods' `python` is this environment's, as the image's is the image's.
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    # Each pod's own command, forked from a pre-imported Python (tests/pod_forker.py) to save its
    # imports; VAE_MNIST_FRESH_PODS=1 starts each as a fresh process instead, as a cluster does.
    pods = None if os.environ.get("VAE_MNIST_FRESH_PODS") else ForkedPods(sys.executable, env, REPO)
    harness = KfpHarness(os.path.join(directory, "cluster"), env, pods=pods, secrets=CLUSTER_SECRETS)
    runs = {}
    try:
        for name, spec in (("first", good), ("worse", worse), ("again", good)):
            tasks = harness.run(spec)
            failed = {task: run.log[-3000:] for task, run in tasks.items() if run.state == "failed"}
            assert not failed, failed  # every pod exited 0
            runs[name] = (tasks, served_files(config.serving_model_dir))
    finally:
        if pods:
            pods.close()
    return config, runs


def download(uri: str, directory) -> str:
    """A copy of a bucket's directory on local disk (neither stack's TensorFlow reads s3://)."""
    local = os.path.join(str(directory), "copy")
    io_utils.copy_dir(uri, local)
    return local


def states(tasks) -> dict[str, str]:
    return {name: run.state for name, run in tasks.items()}


def test_first_run_pushes_a_blessed_model_tf_serving_can_load(kfp_runs, small_mnist, tmp_path):
    config, runs = kfp_runs
    tasks, served = runs["first"]
    assert set(states(tasks).values()) == {"ran"}
    # The empty marker survived ML Metadata (numbers come back as doubles) and meant "no baseline".
    assert tasks["ServedModel"].output("model").metadata["served_version"] == 0.0
    assert tasks["Evaluator"].output("blessing").metadata["blessed"] == 1.0
    pushed = tasks["Pusher"].output("pushed_model").metadata
    [version] = serving_layout.versions(config.serving_model_dir)
    assert pushed["pushed"] == 1.0 and pushed["pushed_destination"] == os.path.join(
        config.serving_model_dir, str(version)
    )
    assert pushed["pushed_destination"].startswith("s3://kfp-run/serving/")
    assert f"{version}/saved_model.pb" in served
    # What TF Serving would load, copied out of the bucket byte for byte, run as its C++ loader does.
    local = download(pushed["pushed_destination"], tmp_path)
    images = read_idx_dataset(small_mnist)["eval"][0][:2].reshape(2, 784).astype(np.int64)
    outputs = run_like_tf_serving(local, "serving_default", {"image": images})
    assert outputs["reconstruction"].shape == (2, 784)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    os.rename(local, model_dir / str(version))
    response = serving.predict_in_process(str(model_dir), serving.rest_request(images))
    assert len(response["predictions"]) == 2 and len(response["predictions"][0]["reconstruction"]) == 784
    # The model card came along, written in the pod; without a run id there, it names the archive.
    card = model_card.read(str(model_dir / str(version)))
    assert f"# vae-mnist version {version}" in card and "BLESSED on 500 eval images" in card
    run_dir = tasks["Pusher"].output("pushed_model").uri.split("/Pusher/")[0]  # <root>/<the run's id>
    assert "by the run writing `" in card and f"{os.path.basename(run_dir)}/Pusher/pushed_model`" in card


def test_the_bucket_holds_no_directory_markers_and_every_pod_exited_cleanly(kfp_runs):
    _, runs = kfp_runs
    listing = object_store.client().get_paginator("list_objects_v2").paginate(Bucket="kfp-run")
    keys = [obj["Key"] for page in listing for obj in page.get("Contents", [])]
    assert keys and not [key for key in keys if key.endswith("/")]  # kubeflow/pipelines#13476
    for tasks, _ in runs.values():
        for run in tasks.values():
            assert "pure virtual method called" not in run.log  # tensorflow-io's exit abort


def test_the_pictures_artifact_type_round_trips_through_the_entrypoint(kfp_runs):
    _, runs = kfp_runs
    pictures = runs["first"][0]["ModelPictures"].output("pictures_dir")
    assert "title: components.Pictures" in pictures.schema
    assert pictures.uri.startswith("s3://kfp-run/root/")  # uploaded by the "launcher"
    assert sorted(fileio.listdir(pictures.uri)) == MODEL_PICTURES


def test_a_worse_model_is_refused_and_the_served_version_is_untouched(kfp_runs):
    config, runs = kfp_runs
    tasks, served = runs["worse"]
    assert {task: tasks[task].state for task in DATA_TASKS} == dict.fromkeys(DATA_TASKS, "cached")
    assert tasks["Trainer"].state == "ran"
    [version] = serving_layout.versions(config.serving_model_dir)
    # The baseline is the model served now, the one the first run pushed.
    assert tasks["ServedModel"].output("model").metadata["served_version"] == float(version)
    assert tasks["Evaluator"].output("blessing").metadata["blessed"] == 0.0
    assert tasks["Pusher"].output("pushed_model").metadata["pushed"] == 0.0
    assert served == runs["first"][1]  # byte for byte


def test_an_unchanged_rerun_is_cached_and_pushes_nothing(kfp_runs):
    config, runs = kfp_runs
    tasks, served = runs["again"]
    assert states(tasks) == {task: "ran" if task in ALWAYS_RUN else "cached" for task in tasks}
    [version] = serving_layout.versions(config.serving_model_dir)
    # The cached candidate is the served model: blessed (no regression against itself), not pushed again.
    assert tasks["Evaluator"].output("blessing").metadata["blessed"] == 1.0
    pushed = tasks["Pusher"].output("pushed_model").metadata
    assert pushed["pushed"] == 0.0 and pushed["already_served"] == float(version)
    assert served == runs["first"][1]


def test_the_harness_refuses_what_kfp_refuses(tmp_path):
    _, path = compile_for_test(str(tmp_path), "p.yaml")
    with open(path) as f:
        spec = next(yaml.safe_load_all(f))
    check_supported(spec)  # ours passes
    constant_value = yaml.safe_load(yaml.safe_dump(spec))
    parameter = constant_value["root"]["dag"]["tasks"]["Pusher"]["inputs"]["parameters"]["push_destination"]
    parameter["runtimeValue"] = {"constantValue": {"stringValue": parameter["runtimeValue"]["constant"]}}
    with pytest.raises(RefusedByKfp, match="param runtime value spec of type constantValue not implemented"):
        check_supported(constant_value)
    resolver = yaml.safe_load(yaml.safe_dump(spec))
    label = resolver["components"]["ServedModel"]["executorLabel"]
    resolver["deploymentSpec"]["executors"][label] = {"resolver": {"outputArtifactQueries": {}}}
    with pytest.raises(RefusedByKfp, match="resolver executors not implemented"):
        check_supported(resolver)
