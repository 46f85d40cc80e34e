"""Compiles the pipeline for Kubeflow from the same ``create_pipeline`` the local runner uses
(KubeflowV2DagRunner, the only Kubeflow runner in TFX 1.16), for one of two targets:

- ``kfp`` (open-source Kubeflow Pipelines 2.x): ``<name>.yaml``, the PipelineSpec for
  ``kfp.Client().create_run_from_pipeline_package`` or the KFP UI, followed by a second YAML
  document, a KFP ``PlatformSpec`` that places the Trainer on GPU nodes (node selector and
  tolerations; TFX does not emit them);
- ``vertex`` (Vertex AI Pipelines): ``<name>.json``, a PipelineJob. Vertex names accelerators by
  machine type (``NVIDIA_TESLA_T4``), not by Kubernetes resource, and places pods itself.

Both use pipeline spec 2.1: KFP's driver accepts a parameter only as ``runtimeValue.constant``
(``backend/src/v2/driver/resolve.go``); TFX's default 2.0 schema writes ``constantValue``.
The compiled spec holds no ``resolver`` or ``customJob`` executor, which KFP's backend refuses
(``backend/src/v2/compiler/argocompiler/dag.go``): the Evaluator's baseline is ServedModel, a
container component.

Then this module sets, for every container executor, the resources its pod needs (one table,
``RESOURCE_CLASSES``; a component missing from it fails the compile), and keeps ServedModel out
of KFP's cache. Resources are written into the compiled spec rather than through TFX's
``with_platform_config``, because TFX's step builder builds FileBasedExampleGen subclasses
(IdxExampleGen) on a separate path that never copies ``platform_config``
(``step_builder._build_file_based_example_gen_spec``).
"""

from __future__ import annotations

import dataclasses
import json
import os

import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner, pipeline_builder

from pipeline.config import PipelineConfig
from pipeline.pipeline import create_pipeline

TARGETS = ("kfp", "vertex")
GPU_RESOURCE = {"kfp": "nvidia.com/gpu", "vertex": "NVIDIA_TESLA_T4"}

# What each component's pod needs. "data": a Beam pipeline over the whole dataset; "light": a
# file or a model read, checked or copied; "trainer": the GPUs.
RESOURCE_CLASSES = {
    "IdxExampleGen": "data",
    "StatisticsGen": "data",
    "Transform": "data",
    "Evaluator": "data",
    "SpanScores": "data",
    "ImportSchemaGen": "light",
    "ExampleValidator": "light",
    "DataGate": "light",
    "DriftGate": "light",
    "ServedModel": "light",
    "ModelPictures": "light",
    "Pusher": "light",
    "Trainer": "trainer",
}
# Tasks that read state outside the pipeline: never answered from KFP's cache.
UNCACHED_TASKS = ("ServedModel",)
# KFP's driver replaces a constant that is exactly this with the run's id
# (backend/src/v2/driver/resolve.go); Vertex does the same. A per-run value keeps ServedModel's
# cache key unique even when a run is submitted with caching forced on for every task
# (kfp.Client().create_run_from_pipeline_package(enable_caching=True) overrides cachingOptions).
RUN_ID_PLACEHOLDER = "{{$.pipeline_job_uuid}}"


@dataclasses.dataclass
class ClusterConfig:
    image: str  # the project's image (kubeflow/Dockerfile), for every component
    trainer_image: str | None = None  # the Trainer's image, e.g. a CUDA build; default: image
    gpus: int = 1  # GPUs for the Trainer, all used by MirroredStrategy; 0 trains on CPU
    gpu_resource: str | None = None  # default: nvidia.com/gpu on KFP, NVIDIA_TESLA_T4 on Vertex
    trainer_cpu: float = 8.0
    trainer_memory: str = "32G"
    data_stage_cpu: float = 4.0
    data_stage_memory: str = "16G"
    light_cpu: float = 1.0
    light_memory: str = "2G"
    # Trainer pod placement on GPU nodes (KFP only); the defaults fit NVIDIA's GPU operator and GKE.
    node_selector: dict[str, str] = dataclasses.field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    tolerations: list[dict] = dataclasses.field(
        default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    )

    def resources(self, resource_class: str, target: str) -> dict:
        """The container's ``resources`` in the PipelineSpec (CPU count, memory in GB)."""
        if resource_class == "trainer":
            spec = {"cpuLimit": self.trainer_cpu, "memoryLimit": _gigabytes(self.trainer_memory)}
            if self.gpus:
                spec["accelerator"] = {"type": self.gpu_resource or GPU_RESOURCE[target], "count": str(self.gpus)}
            return spec
        if resource_class == "data":
            return {"cpuLimit": self.data_stage_cpu, "memoryLimit": _gigabytes(self.data_stage_memory)}
        return {"cpuLimit": self.light_cpu, "memoryLimit": _gigabytes(self.light_memory)}


def _gigabytes(memory: str) -> float:
    units = {"G": 1.0, "Gi": 1.073741824, "M": 1e-3, "Mi": 1.048576e-3}
    for suffix in sorted(units, key=len, reverse=True):
        if memory.endswith(suffix):
            return float(memory[: -len(suffix)]) * units[suffix]
    return float(memory)


def executor_of(pipeline_spec: dict, task: str) -> tuple[str, dict]:
    """(executor label, executor spec) of a task of the root DAG."""
    component = pipeline_spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]
    label = pipeline_spec["components"][component]["executorLabel"]
    return label, pipeline_spec["deploymentSpec"]["executors"][label]


def finish_spec(pipeline_spec: dict, cluster: ClusterConfig, target: str) -> None:
    """Resources for every container executor, and ServedModel kept out of the cache."""
    tasks = pipeline_spec["root"]["dag"]["tasks"]
    for task in tasks:
        if task not in RESOURCE_CLASSES:
            raise ValueError(f"component {task!r} has no Kubeflow resources: add it to RESOURCE_CLASSES ({__file__})")
        _, executor = executor_of(pipeline_spec, task)
        executor["container"]["resources"] = cluster.resources(RESOURCE_CLASSES[task], target)
    for task in UNCACHED_TASKS:
        tasks[task]["cachingOptions"] = {"enableCache": False}
    json_format.ParseDict(pipeline_spec, pipeline_spec_pb2.PipelineSpec())  # still a valid PipelineSpec


def platform_spec(pipeline_spec: dict, cluster: ClusterConfig) -> dict:
    """KFP's PlatformSpec document placing the Trainer's executor on GPU nodes."""
    label, _ = executor_of(pipeline_spec, "Trainer")
    placement = {}
    if cluster.node_selector:
        placement["nodeSelector"] = {"labels": dict(cluster.node_selector)}
    if cluster.tolerations:
        placement["tolerations"] = [dict(t) for t in cluster.tolerations]
    return {"platforms": {"kubernetes": {"deploymentSpec": {"executors": {label: placement}}}}}


def compile_job(config: PipelineConfig, cluster: ClusterConfig, target: str = "kfp") -> dict:
    """The PipelineJob (``pipelineSpec`` + ``runtimeConfig``) for a target, finished."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    images = {
        pipeline_builder.DEFAULT_IMAGE_PATH_KEY: cluster.image,
        "Trainer": cluster.trainer_image or cluster.image,
    }
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(default_image=images, use_pipeline_spec_2_1=True),
        output_dir=os.getcwd(),  # unused: write_out=False
    )
    # No metadata config: the cluster's ML Metadata is used.
    job = runner.run(create_pipeline(config, kubeflow_run_id=RUN_ID_PLACEHOLDER), write_out=False)
    # KFP runs a spec without a pipeline root in its own default store (minio://), which
    # TensorFlow cannot write; the PipelineJob for Vertex carries it as gcsOutputDirectory.
    job["pipelineSpec"]["defaultPipelineRoot"] = config.pipeline_root
    finish_spec(job["pipelineSpec"], cluster, target)
    return job


def compile_pipeline(config: PipelineConfig, cluster: ClusterConfig, output_path: str, target: str = "kfp") -> str:
    """Writes <output_path without extension>.yaml (kfp) or .json (vertex); returns its path."""
    job = compile_job(config, cluster, target)
    stem = os.path.splitext(os.path.abspath(output_path))[0]
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    if target == "vertex":
        with open(stem + ".json", "w") as f:
            json.dump(job, f, indent=2, sort_keys=True)
        return stem + ".json"
    documents = [job["pipelineSpec"]]
    if cluster.gpus and (cluster.node_selector or cluster.tolerations):
        documents.append(platform_spec(job["pipelineSpec"], cluster))
    with open(stem + ".yaml", "w") as f:
        f.write(f"# vae-mnist for Kubeflow Pipelines ({__name__}); pipeline root {config.pipeline_root}\n")
        yaml.safe_dump_all(documents, f, sort_keys=True)
    return stem + ".yaml"
