"""Compiles the pipeline for Kubeflow Pipelines (KubeflowV2DagRunner, the only Kubeflow runner
in TFX 1.16) from the same ``create_pipeline`` the local runner uses.

Writes two files:
- ``<name>.yaml``: the PipelineSpec for ``kfp.Client().upload_pipeline`` (or the KFP UI), followed
  by a second YAML document, a KFP ``PlatformSpec`` that places the Trainer on GPU nodes (node
  selector and tolerations: TFX does not emit them; KFP 2.1+ backends apply them);
- ``<name>.json``: the PipelineJob (pipeline spec + runtime config) for Vertex AI Pipelines or
  ``kfp.Client().create_run_from_pipeline_package``.

What each component gets (images, CPU, memory, GPUs, placement) is ``ClusterConfig``.
"""

from __future__ import annotations

import dataclasses
import json
import os

import yaml
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx import v1 as tfx
from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner, pipeline_builder

from pipeline.config import PipelineConfig
from pipeline.pipeline import create_pipeline

ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec

# Components whose work is a Beam pipeline over the whole dataset, and those that only move a file.
DATA_STAGES = ("IdxExampleGen", "StatisticsGen", "Transform", "Evaluator")
LIGHT_STAGES = ("ImportSchemaGen", "ExampleValidator", "DataGate", "ModelPictures", "Pusher")


@dataclasses.dataclass
class ClusterConfig:
    image: str  # the project's image (kubeflow/Dockerfile), for every component
    trainer_image: str | None = None  # the Trainer's image, e.g. a CUDA build; default: image
    gpus: int = 1  # GPUs for the Trainer, all used by MirroredStrategy; 0 trains on CPU
    gpu_resource: str = "nvidia.com/gpu"
    trainer_cpu: float = 8.0
    trainer_memory: str = "32G"
    data_stage_cpu: float = 4.0
    data_stage_memory: str = "16G"
    light_cpu: float = 1.0
    light_memory: str = "2G"
    # Trainer pod placement on GPU nodes; the defaults fit NVIDIA's GPU operator and GKE.
    node_selector: dict[str, str] = dataclasses.field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    tolerations: list[dict] = dataclasses.field(
        default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    )


def _resources(cpu: float, memory: str, gpus: int = 0, gpu_resource: str = "") -> ResourceSpec:
    spec = ResourceSpec(cpu_limit=cpu, memory_limit=_gigabytes(memory))
    if gpus:
        spec.accelerator.type = gpu_resource
        spec.accelerator.count = gpus
    return spec


def _gigabytes(memory: str) -> float:
    units = {"G": 1.0, "Gi": 1.073741824, "M": 1e-3, "Mi": 1.048576e-3}
    for suffix in sorted(units, key=len, reverse=True):
        if memory.endswith(suffix):
            return float(memory[: -len(suffix)]) * units[suffix]
    return float(memory)


def apply_cluster_resources(tfx_pipeline: tfx.dsl.Pipeline, cluster: ClusterConfig) -> None:
    """Gives each component the CPU, memory and (for the Trainer) GPUs its work needs."""
    for component in tfx_pipeline.components:
        node = component.id
        if node == "Trainer":
            component.with_platform_config(
                _resources(cluster.trainer_cpu, cluster.trainer_memory, cluster.gpus, cluster.gpu_resource)
            )
        elif node in DATA_STAGES:
            component.with_platform_config(_resources(cluster.data_stage_cpu, cluster.data_stage_memory))
        elif node in LIGHT_STAGES:
            component.with_platform_config(_resources(cluster.light_cpu, cluster.light_memory))


def kubeflow_pipeline(config: PipelineConfig, cluster: ClusterConfig) -> tfx.dsl.Pipeline:
    # Kubeflow's compiler knows TFX's stock baseline strategy only; KFP caches re-runs itself.
    config = dataclasses.replace(config, baseline="latest_blessed")
    tfx_pipeline = create_pipeline(config)  # no metadata config: the cluster's MLMD is used
    apply_cluster_resources(tfx_pipeline, cluster)
    return tfx_pipeline


def platform_spec(pipeline_spec: dict, cluster: ClusterConfig) -> dict:
    """KFP's PlatformSpec document placing the Trainer's executor on GPU nodes."""
    component = pipeline_spec["root"]["dag"]["tasks"]["Trainer"]["componentRef"]["name"]
    executor = pipeline_spec["components"][component]["executorLabel"]
    placement = {}
    if cluster.node_selector:
        placement["nodeSelector"] = {"labels": dict(cluster.node_selector)}
    if cluster.tolerations:
        placement["tolerations"] = [dict(t) for t in cluster.tolerations]
    return {"platforms": {"kubernetes": {"deploymentSpec": {"executors": {executor: placement}}}}}


def compile_pipeline(config: PipelineConfig, cluster: ClusterConfig, output_path: str) -> tuple[str, str]:
    """Writes <output_path without extension>.yaml and .json; returns their paths."""
    images = {
        pipeline_builder.DEFAULT_IMAGE_PATH_KEY: cluster.image,
        "Trainer": cluster.trainer_image or cluster.image,
    }
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(default_image=images),
        output_dir=os.path.dirname(os.path.abspath(output_path)),
    )
    job = runner.run(kubeflow_pipeline(config, cluster), write_out=False)
    stem = os.path.splitext(os.path.abspath(output_path))[0]
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    with open(stem + ".json", "w") as f:
        json.dump(job, f, indent=2, sort_keys=True)
    documents = [job["pipelineSpec"]]
    if cluster.gpus and (cluster.node_selector or cluster.tolerations):
        documents.append(platform_spec(job["pipelineSpec"], cluster))
    with open(stem + ".yaml", "w") as f:
        f.write(f"# vae-mnist for Kubeflow Pipelines (kubeflow/runner.py); pipeline root {config.pipeline_root}\n")
        yaml.safe_dump_all(documents, f, sort_keys=True)
    return stem + ".yaml", stem + ".json"
