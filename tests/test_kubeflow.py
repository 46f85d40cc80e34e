"""Kubeflow, checked offline: the compiled pipeline parsed into KFP's own PipelineSpec proto,
loaded by the pinned kfp SDK; the Dockerfile and the serving manifests parsed."""

import json
import os

import pytest
import tomli as tomllib  # Python 3.10 has no tomllib
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from kubeflow.runner import ClusterConfig, compile_pipeline
from pipeline import beam, cli
from pipeline.config import PipelineConfig
from pipeline.pipeline import create_pipeline
from tests.conftest import REPO

IMAGE, GPU_IMAGE = "registry.example/vae-mnist:0.1.0", "registry.example/vae-mnist:0.1.0-gpu"
ROOT = "gs://vae-bucket/pipeline_root"
BEAM_COMPONENTS = ("IdxExampleGen", "StatisticsGen", "Transform", "Evaluator")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("kfp")
    config = PipelineConfig(
        pipeline_root=ROOT,
        input_dir="gs://vae-bucket/mnist",
        serving_root="gs://vae-bucket/serving",
        beam_args=beam.beam_args("flink", job_endpoint="flink-jobserver:8099"),
    )
    cluster = ClusterConfig(image=IMAGE, trainer_image=GPU_IMAGE, gpus=2)
    yaml_path, json_path = compile_pipeline(config, cluster, str(out / "vae-mnist.yaml"))
    with open(json_path) as f:
        job = json.load(f)
    spec = json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    with open(yaml_path) as f:
        documents = list(yaml.safe_load_all(f))
    return config, job, spec, documents, yaml_path


def executor(spec, task: str):
    component = spec.root.dag.tasks[task].component_ref.name
    label = spec.components[component].executor_label
    deployment = json_format.MessageToDict(spec.deployment_spec)
    return label, deployment["executors"][label]


def test_every_local_component_is_a_task_with_the_same_dependencies(compiled):
    config, _, spec, _, _ = compiled
    local = create_pipeline(config)
    # KFP splits TFX's latest-blessed-model resolver in two: blessings first, then the model.
    resolver_tasks = {t for t in spec.root.dag.tasks if t.startswith("baseline_model_resolver")}
    model_resolver = "baseline_model_resolver-model-resolver"
    assert resolver_tasks == {model_resolver, "baseline_model_resolver-model-blessing-resolver"}
    for component in local.components:
        if component.id == "baseline_model_resolver":
            continue
        assert component.id in spec.root.dag.tasks, component.id
        expected = set()
        for upstream in component.upstream_nodes:
            expected.add(model_resolver if upstream.id == "baseline_model_resolver" else upstream.id)
        assert set(spec.root.dag.tasks[component.id].dependent_tasks) == expected, component.id
    assert set(spec.root.dag.tasks) == {c.id for c in local.components} - {"baseline_model_resolver"} | resolver_tasks
    # The gate orders Transform after it, exactly as locally.
    assert "DataGate" in spec.root.dag.tasks["Transform"].dependent_tasks


def test_trainer_requests_the_gpus_on_its_own_image(compiled):
    _, _, spec, _, _ = compiled
    _, trainer = executor(spec, "Trainer")
    assert trainer["container"]["image"] == GPU_IMAGE
    resources = trainer["container"]["resources"]
    assert resources["accelerator"] == {"type": "nvidia.com/gpu", "count": "2"}
    assert resources["cpuLimit"] == 8.0 and resources["memoryLimit"] == 32.0
    for task in ("IdxExampleGen", "DataGate", "Pusher"):
        assert executor(spec, task)[1]["container"]["image"] == IMAGE
    assert "accelerator" not in executor(spec, "Transform")[1]["container"]["resources"]


def test_pipeline_root_and_beam_arguments(compiled):
    _, job, _, _, _ = compiled
    assert job["runtimeConfig"]["gcsOutputDirectory"] == ROOT
    _, _, spec, _, _ = compiled
    for task in BEAM_COMPONENTS:
        args = executor(spec, task)[1]["container"]["args"]
        assert "--runner=PortableRunner" in args and "--job_endpoint=flink-jobserver:8099" in args, task


def test_trainer_is_placed_on_gpu_nodes(compiled):
    _, _, spec, documents, _ = compiled
    assert len(documents) == 2
    label, _ = executor(spec, "Trainer")
    placement = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert list(placement) == [label]
    assert placement[label]["nodeSelector"] == {"labels": {"nvidia.com/gpu.present": "true"}}
    assert placement[label]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_the_pinned_kfp_sdk_loads_the_yaml(compiled):
    from kfp import components

    loaded = components.load_component_from_file(compiled[4])
    assert loaded.name == "vae-mnist"
    assert set(loaded.pipeline_spec.root.dag.tasks) == set(compiled[2].root.dag.tasks)


def test_cli_compiles_with_a_dataflow_profile(tmp_path, capsys):
    argv = ["kubeflow", "compile", "--image", IMAGE, "--pipeline-root", ROOT, "--input-dir", "gs://b/mnist"]
    argv += ["--serving-root", "gs://b/serving", "--gpus", "0", "--output", str(tmp_path / "p.yaml")]
    argv += ["--beam-profile", "dataflow", "--beam-option", "project=proj", "--beam-option", "region=europe-west4"]
    argv += ["--beam-option", "temp_location=gs://b/tmp"]
    assert cli.main(argv) == 0
    with open(tmp_path / "p.json") as f:
        spec = json_format.ParseDict(json.load(f)["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    args = executor(spec, "StatisticsGen")[1]["container"]["args"]
    assert "--runner=DataflowRunner" in args and f"--sdk_container_image={IMAGE}" in args
    assert "accelerator" not in executor(spec, "Trainer")[1]["container"]["resources"]
    with open(tmp_path / "p.yaml") as f:
        assert len(list(yaml.safe_load_all(f))) == 1  # no GPU, no GPU placement


def test_beam_profiles_say_what_they_miss():
    with pytest.raises(ValueError, match="'dataflow' needs project, region, temp_location, image"):
        beam.beam_args("dataflow")
    with pytest.raises(ValueError, match="unknown Beam profile 'flnk'"):
        beam.beam_args("flnk")


def test_dockerfile_builds_on_tfx_and_installs_every_package():
    with open(os.path.join(REPO, "kubeflow", "Dockerfile")) as f:
        lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    assert "ARG BASE_IMAGE=gcr.io/tfx-oss-public/tfx:1.16.0" in lines and "FROM ${BASE_IMAGE}" in lines
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        packages = tomllib.load(f)["tool"]["setuptools"]["packages"]
    copied = {line.split()[1].rstrip("/") for line in lines if line.startswith("COPY")}
    assert set(packages) <= copied
    run = " ".join(lines[lines.index(next(line for line in lines if line.startswith("RUN"))) :])
    assert "pip install --no-cache-dir --no-deps ." in run
    assert "import components.idx_example_gen, components.data_gate, model.trainer, model.metrics" in run


def test_serving_manifests():
    with open(os.path.join(REPO, "kubeflow", "serving", "tf-serving.yaml")) as f:
        deployment, service = yaml.safe_load_all(f)
    assert deployment["kind"] == "Deployment" and service["kind"] == "Service"
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"] == pod["metadata"]["labels"] == service["spec"]["selector"]
    [container] = pod["spec"]["containers"]
    assert container["image"].startswith("tensorflow/serving:")
    assert "--model_name=vae-mnist" in container["args"]
    assert any(a.startswith("--model_base_path=") for a in container["args"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/v1/models/vae-mnist", "port": 8501}
    assert {p["port"] for p in service["spec"]["ports"]} == {8500, 8501}
    with open(os.path.join(REPO, "kubeflow", "serving", "gpu-patch.yaml")) as f:
        patch = yaml.safe_load(f)
    [gpu_container] = patch["spec"]["template"]["spec"]["containers"]
    assert gpu_container["name"] == container["name"] and gpu_container["resources"]["limits"] == {"nvidia.com/gpu": 1}
