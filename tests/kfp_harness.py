"""Runs a compiled PipelineSpec the way open-source Kubeflow Pipelines' backend does, for tests.

Test infrastructure, not a runner we ship. Each container task runs its own ``command`` + ``args``
from the spec, in a process of this environment (a fresh one, or one forked from a pre-imported
Python: tests/pod_forker.py): TFX's Kubeflow entrypoint and our executors, the code a pod runs.
What KFP's backend does around that is done here as its source does it, limited to what our spec
uses; anything else the spec might hold fails loudly instead of being guessed at. The rules, with
the kubeflow/pipelines file each comes from:

- ``backend/src/v2/compiler/argocompiler/dag.go``: only container and importer executors compile;
  ``resolver`` ("resolver executors not implemented") and ``customJob`` ("Google Cloud only")
  are refused.
- ``backend/src/v2/driver/resolve.go``: a parameter's ``runtimeValue`` must be ``constant``
  ("param runtime value spec of type ... not implemented"); a constant that is exactly
  ``{{$.pipeline_job_uuid}}`` (and its siblings) becomes the run's id. An input artifact is the
  producer task's output artifact as ML Metadata returns it.
- ``backend/src/v2/driver/driver.go`` (provisionOutputs): each output artifact gets the URI
  ``<pipeline root>/<run id>/<task>/<output>``, the type and metadata of the component's output
  definition, and the executor writes its ExecutorOutput to ``outputFile``.
- ``backend/src/v2/component/launcher_v2.go``: ``{{$}}`` is the ExecutorInput as JSON
  (getPlaceholders); a missing output file is an empty ExecutorOutput (getExecutorOutputFile);
  only the first artifact of each declared output is kept, its URI and metadata merged over the
  provisioned one (uploadOutputArtifacts, mergeRuntimeArtifacts); its type is recorded as the
  schema string (getArtifactSchema).
- ``backend/src/v2/metadata/converter.go``: metadata goes through ML Metadata and back, so numbers
  come back as doubles, booleans as 0/1, lists and structs wrapped as ``{"list": ...}`` /
  ``{"struct": ...}``, and null is refused; the artifact's ``name`` becomes its ML Metadata id.
- ``backend/src/v2/cacheutils/cache.go`` (GenerateCacheKey): with ``cachingOptions.enableCache``
  a task whose input artifact names, parameter values, output specs, image, command and args
  match an earlier successful execution reuses its output artifacts instead of running.
- Nothing in the open-source backend reads ``lifecycle.preCacheCheck`` (the FileBasedExampleGen
  driver TFX adds for Vertex), so it is ignored here too.
- A failed task fails the run; tasks downstream of it do not run.

- ``backend/src/v2/component/launcher_v2.go`` and ``backend/src/v2/objectstore/object_store.go``:
  the object store. Before the command runs, every input artifact with an ``s3://`` or
  ``minio://`` URI is downloaded to its local path (downloadArtifacts, DownloadBlob: every object
  under the key, a zero-byte "directory marker" object included, as a file) and each output
  artifact's parent directory is made (prepareOutputFolders); afterwards each output artifact,
  with the URI its ExecutorOutput gives, is uploaded from its local path (uploadOutputArtifacts,
  UploadBlob: one object per file, empty directories lost; a missing path is skipped). The local
  path is ``LocalPathForURI`` (``/s3/<bucket>/<key>``) under a root of the pod's own, which the
  pod learns from ``VAE_MNIST_KFP_LOCAL_ROOT`` (pipeline/kfp_pod.py).

Not emulated: ``gs://``, for which the launcher also downloads inputs (to ``/gcs/...``) but
TFX's executors write through TensorFlow's GCS file system themselves, so the launcher's upload
from the empty ``/gcs/...`` path is skipped. Local-path URIs are used as they are (nothing staged).
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import hashlib
import itertools
import json
import os
import time
import uuid

import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from components import object_store
from pipeline import kfp_pod
from tests import pod_forker

RUN_PLACEHOLDERS = ("{{$.pipeline_job_uuid}}", "{{$.pipeline_job_name}}", "{{$.pipeline_job_resource_name}}")


class RefusedByKfp(Exception):
    """The spec holds something open-source KFP's backend refuses; the message is KFP's."""


@dataclasses.dataclass
class Artifact:
    """An output artifact as ML Metadata holds it."""

    id: int
    uri: str
    schema: str
    metadata: dict

    def runtime(self) -> dict:
        """As the driver hands it to a consumer (a RuntimeArtifact)."""
        return {
            "name": str(self.id),
            "uri": self.uri,
            "type": {"instanceSchema": self.schema},
            "metadata": self.metadata,
        }


@dataclasses.dataclass
class TaskRun:
    state: str  # "ran", "cached", "failed" or "skipped"
    outputs: dict[str, Artifact]
    seconds: float = 0.0
    log: str = ""  # the pod's stdout and stderr

    def output(self, key: str) -> Artifact:
        return self.outputs[key]


def _mlmd_round_trip(value):
    """A metadata value after ML Metadata and back (converter.go)."""
    if value is None:
        raise RefusedByKfp("unknown/unsupported value type <nil> in artifact metadata")
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return {"list": value}
    if isinstance(value, dict):
        return {"struct": value}
    return value


def check_supported(spec: dict) -> None:
    """Raises RefusedByKfp for what KFP's compiler or driver refuses, NotImplementedError for
    what KFP runs but this harness does not (nothing our spec uses)."""
    executors = spec["deploymentSpec"]["executors"]
    for task_name, task in spec["root"]["dag"]["tasks"].items():
        component = spec["components"][task["componentRef"]["name"]]
        if "dag" in component:
            raise NotImplementedError(f"{task_name}: sub-DAGs are not implemented by this harness")
        executor = executors[component["executorLabel"]]
        if "resolver" in executor:
            raise RefusedByKfp(f"{task_name}: resolver executors not implemented")
        if "customJob" in executor:
            raise RefusedByKfp(f"{task_name}: custom job executors is Google Cloud only, it's not supported")
        if "container" not in executor:
            raise NotImplementedError(f"{task_name}: executor {list(executor)} is not implemented by this harness")
        if task.get("triggerPolicy", {}).get("condition"):
            raise NotImplementedError(f"{task_name}: trigger conditions are not implemented by this harness")
        for name, parameter in task.get("inputs", {}).get("parameters", {}).items():
            runtime = parameter.get("runtimeValue")
            if runtime is None:
                raise NotImplementedError(f"{task_name}.{name}: only runtimeValue parameters are implemented")
            if set(runtime) != {"constant"}:
                kind = next(iter(runtime), "<none>")
                raise RefusedByKfp(f"{task_name}.{name}: param runtime value spec of type {kind} not implemented")
        for name, artifact in task.get("inputs", {}).get("artifacts", {}).items():
            if set(artifact) != {"taskOutputArtifact"}:
                raise NotImplementedError(f"{task_name}.{name}: only taskOutputArtifact inputs are implemented")


class KfpHarness:
    """One "cluster": its ML Metadata (artifact ids) and its cache live as long as the object."""

    def __init__(
        self,
        workdir: str,
        env: dict[str, str],
        parallelism: int = 2,
        task_timeout: float = 900.0,
        pods: pod_forker.ForkedPods | None = None,
        secrets: dict[str, dict[str, str]] | None = None,
    ):
        self.workdir = workdir
        # A pod's environment is the image's (here: this one's, without AWS_* credentials), its
        # container's ``env`` and the secrets its PlatformSpec maps in (secretAsEnv).
        self.env = {name: value for name, value in env.items() if not name.startswith("AWS_")}
        self.secrets = secrets or {}  # the "cluster's" Kubernetes secrets: {name: {key: value}}
        self.pods = pods  # pods forked from a pre-imported Python; None: each a fresh process
        self.parallelism = parallelism  # KFP starts every task whose dependencies are done
        self.task_timeout = task_timeout
        self._ids = itertools.count(1)  # next() is atomic under the GIL
        self._cache: dict[str, dict[str, Artifact]] = {}

    def run(self, spec_path: str) -> dict[str, TaskRun]:
        with open(spec_path) as f:
            documents = list(yaml.safe_load_all(f))
        spec = documents[0]
        json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
        # The PlatformSpec: scheduling (not emulated) and the secrets each executor's pod gets.
        platform = documents[1] if len(documents) > 1 else {}
        self._executor_platform = platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {})
        check_supported(spec)
        root = spec["defaultPipelineRoot"]
        run_id = uuid.uuid4().hex
        tasks = spec["root"]["dag"]["tasks"]
        runs: dict[str, TaskRun] = {}
        running: dict[concurrent.futures.Future, str] = {}
        with concurrent.futures.ThreadPoolExecutor(self.parallelism) as pool:
            while len(runs) < len(tasks):
                settled = len(runs)
                for name in sorted(set(tasks) - set(runs) - set(running.values())):
                    needs = tasks[name].get("dependentTasks", [])
                    if not set(needs) <= set(runs):
                        continue
                    if any(runs[d].state in ("failed", "skipped") for d in needs):
                        runs[name] = TaskRun("skipped", {})
                    else:
                        running[pool.submit(self._run_task, spec, name, root, run_id, runs)] = name
                if not running:
                    if len(runs) == settled:  # nothing ran and nothing was skipped: waiting on itself
                        raise ValueError(f"the DAG has a cycle among {sorted(set(tasks) - set(runs))}")
                    continue  # skips settled more tasks: look again
                done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    runs[running.pop(future)] = future.result()
        return runs

    def _run_task(self, spec: dict, name: str, root: str, run_id: str, runs: dict[str, TaskRun]) -> TaskRun:
        task = spec["root"]["dag"]["tasks"][name]
        component = spec["components"][task["componentRef"]["name"]]
        container = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
        task_dir = os.path.join(self.workdir, run_id, name)

        parameters = {}
        for key, parameter in task.get("inputs", {}).get("parameters", {}).items():
            value = parameter["runtimeValue"]["constant"]
            parameters[key] = run_id if value in RUN_PLACEHOLDERS else value
        inputs = {
            key: {
                "artifacts": [
                    runs[a["taskOutputArtifact"]["producerTask"]]
                    .output(a["taskOutputArtifact"]["outputArtifactKey"])
                    .runtime()
                ]
            }
            for key, a in task.get("inputs", {}).get("artifacts", {}).items()
        }
        provisioned = {}
        for key, definition in component.get("outputDefinitions", {}).get("artifacts", {}).items():
            artifact = {"uri": f"{root.rstrip('/')}/{run_id}/{name}/{key}", "type": definition["artifactType"]}
            if definition.get("metadata"):
                artifact["metadata"] = definition["metadata"]
            provisioned[key] = artifact
        executor_input = {
            "inputs": {"parameterValues": parameters, "artifacts": inputs},
            "outputs": {
                "artifacts": {key: {"artifacts": [a]} for key, a in provisioned.items()},
                "outputFile": os.path.join(task_dir, "kfp_outputs", "output_metadata.json"),
            },
        }
        # What the Go driver marshals: the ExecutorInput proto, so validate it as one.
        executor_input = json_format.MessageToDict(
            json_format.ParseDict(executor_input, pipeline_spec_pb2.ExecutorInput())
        )

        command = list(container.get("command", [])) + list(container.get("args", []))
        cache_key = None
        if task.get("cachingOptions", {}).get("enableCache"):
            key_fields = {
                "inputArtifactNames": {k: [a["name"] for a in v["artifacts"]] for k, v in inputs.items()},
                "inputParameterValues": parameters,
                "outputArtifactsSpec": {
                    k: {"type": a["type"], "metadata": a.get("metadata")} for k, a in provisioned.items()
                },
                "containerSpec": {"image": container["image"], "cmdArgs": command},
            }
            cache_key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()
            if cache_key in self._cache:
                return TaskRun("cached", self._cache[cache_key])

        os.makedirs(task_dir)
        pod_root = os.path.join(task_dir, "pod-root")  # the pod's own "/" for staged artifacts
        _download_inputs(executor_input, pod_root)
        _prepare_output_folders(executor_input, pod_root)
        argv = [part.replace("{{$}}", json.dumps(executor_input)) for part in command]
        leftover = [part for part in argv if "{{$" in part]
        if leftover:
            raise NotImplementedError(f"{name}: placeholders this harness does not substitute: {leftover}")
        started = time.monotonic()
        log_path = os.path.join(task_dir, "pod.log")
        run_pod = self.pods.run if self.pods else pod_forker.run_fresh
        env = {**self.env, **{e["name"]: e["value"] for e in container.get("env", [])}}
        label = component["executorLabel"]
        for secret in self._executor_platform.get("executors", {}).get(label, {}).get("secretAsEnv", []):
            values = self.secrets.get(secret["secretName"])
            if values is None:  # Kubernetes: CreateContainerConfigError, the pod never starts
                return TaskRun("failed", {}, 0.0, f'secret "{secret["secretName"]}" not found')
            env.update({m["envVar"]: values[m["secretKey"]] for m in secret["keyToEnv"]})
        env[kfp_pod.LOCAL_ROOT_VARIABLE] = pod_root
        status = run_pod(argv, env, task_dir, log_path, self.task_timeout)
        seconds = time.monotonic() - started
        with open(log_path, errors="replace") as f:
            log = f.read()
        if status is None:
            return TaskRun("failed", {}, seconds, f"{log}\n{name} timed out after {self.task_timeout:.0f} s")
        if status != 0:
            return TaskRun("failed", {}, seconds, log)

        output_file = executor_input["outputs"]["outputFile"]
        executor_output = pipeline_spec_pb2.ExecutorOutput()
        if os.path.exists(output_file):
            with open(output_file) as f:
                json_format.Parse(f.read(), executor_output)
        returned = json_format.MessageToDict(executor_output).get("artifacts", {})
        outputs = {}
        for key, artifact in provisioned.items():
            merged = copy.deepcopy(artifact)
            written = returned.get(key, {}).get("artifacts", [])
            if written:
                merged["uri"] = written[0].get("uri") or merged["uri"]
                merged.setdefault("metadata", {}).update(written[0].get("metadata", {}))
            _upload_output(merged["uri"], pod_root)
            schema = merged["type"].get("instanceSchema") or f"title: {merged['type']['schemaTitle']}"
            metadata = {k: _mlmd_round_trip(v) for k, v in merged.get("metadata", {}).items()}
            outputs[key] = Artifact(next(self._ids), merged["uri"], schema, metadata)
        if cache_key:
            self._cache[cache_key] = outputs
        return TaskRun("ran", outputs, seconds, log)


def _staged(uri: str, pod_root: str) -> tuple[str, str, str] | None:
    """(local path, bucket, key) of an artifact the launcher stages; None for other URIs."""
    path = kfp_pod.local_path(uri, pod_root)
    if path is None:
        return None
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    return path, bucket, key


def _download_inputs(executor_input: dict, pod_root: str) -> None:
    """downloadArtifacts / DownloadBlob: every object under the artifact's key, to a local path."""
    store = object_store.client()
    for artifact_list in executor_input["inputs"].get("artifacts", {}).values():
        for artifact in artifact_list["artifacts"]:
            staged = _staged(artifact["uri"], pod_root)
            if staged is None:
                continue
            local_dir, bucket, blob_dir = staged
            for page in store.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=blob_dir):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if not (key == blob_dir.rstrip("/") or key.startswith(blob_dir.rstrip("/") + "/")):
                        continue  # isBlobKeyUnderPrefix
                    local = os.path.normpath(os.path.join(local_dir, os.path.relpath(key, blob_dir)))
                    os.makedirs(os.path.dirname(local), exist_ok=True)
                    store.download_file(bucket, key, local)  # a marker "dir/" becomes a file, as in Go


def _prepare_output_folders(executor_input: dict, pod_root: str) -> None:
    for artifact_list in executor_input["outputs"].get("artifacts", {}).values():
        for artifact in artifact_list["artifacts"]:
            staged = _staged(artifact["uri"], pod_root)
            if staged:
                os.makedirs(os.path.dirname(staged[0]), exist_ok=True)


def _upload_output(uri: str, pod_root: str) -> None:
    """UploadBlob: a file, or each file under a directory, one object each; missing: skipped."""
    staged = _staged(uri, pod_root)
    if staged is None or not os.path.exists(staged[0]):
        return
    local, bucket, key = staged
    store = object_store.client()
    if os.path.isfile(local):
        store.upload_file(local, bucket, key)
        return
    for directory, _, names in os.walk(local):
        for name in names:
            path = os.path.join(directory, name)
            store.upload_file(path, bucket, f"{key}/{os.path.relpath(path, local)}")
