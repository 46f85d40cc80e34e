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

Object stores: the pipeline root may be ``gs://`` (TensorFlow writes it), ``s3://`` or
``minio://`` (KFP's launcher stages artifacts at local paths; every pod runs pipeline/kfp_pod.py,
which points TFX's entrypoint at them). An ``s3://`` input directory or serving root is read by the
pods themselves (components/object_store.py): every executor gets the store's endpoint and region
as plain environment variables and its keys from a Kubernetes secret (KFP's own
``mlpipeline-minio-artifact`` by default) through the PlatformSpec's ``secretAsEnv``, never in the
image or the YAML. Vertex AI has no such secrets and only ``gs://``, so it refuses S3.

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

from components import object_store
from pipeline import kfp_pod
from pipeline.beam import check_beam_args
from pipeline.config import PipelineConfig
from pipeline.pipeline import create_pipeline

TARGETS = ("kfp", "vertex")
# Pipeline roots each target's backend can stage artifacts in (launcher_v2.go: LocalPathForURI).
ROOT_SCHEMES = {"kfp": ("gs://", "s3://", "minio://"), "vertex": ("gs://",)}
TFX_COMMAND = ["python", "-m", kfp_pod.TFX_ENTRYPOINT]
POD_COMMAND = ["python", "-m", kfp_pod.__name__]
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
    # The S3-compatible store of an s3:// input dir or serving root (components/object_store.py):
    # KFP's own and its secret by default. AWS S3: s3_endpoint "".
    s3_endpoint: str = object_store.KFP_ENDPOINT
    s3_region: str = object_store.DEFAULT_REGION
    s3_secret: str = object_store.KFP_SECRET
    s3_secret_keys: tuple[str, str] = object_store.KFP_SECRET_KEYS  # access key, secret key

    def __post_init__(self) -> None:
        if not isinstance(self.gpus, int) or self.gpus < 0:
            raise ValueError(f"--gpus must be 0 (train on CPU) or more, got {self.gpus}")
        for name in ("trainer_cpu", "data_stage_cpu", "light_cpu"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ClusterConfig.{name} must be positive, got {getattr(self, name)}")

    def s3_env(self) -> list[dict]:
        """The container's plain environment: where the store is (boto3 reads these)."""
        env = [{"name": "AWS_REGION", "value": self.s3_region}]
        if self.s3_endpoint:
            env.insert(0, {"name": "AWS_ENDPOINT_URL", "value": self.s3_endpoint})
        return env

    def s3_secret_as_env(self) -> dict:
        """The PlatformSpec's secretAsEnv (kfp-kubernetes): the store's keys, from the cluster."""
        access, secret = self.s3_secret_keys
        return {
            "secretName": self.s3_secret,
            "keyToEnv": [
                {"secretKey": access, "envVar": "AWS_ACCESS_KEY_ID"},
                {"secretKey": secret, "envVar": "AWS_SECRET_ACCESS_KEY"},
            ],
        }

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


def reads_s3(config: PipelineConfig) -> bool:
    """Whether pods read or write S3 themselves (not only through the launcher's staging)."""
    return any(path.startswith("s3://") for path in (config.input_base, config.serving_root))


def check_stores(config: PipelineConfig, target: str) -> None:
    """Refuses, at compile time, the stores a target cannot use (one line each)."""
    if not config.pipeline_root.startswith(ROOT_SCHEMES[target]):
        raise ValueError(
            f"--pipeline-root for {target} must start with {' or '.join(ROOT_SCHEMES[target])} "
            f"(a store its backend stages artifacts in), got {config.pipeline_root}"
        )
    if target == "vertex" and reads_s3(config):
        raise ValueError("vertex: the input dir and serving root must be gs:// (Vertex AI pods get no S3 keys)")
    for flag, path in (("--input-dir", config.input_base), ("--serving-root", config.serving_root)):
        if not path.startswith(("gs://", "s3://")):
            raise ValueError(f"{flag} must be gs:// or s3:// (what a pod can reach), got {path}")


def finish_spec(pipeline_spec: dict, cluster: ClusterConfig, target: str, s3: bool = False) -> None:
    """Resources for every container executor, our pod command (pipeline/kfp_pod.py), the store's
    environment where pods read S3, and ServedModel kept out of the cache."""
    tasks = pipeline_spec["root"]["dag"]["tasks"]
    for task in tasks:
        if task not in RESOURCE_CLASSES:
            raise ValueError(f"component {task!r} has no Kubeflow resources: add it to RESOURCE_CLASSES ({__file__})")
        _, executor = executor_of(pipeline_spec, task)
        container = executor["container"]
        container["resources"] = cluster.resources(RESOURCE_CLASSES[task], target)
        if container["command"] != TFX_COMMAND:
            raise ValueError(f"{task}: TFX compiled the command {container['command']}, expected {TFX_COMMAND}")
        container["command"] = POD_COMMAND
        if s3:
            container["env"] = cluster.s3_env()
    for task in UNCACHED_TASKS:
        tasks[task]["cachingOptions"] = {"enableCache": False}
    json_format.ParseDict(pipeline_spec, pipeline_spec_pb2.PipelineSpec())  # still a valid PipelineSpec


def platform_spec(pipeline_spec: dict, cluster: ClusterConfig, s3: bool = False) -> dict:
    """KFP's PlatformSpec document: the Trainer's executor on GPU nodes, and, where pods read
    S3, every executor given the store's keys from the cluster's secret."""
    executors = {}
    if s3:
        for task in pipeline_spec["root"]["dag"]["tasks"]:
            label, _ = executor_of(pipeline_spec, task)
            executors[label] = {"secretAsEnv": [cluster.s3_secret_as_env()]}
    label, _ = executor_of(pipeline_spec, "Trainer")
    placement = executors.setdefault(label, {})
    if cluster.gpus and cluster.node_selector:
        placement["nodeSelector"] = {"labels": dict(cluster.node_selector)}
    if cluster.gpus and cluster.tolerations:
        placement["tolerations"] = [dict(t) for t in cluster.tolerations]
    if not placement:
        del executors[label]
    return {"platforms": {"kubernetes": {"deploymentSpec": {"executors": executors}}}} if executors else {}


def compile_job(config: PipelineConfig, cluster: ClusterConfig, target: str = "kfp") -> dict:
    """The PipelineJob (``pipelineSpec`` + ``runtimeConfig``) for a target, finished."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    check_stores(config, target)
    check_beam_args(config.beam_args)
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
    # Always explicit (KFP's default is minio://mlpipeline/v2/artifacts, backend/src/v2/config/
    # env.go); the PipelineJob for Vertex carries it as gcsOutputDirectory.
    job["pipelineSpec"]["defaultPipelineRoot"] = config.pipeline_root
    finish_spec(job["pipelineSpec"], cluster, target, s3=reads_s3(config))
    return job


def compile_pipeline(config: PipelineConfig, cluster: ClusterConfig, output_path: str, target: str = "kfp") -> str:
    """Writes <output_path without extension>.yaml (kfp) or .json (vertex), or <name>.yaml into
    ``output_path`` if it is a directory; returns its path."""
    job = compile_job(config, cluster, target)
    if os.path.isdir(output_path):
        output_path = os.path.join(output_path, config.pipeline_name)
    stem = os.path.splitext(os.path.abspath(output_path))[0]
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    if target == "vertex":
        with open(stem + ".json", "w") as f:
            json.dump(job, f, indent=2, sort_keys=True)
        return stem + ".json"
    documents = [job["pipelineSpec"]]
    platform = platform_spec(job["pipelineSpec"], cluster, s3=reads_s3(config))
    if platform:
        documents.append(platform)
    with open(stem + ".yaml", "w") as f:
        f.write(f"# vae-mnist for Kubeflow Pipelines ({__name__}); pipeline root {config.pipeline_root}\n")
        yaml.safe_dump_all(documents, f, sort_keys=True)
    return stem + ".yaml"
