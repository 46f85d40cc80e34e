"""Kubeflow, checked at compile time: the spec holds nothing open-source KFP refuses, every pod
gets its resources, the Trainer its GPUs and GPU nodes (checked with KFP's own Kubernetes platform
proto), the image can import every module the spec runs; the serving manifests parse.
tests/test_kubeflow_run.py executes the compiled spec."""

import ast
import dataclasses
import importlib.metadata
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # the fallback stack's Python 3.10 has no tomllib; tomli (pytest's own) is the same parser
    import tomli as tomllib
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx.orchestration.kubeflow.v2 import compiler_utils

from components import object_store, serving_layout
from pipeline import beam, cli, kfp_pod
from pipeline import kubeflow_runner as runner
from pipeline.config import PipelineConfig
from pipeline.kubeflow_runner import ClusterConfig, compile_pipeline, executor_of
from pipeline.pipeline import create_pipeline
from tests import k8s_schema
from tests.helpers import REPO

IMAGE, GPU_IMAGE = "registry.example/vae-mnist:0.1.0", "registry.example/vae-mnist:0.1.0-gpu"
ROOT = "gs://vae-bucket/pipeline_root"
BEAM_COMPONENTS = ("IdxExampleGen", "StatisticsGen", "Transform", "Evaluator")
OUR_PACKAGES = ("components", "model", "pipeline", "schema")


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
    yaml_path = compile_pipeline(config, cluster, str(out / "vae-mnist.yaml"))
    with open(yaml_path) as f:
        documents = list(yaml.safe_load_all(f))
    spec = json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec())
    return config, documents, spec, yaml_path


def test_every_local_component_is_a_task_with_the_same_dependencies(compiled):
    config, documents, spec, _ = compiled
    local = create_pipeline(config)
    assert set(spec.root.dag.tasks) == {c.id for c in local.components}
    for component in local.components:
        assert set(spec.root.dag.tasks[component.id].dependent_tasks) == {u.id for u in component.upstream_nodes}
    # No training on gated data; the span is scored whatever the gates decide.
    assert {"DataGate", "DriftGate"} <= set(spec.root.dag.tasks["Transform"].dependent_tasks)
    assert set(spec.root.dag.tasks["SpanScores"].dependent_tasks) == {"IdxExampleGen", "ServedModel"}
    assert "ServedModel" in spec.root.dag.tasks["Evaluator"].dependent_tasks


def test_nothing_open_source_kfp_refuses(compiled):
    _, documents, spec, _ = compiled
    assert spec.schema_version == "2.1.0"
    executors = documents[0]["deploymentSpec"]["executors"]
    # backend/src/v2/compiler/argocompiler/dag.go refuses resolver and customJob executors.
    assert {kind for executor in executors.values() for kind in executor} == {"container"}
    # backend/src/v2/driver/resolve.go accepts runtimeValue.constant only.
    text = json.dumps(documents[0])
    assert "constantValue" not in text
    for task in documents[0]["root"]["dag"]["tasks"].values():
        for parameter in task.get("inputs", {}).get("parameters", {}).values():
            assert set(parameter) == {"runtimeValue"} and set(parameter["runtimeValue"]) == {"constant"}
    # Without a root, KFP would write to its MinIO store, which TensorFlow cannot address.
    assert spec.default_pipeline_root == ROOT


def test_every_pod_has_cpu_and_memory_and_the_trainer_its_gpus(compiled):
    _, documents, spec, _ = compiled
    for task in spec.root.dag.tasks:
        resources = executor_of(documents[0], task)[1]["container"]["resources"]
        assert resources["cpuLimit"] > 0 and resources["memoryLimit"] > 0, task
        assert ("accelerator" in resources) == (task == "Trainer"), task
    trainer = executor_of(documents[0], "Trainer")[1]["container"]
    assert trainer["image"] == GPU_IMAGE
    assert trainer["resources"] == {
        "accelerator": {"type": "nvidia.com/gpu", "count": "2"},
        "cpuLimit": 8.0,
        "memoryLimit": 32.0,
    }
    # IdxExampleGen too, which TFX's step builder compiles on a path that drops platform_config.
    assert executor_of(documents[0], "IdxExampleGen")[1]["container"]["resources"]["cpuLimit"] == 4.0
    for task in ("IdxExampleGen", "DataGate", "Pusher"):
        assert executor_of(documents[0], task)[1]["container"]["image"] == IMAGE


def test_a_component_without_resources_fails_the_compile(compiled, monkeypatch):
    config = compiled[0]
    monkeypatch.delitem(runner.RESOURCE_CLASSES, "ModelPictures")
    with pytest.raises(ValueError, match="component 'ModelPictures' has no Kubeflow resources"):
        runner.compile_job(config, ClusterConfig(image=IMAGE))


def test_a_spanned_pipeline_ingests_afresh_on_every_run(compiled, tmp_path):
    """KFP's cache key is the task's inputs; with spans they stay the same while a new span
    arrives, so IdxExampleGen gets the run's id (and an unspanned input keeps its cache)."""
    config, documents, _, _ = compiled
    assert "run_nonce" not in documents[0]["root"]["dag"]["tasks"]["IdxExampleGen"]["inputs"]["parameters"]
    spanned = dataclasses.replace(config, spans=True, warm_start=True, pipeline_root=ROOT)
    job = runner.compile_job(spanned, ClusterConfig(image=IMAGE))
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    nonce = tasks["IdxExampleGen"]["inputs"]["parameters"]["run_nonce"]["runtimeValue"]["constant"]
    assert nonce == "{{$.pipeline_job_uuid}}"
    assert "ServedModel" in tasks["Trainer"]["dependentTasks"]  # the warm start's weights


def test_the_served_model_lookup_is_never_cached(compiled):
    _, documents, _, _ = compiled
    task = documents[0]["root"]["dag"]["tasks"]["ServedModel"]
    assert task["cachingOptions"] == {"enableCache": False}
    # A per-run nonce the driver fills in, in case a run forces caching on for every task.
    assert task["inputs"]["parameters"]["lookup_nonce"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert (
        task["inputs"]["parameters"]["serving_model_dir"]["runtimeValue"]["constant"]
        == "gs://vae-bucket/serving/vae-mnist"
    )


def test_trainer_is_placed_on_gpu_nodes_in_kfps_own_platform_proto(compiled):
    _, documents, _, _ = compiled
    assert len(documents) == 2
    platform = json_format.ParseDict(documents[1], pipeline_spec_pb2.PlatformSpec())
    [(label, config)] = json_format.MessageToDict(platform.platforms["kubernetes"].deployment_spec)["executors"].items()
    assert label == executor_of(documents[0], "Trainer")[0]
    # KFP's driver reads each executor's entry as a KubernetesExecutorConfig: unknown fields fail here.
    placement = json_format.ParseDict(config, kubernetes_executor_config_pb2.KubernetesExecutorConfig())
    assert dict(placement.node_selector.labels) == {"nvidia.com/gpu.present": "true"}
    [toleration] = placement.tolerations
    assert (toleration.key, toleration.operator, toleration.effect) == ("nvidia.com/gpu", "Exists", "NoSchedule")


def test_pipeline_root_and_beam_arguments(compiled):
    _, documents, _, _ = compiled
    for task in BEAM_COMPONENTS:
        args = executor_of(documents[0], task)[1]["container"]["args"]
        assert "--runner=PortableRunner" in args and "--job_endpoint=flink-jobserver:8099" in args, task


def test_the_pinned_kfp_sdk_loads_the_yaml(compiled):
    from kfp import components

    loaded = components.load_component_from_file(compiled[3])
    assert loaded.name == "vae-mnist"
    assert set(loaded.pipeline_spec.root.dag.tasks) == set(compiled[2].root.dag.tasks)


def test_vertex_target_names_its_accelerator_and_root(tmp_path):
    argv = ["kubeflow", "compile", "--target", "vertex", "--image", IMAGE, "--pipeline-root", ROOT]
    argv += ["--input-dir", "gs://b/mnist", "--serving-root", "gs://b/serving", "--output", str(tmp_path / "p.json")]
    assert cli.main(argv) == 0
    with open(tmp_path / "p.json") as f:
        job = json.load(f)
    assert job["runtimeConfig"]["gcsOutputDirectory"] == ROOT
    trainer = executor_of(job["pipelineSpec"], "Trainer")[1]["container"]["resources"]
    assert trainer["accelerator"] == {"type": "NVIDIA_TESLA_T4", "count": "1"}


def test_cli_compiles_with_a_dataflow_profile(tmp_path):
    argv = ["kubeflow", "compile", "--image", IMAGE, "--pipeline-root", ROOT, "--input-dir", "gs://b/mnist"]
    argv += ["--serving-root", "gs://b/serving", "--gpus", "0", "--output", str(tmp_path / "p.yaml")]
    argv += ["--beam-profile", "dataflow", "--beam-option", "project=proj", "--beam-option", "region=europe-west4"]
    argv += ["--beam-option", "temp_location=gs://b/tmp"]
    assert cli.main(argv) == 0
    with open(tmp_path / "p.yaml") as f:
        documents = list(yaml.safe_load_all(f))
    assert len(documents) == 1  # no GPU, no GPU placement
    args = executor_of(documents[0], "StatisticsGen")[1]["container"]["args"]
    assert "--runner=DataflowRunner" in args and f"--sdk_container_image={IMAGE}" in args
    assert "accelerator" not in executor_of(documents[0], "Trainer")[1]["container"]["resources"]


def test_beam_profiles_say_what_they_miss():
    with pytest.raises(ValueError, match="'dataflow' needs project, region, temp_location, image"):
        beam.beam_args("dataflow")
    with pytest.raises(ValueError, match="unknown Beam profile 'flnk'"):
        beam.beam_args("flnk")


def modules_a_pod_imports(pipeline_spec: dict) -> set[str]:
    """Every module of ours a pod imports, read from the compiled spec: executor classes, the
    Trainer's run_fn, Transform's preprocessing_fn, TFMA metric modules, custom artifact types."""
    modules = set()
    for executor in pipeline_spec["deploymentSpec"]["executors"].values():
        command = executor["container"]["command"]
        if command[:2] == ["python", "-m"]:
            modules.add(command[2])  # the pod's own command (pipeline/kfp_pod.py)
        args = executor["container"]["args"]
        modules.add(args[args.index("--executor_class_path") + 1].rpartition(".")[0])
    for task in pipeline_spec["root"]["dag"]["tasks"].values():
        for name, parameter in task.get("inputs", {}).get("parameters", {}).items():
            value = parameter["runtimeValue"]["constant"]
            if name in ("run_fn", "preprocessing_fn"):
                modules.add(value.rpartition(".")[0])
            if name == "eval_config":
                for spec in json.loads(value).get("metrics_specs", []):
                    modules.update(m["module"] for m in spec.get("metrics", []) if m.get("module"))
    for component in pipeline_spec["components"].values():
        for kind in ("inputDefinitions", "outputDefinitions"):
            for artifact in component.get(kind, {}).get("artifacts", {}).values():
                title = yaml.safe_load(artifact["artifactType"]["instanceSchema"])["title"]
                if title not in compiler_utils.TITLE_TO_CLASS_PATH:
                    modules.add(title.rpartition(".")[0])
    return {m for m in modules if m.split(".")[0] in OUR_PACKAGES}


def third_party_imports(modules: set[str]) -> set[str]:
    """Top-level third-party modules that ``modules`` import, following our own imports."""
    seen, found, todo = set(), set(), list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = os.path.join(REPO, *module.split("."))
        path = os.path.join(path, "__init__.py") if os.path.isdir(path) else path + ".py"
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for name in names:
                top = name.split(".")[0]
                if top in OUR_PACKAGES:
                    candidate = os.path.join(REPO, *name.split("."))
                    if os.path.isdir(candidate) or os.path.exists(candidate + ".py"):
                        todo.append(name)
                elif top not in sys.stdlib_module_names and top != "__future__":
                    found.add(top)
    return found


def _requirement_closure(distribution: str) -> set[str]:
    """A distribution and everything it requires, transitively, without extras."""
    closure, todo = set(), [distribution]
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in closure:
            continue
        closure.add(name)
        try:
            requirements = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0] for r in requirements if "extra ==" not in r]
    return closure


def _import_owners() -> dict[str, list[str]]:
    """Top-level import name -> the distributions that install it. Python 3.10's
    packages_distributions reads only top_level.txt, which wheels built with meson (scikit-learn,
    NumPy 2) no longer ship; the files a distribution installed say it too (Python 3.11+ infers so)."""
    owners = {name: list(dists) for name, dists in importlib.metadata.packages_distributions().items()}
    for dist in importlib.metadata.distributions():
        for path in dist.files or []:
            top = path.parts[0] if len(path.parts) > 1 else path.name.removesuffix(".py")
            if top.isidentifier() and dist.metadata["Name"] not in owners.setdefault(top, []):
                owners[top].append(dist.metadata["Name"])
    return owners


def test_the_images_import_check_covers_every_module_the_spec_runs(compiled, tmp_path):
    _, documents, _, _ = compiled
    with open(os.path.join(REPO, "kubeflow", "Dockerfile")) as f:
        dockerfile = f.read()
    imports = re.search(r'python -c "import ([^";]+)', dockerfile).group(1)
    checked = set(imports.replace(" ", "").split(","))
    needed = modules_a_pod_imports(documents[0])
    assert {"components", "components.idx_example_gen", "model.trainer", "model.features", "model.metrics"} <= needed
    assert "pipeline.kfp_pod" in needed
    assert needed <= checked, f"kubeflow/Dockerfile's import check misses {sorted(needed - checked)}"
    # Third-party packages: the base image has TFX and what it requires; the rest must be installed.
    installed_by_dockerfile = set().union(
        *map(
            _requirement_closure,
            re.search(r"pip install --no-cache-dir ([a-z0-9 _-]+)\s*\\", dockerfile).group(1).split(),
        )
    )
    in_base_image = _requirement_closure("tfx")
    distributions = _import_owners()
    for top in third_party_imports(needed):
        owners = {re.sub(r"[-_.]+", "-", d).lower() for d in distributions.get(top, [top])}
        assert owners & (in_base_image | installed_by_dockerfile), (
            f"{top} ({owners}) is neither in the TFX image nor installed"
        )
    # And the image's own check, run as the build runs it (outside the source tree); what a pod
    # imports leaves out Google Cloud's aiplatform client, 7.7 s a pod (components/tfx_dsl.py).
    light = "import sys; assert 'google.cloud.aiplatform' not in sys.modules, 'a pod imports aiplatform'"
    for code in re.findall(r'python -c "([^"]+)"', dockerfile):
        check = subprocess.run([sys.executable, "-c", f"{code}\n{light}"], cwd=tmp_path, capture_output=True, text=True)
        assert check.returncode == 0, f"{code}: {check.stderr[-2000:]}"


def test_dockerfile_builds_on_tfx_and_installs_every_package():
    with open(os.path.join(REPO, "kubeflow", "Dockerfile")) as f:
        lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    # The default base is the current stack's TFX, the one its lock pins.
    with open(os.path.join(REPO, "locks", "current.txt")) as f:
        [tfx_pin] = [line.strip() for line in f if line.startswith("tfx==")]
    assert f"ARG BASE_IMAGE=gcr.io/tfx-oss-public/tfx:{tfx_pin.split('==')[1]}" in lines
    assert "FROM ${BASE_IMAGE}" in lines
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        packages = tomllib.load(f)["tool"]["setuptools"]["packages"]
    copied = {line.split()[1].rstrip("/") for line in lines if line.startswith("COPY")}
    assert set(packages) <= copied
    assert "pip install --no-cache-dir --no-deps ." in " ".join(lines)
    # tensorboard (TF >= 2.20 no longer brings it) in the release of the image's TF: the version
    # expression, run here, names this environment's TF release.
    [requirement] = re.findall(r'"(tensorboard~=.*)"', " ".join(lines))
    python_dir = os.path.dirname(sys.executable)
    shell = subprocess.run(
        ["sh", "-c", f'echo "{requirement}"'],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PATH": python_dir + os.pathsep + os.environ["PATH"]},
    )
    release = ".".join(importlib.metadata.version("tensorflow").split(".")[:2])
    assert shell.stdout.strip() == f"tensorboard~={release}.0"


def test_serving_manifests():
    with open(os.path.join(REPO, "kubeflow", "serving", "tf-serving.yaml")) as f:
        deployment, service = yaml.safe_load_all(f)
    assert deployment["kind"] == "Deployment" and service["kind"] == "Service"
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"] == pod["metadata"]["labels"] == service["spec"]["selector"]
    [container] = pod["spec"]["containers"]
    assert container["image"].startswith("tensorflow/serving:")
    # A pin (models.config's model_version_policy) holds only where TF Serving reads models.config.
    assert "--model_config_file=gs://YOUR_BUCKET/serving/models.config" in container["args"]
    assert "--model_config_file_poll_wait_seconds=30" in container["args"]
    assert not any(a.startswith(("--model_base_path=", "--model_name=")) for a in container["args"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/v1/models/vae-mnist", "port": 8501}
    assert {p["port"] for p in service["spec"]["ports"]} == {8500, 8501}
    with open(os.path.join(REPO, "kubeflow", "serving", "gpu-patch.yaml")) as f:
        patch = yaml.safe_load(f)
    [gpu_container] = patch["spec"]["template"]["spec"]["containers"]
    assert gpu_container["name"] == container["name"] and gpu_container["resources"]["limits"] == {"nvidia.com/gpu": 1}


def test_the_serving_manifests_pass_kubernetes_schemas():
    """What `kubectl apply --validate=strict` checks: every field known, typed, and required ones
    present (tests/k8s_schema.py); the GPU patch as a partial Deployment."""
    serving = os.path.join(REPO, "kubeflow", "serving")
    for name in ("tf-serving.yaml", "tf-serving-s3.yaml"):
        with open(os.path.join(serving, name)) as f:
            for document in yaml.safe_load_all(f):
                k8s_schema.check_core(document)
    with open(os.path.join(serving, "gpu-patch.yaml")) as f:
        k8s_schema.check_core({"apiVersion": "apps/v1", "kind": "Deployment", **yaml.safe_load(f)}, partial=True)
    with open(os.path.join(serving, "tf-serving.yaml")) as f:
        deployment, _ = yaml.safe_load_all(f)
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGets"] = {}
    with pytest.raises(ValueError, match=r"containers\[0\]\.readinessProbe\.httpGets: unknown field"):
        k8s_schema.check_core(deployment)
    del deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGets"]
    del deployment["spec"]["selector"]
    with pytest.raises(ValueError, match="selector"):
        k8s_schema.check_core(deployment)


def test_the_s3_serving_manifest_mirrors_the_bucket_for_tf_serving():
    """TF Serving has no s3:// (tensorflow/serving#1963): it reads an emptyDir our mirror fills."""
    with open(os.path.join(REPO, "kubeflow", "serving", "tf-serving-s3.yaml")) as f:
        deployment, service = yaml.safe_load_all(f)
    assert deployment["kind"] == "Deployment" and service["kind"] == "Service"
    pod = deployment["spec"]["template"]["spec"]
    [init] = pod["initContainers"]
    mirror, serving = pod["containers"]
    parser = cli.build_parser()
    for container, every in ((init, None), (mirror, 30.0)):
        assert container["command"][0] == "vae-mnist"
        args = parser.parse_args(container["command"][1:])  # a command our CLI takes
        assert args.func is cli._cmd_serving_mirror
        assert (args.serving_root, args.to, args.every) == ("s3://YOUR_BUCKET/serving", "/models", every)
        env = {e["name"]: e.get("value") or e["valueFrom"]["secretKeyRef"] for e in container["env"]}
        assert env["AWS_ENDPOINT_URL"] == object_store.KFP_ENDPOINT
        secret_keys = (env["AWS_ACCESS_KEY_ID"]["key"], env["AWS_SECRET_ACCESS_KEY"]["key"])
        assert (
            env["AWS_ACCESS_KEY_ID"]["name"] == object_store.KFP_SECRET and secret_keys == object_store.KFP_SECRET_KEYS
        )
        assert container["volumeMounts"] == [{"name": "models", "mountPath": serving_layout.DOCKER_MOUNT}]
    assert f"--model_config_file={serving_layout.DOCKER_MOUNT}/{serving_layout.MODELS_CONFIG}" in serving["args"]
    assert serving["volumeMounts"][0]["readOnly"] is True
    assert pod["volumes"] == [{"name": "models", "emptyDir": {}}]


def test_pods_get_the_s3_store_from_the_cluster_not_the_yaml(tmp_path):
    config = PipelineConfig(
        pipeline_root="s3://mlpipeline/v2/artifacts", input_dir="s3://data/mnist", serving_root="s3://models/serving"
    )
    cluster = ClusterConfig(image=IMAGE, s3_secret="my-store", s3_secret_keys=("id", "key"))
    with open(compile_pipeline(config, cluster, str(tmp_path / "p.yaml"))) as f:
        spec, platform_document = yaml.safe_load_all(f)
    assert spec["defaultPipelineRoot"] == "s3://mlpipeline/v2/artifacts"
    platform = json_format.ParseDict(platform_document, pipeline_spec_pb2.PlatformSpec())
    executors = json_format.MessageToDict(platform.platforms["kubernetes"].deployment_spec)["executors"]
    assert len(executors) == len(spec["root"]["dag"]["tasks"])  # every pod
    for label, executor in spec["deploymentSpec"]["executors"].items():
        container = executor["container"]
        assert container["command"] == ["python", "-m", "pipeline.kfp_pod"]  # artifacts staged locally
        assert container["env"] == [
            {"name": "AWS_ENDPOINT_URL", "value": object_store.KFP_ENDPOINT},
            {"name": "AWS_REGION", "value": object_store.DEFAULT_REGION},
        ]
        config_ = json_format.ParseDict(executors[label], kubernetes_executor_config_pb2.KubernetesExecutorConfig())
        [secret] = config_.secret_as_env
        assert secret.secret_name == "my-store"
        assert {(m.secret_key, m.env_var) for m in secret.key_to_env} == {
            ("id", "AWS_ACCESS_KEY_ID"),
            ("key", "AWS_SECRET_ACCESS_KEY"),
        }


@pytest.mark.parametrize(
    ("target", "changes", "message"),
    [
        ("kfp", {"pipeline_root": "/local/root"}, "--pipeline-root for kfp must start with gs:// or s3:// or minio://"),
        ("vertex", {"pipeline_root": "s3://b/root"}, "--pipeline-root for vertex must start with gs://"),
        ("vertex", {"serving_root": "s3://b/serving"}, "vertex: the input dir and serving root must be gs://"),
    ],
)
def test_stores_a_target_cannot_use_are_refused_at_compile_time(target, changes, message):
    settings = {"pipeline_root": ROOT, "input_dir": "gs://vae-bucket/mnist", "serving_root": "gs://vae-bucket/serving"}
    with pytest.raises(ValueError, match=re.escape(message)):
        runner.compile_job(PipelineConfig(**(settings | changes)), ClusterConfig(image=IMAGE), target)


def test_a_mixed_compile_works_where_pods_can_reach_both(tmp_path):
    """An s3:// root (staged by the launcher) with a gs:// serving root (TensorFlow's own GCS)."""
    config = PipelineConfig(pipeline_root="s3://root", input_dir="gs://d/mnist", serving_root="gs://m/serving")
    job = runner.compile_job(config, ClusterConfig(image=IMAGE))
    assert all("env" not in e["container"] for e in job["pipelineSpec"]["deploymentSpec"]["executors"].values())


def test_the_pod_command_maps_staged_uris_as_kfps_launcher_does(tmp_path):
    """launcher_v2.go LocalPathForURI: s3:// -> /s3/..., minio:// -> /minio/...; gs:// and local
    paths are used as they are (TensorFlow writes gs:// itself)."""
    assert kfp_pod.local_path("s3://b/root/run/Trainer/model") == "/s3/b/root/run/Trainer/model"
    assert kfp_pod.local_path("minio://mlpipeline/v2/artifacts/x", "/pod") == "/pod/minio/mlpipeline/v2/artifacts/x"
    assert kfp_pod.local_path("gs://b/x") is None and kfp_pod.local_path("/local/x") is None
    executor_input = {
        "inputs": {"artifacts": {"examples": {"artifacts": [{"uri": "s3://b/r/1/IdxExampleGen/examples"}]}}},
        "outputs": {
            "artifacts": {
                "model": {"artifacts": [{"uri": "minio://b/r/1/Trainer/model"}]},
                "model_run": {"artifacts": [{"uri": "gs://b/r/1/Trainer/model_run"}]},
            },
            "outputFile": str(tmp_path / "output_metadata.json"),
        },
    }
    originals = kfp_pod.stage_uris(executor_input, "/pod")
    assert (
        executor_input["inputs"]["artifacts"]["examples"]["artifacts"][0]["uri"]
        == "/pod/s3/b/r/1/IdxExampleGen/examples"
    )
    assert executor_input["outputs"]["artifacts"]["model_run"]["artifacts"][0]["uri"] == "gs://b/r/1/Trainer/model_run"
    # What TFX's entrypoint writes back: the local paths it was given; the launcher gets the URIs.
    written = {"artifacts": {"model": {"artifacts": [{"uri": "/pod/minio/b/r/1/Trainer/model", "name": "7"}]}}}
    (tmp_path / "output_metadata.json").write_text(json.dumps(written))
    kfp_pod.restore_uris(str(tmp_path / "output_metadata.json"), originals)
    restored = json.loads((tmp_path / "output_metadata.json").read_text())
    assert restored["artifacts"]["model"]["artifacts"][0] == {"uri": "minio://b/r/1/Trainer/model", "name": "7"}
