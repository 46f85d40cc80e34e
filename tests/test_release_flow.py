"""A release as a team runs it, through `vae-mnist run --release canary`: run 1 pushes and
serves its version as stable; run 2 pushes a canary beside it; both load the way TF Serving
loads them and answer by label; promote; rollback; and after every step models.config parses as
TF Serving's ModelServerConfig, with a hand-written comment and another model's entry kept. Then
the model card each push wrote: every number in it is one the run recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import shutil

import numpy as np
import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2
from tfx.utils import path_utils

from components import model_card, releases, serving_layout
from components.evaluator import evaluation_config, slice_metrics
from components.idx_example_gen import INGESTED_KEY, serialize_examples
from components.pusher import RELEASE_KEY
from components.served_model import SERVED_VERSION_KEY
from model.export import read_exported_config
from model.training_record import read_training_record
from pipeline import cli, local_runner
from pipeline.config import PipelineConfig
from tests import k8s_schema
from tests.helpers import DATA_ROOT, REPO, read_idx_dataset, run_like_tf_serving, store_of
from tests.serving_harness import ModelServer, RestServer

HAND_WRITTEN = "# written by hand: TF Serving ignores comments, and so must every rewrite\n"
OTHER_MODEL = 'config {\n    name: "other"\n    base_path: "/models/other"\n    model_platform: "tensorflow"\n  }'


@dataclasses.dataclass
class Command:
    code: int
    out: str
    err: str


def vae_mnist(*argv: str) -> Command:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return Command(code, out.getvalue(), err.getvalue())


@dataclasses.dataclass
class Release:
    config: PipelineConfig
    first: int  # run 1's version
    canary: int  # run 2's
    direct: int  # run 3's, pushed with --release direct under the labels
    runs: dict[str, Command]
    components: dict  # run 2's ComponentRuns
    configs: list[str]  # models.config after each step, in order


def models_config(config: PipelineConfig) -> str:
    with open(os.path.join(config.serving_root, serving_layout.MODELS_CONFIG)) as f:
        return f.read()


@pytest.fixture(scope="module")
def release(tmp_path_factory, small_mnist) -> Release:
    output = str(tmp_path_factory.mktemp("release_flow"))
    config = PipelineConfig(input_dir=small_mnist, output_dir=output)
    flags = ["--input-dir", small_mnist, "--output-dir", output, "--preset", "smoke"]
    runs = {"first": vae_mnist("run", *flags, "--set", "epochs=3", "--release", "canary")}
    [first] = serving_layout.versions(config.serving_model_dir)
    text = models_config(config).replace("model_config_list {\n", "model_config_list {\n  " + OTHER_MODEL + "\n", 1)
    with open(os.path.join(config.serving_root, serving_layout.MODELS_CONFIG), "w") as f:
        f.write(HAND_WRITTEN + text)
    configs = [models_config(config)]
    runs["canary"] = vae_mnist("run", *flags, "--set", "epochs=6", "--release", "canary")
    components = local_runner.last_run(config)
    [canary] = set(serving_layout.versions(config.serving_model_dir)) - {first}
    configs.append(models_config(config))
    # A direct push while labels are set: like a push under a pin, it moves no label.
    runs["direct"] = vae_mnist("run", *flags, "--set", "epochs=5")
    [direct] = set(serving_layout.versions(config.serving_model_dir)) - {first, canary}
    configs.append(models_config(config))
    return Release(config, first, canary, direct, runs, components, configs)


def parsed(text: str):
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(text, config)
    return {entry.name: entry for entry in config.model_config_list.config}


def assert_tf_serving_reads(text: str, labels: dict[str, int], loaded: list[int]) -> None:
    """models.config as TF Serving parses it: our entry's labels and policy, the other model and
    the comment as they were."""
    entries = parsed(text)
    assert text.startswith(HAND_WRITTEN) and entries["other"].base_path == "/models/other"
    ours = entries["vae-mnist"]
    assert dict(ours.version_labels) == labels
    assert sorted(ours.model_version_policy.specific.versions) == loaded


def serving_command(release: Release, *argv: str) -> Command:
    return vae_mnist("serving", *argv, "--output-dir", release.config.output_dir)


def scores_by_label(release: Release, label: str, images: np.ndarray, target: list[str] | None = None) -> list[float]:
    """-ELBO of each image from `vae-mnist predict --label` (in-process unless ``target`` says
    --server or --grpc)."""
    request = os.path.join(release.config.output_dir, "request.json")
    with open(request, "w") as f:
        json.dump({"instances": [{"image": row.tolist()} for row in images]}, f)
    target = target or ["--model-dir", release.config.serving_model_dir]
    answer = vae_mnist("predict", *target, "--label", label, "--request", request, "--full")
    assert answer.code == 0, answer.err
    return [row["neg_elbo"] for row in json.loads(answer.out)["predictions"]]


def served_scores(version_dir: str, images: np.ndarray) -> np.ndarray:
    records = np.array(serialize_examples(images, np.zeros(len(images), np.int64)), dtype=object)
    return run_like_tf_serving(version_dir, "score_tf_example", {"examples": records})["neg_elbo"]


def test_a_canary_is_pushed_beside_the_stable_version_and_each_answers_by_its_label(release, small_mnist):
    assert release.runs["first"].code == 0 and release.runs["canary"].code == 0, release.runs["canary"].err
    # Run 1, the model's first release: stable at once (nothing to try it against).
    assert "labelled stable (the first release of this model)" in release.runs["first"].out
    assert_tf_serving_reads(release.configs[0], {"stable": release.first}, [release.first])
    canary_run = release.runs["canary"].out
    assert f"Pushed: {release.config.serving_model_dir}/{release.canary}" in canary_run
    assert f"labelled canary beside stable version {release.first}" in canary_run
    labelled = {"stable": release.first, "canary": release.canary}
    assert_tf_serving_reads(release.configs[1], labelled, [release.first, release.canary])
    # The pipeline's "served" (the next run's baseline, warm start, span scores) is stable.
    assert serving_layout.served_version(release.config.serving_model_dir) == release.first

    images = read_idx_dataset(small_mnist)["eval"][0][:4].reshape(4, -1)
    for label, version in (("stable", release.first), ("canary", release.canary)):
        version_dir = serving_layout.version_path(release.config.serving_model_dir, version)
        expected = served_scores(version_dir, images)  # loaded as TF Serving's C++ loader does
        np.testing.assert_allclose(scores_by_label(release, label, images), expected, rtol=1e-4)
    assert not np.allclose(scores_by_label(release, "stable", images), scores_by_label(release, "canary", images))
    # The README's command, as shown: one test image, its answer in a line.
    shown = vae_mnist(
        "predict",
        "--model-dir",
        release.config.serving_model_dir,
        "--label",
        "canary",
        "--count",
        "1",
        "--data-root",
        DATA_ROOT,
    )
    assert shown.code == 0 and len(shown.out.splitlines()) == 1 and '"anomaly_p_value": ' in shown.out
    unknown = vae_mnist(
        "predict", "--model-dir", release.config.serving_model_dir, "--label", "beta", "--data-root", DATA_ROOT
    )
    assert unknown.code == 2 and "Unrecognized servable version label: beta (labels: canary, stable)" in unknown.err

    listed = serving_command(release, "list").out.splitlines()
    assert any(line.startswith(str(release.first)) and line.endswith("SERVED [stable]") for line in listed)
    assert any(line.startswith(str(release.canary)) and line.endswith("[canary]") for line in listed)
    assert f"requests without a label get version {release.canary} (the newest loaded)" in listed[-1]


def test_a_direct_push_under_labels_is_kept_on_disk_and_moves_no_label(release):
    assert release.runs["direct"].code == 0, release.runs["direct"].err
    out = release.runs["direct"].out
    assert f"against the served model (version {release.first})" in out  # stable is the baseline
    assert f"Pushed: {release.config.serving_model_dir}/{release.direct}" in out
    assert f"release labels hold (canary {release.canary}, stable {release.first}): not loaded" in out
    assert release.configs[2] == release.configs[1]  # models.config untouched, byte for byte
    assert serving_layout.is_complete(release.config.serving_model_dir, release.direct)


def test_rest_and_grpc_clients_address_a_label_the_way_tf_servings_apis_do(release, small_mnist):
    """REST's /v1/models/<name>/labels/<label>:predict and gRPC's ModelSpec.version_label, against
    front ends that route them as TF Serving does (tests/serving_harness.py)."""
    model_dir = release.config.serving_model_dir
    images = read_idx_dataset(small_mnist)["eval"][0][4:7].reshape(3, -1)
    rest, grpc_server = RestServer(model_dir), ModelServer(model_dir)
    try:
        for label in ("stable", "canary"):
            in_process = scores_by_label(release, label, images)
            for target in (["--server", rest.url], ["--grpc", grpc_server.target]):
                np.testing.assert_allclose(scores_by_label(release, label, images, target), in_process, rtol=1e-5)
        unknown = vae_mnist(
            "predict", "--server", rest.url, "--label", "beta", "--count", "1", "--data-root", DATA_ROOT
        )
        assert unknown.code == 2 and "answered 400: Unrecognized servable version label: beta" in unknown.err
        bad = vae_mnist(
            "predict", "--grpc", grpc_server.target, "--label", "no/such", "--count", "1", "--data-root", DATA_ROOT
        )
        assert bad.code == 2 and "a version label is letters, digits and '_'" in bad.err
    finally:
        grpc_server.server.stop(None)
        rest.server.shutdown()


def test_promote_then_rollback_moves_stable_in_the_order_tf_serving_accepts(release):
    model_dir = release.config.serving_model_dir
    first, canary = release.first, release.canary
    promoted = serving_command(release, "promote", "--settle", "0")
    assert promoted.code == 0 and f"Promoted {model_dir}: labels: stable {canary};" in promoted.out
    assert_tf_serving_reads(models_config(release.config), {"stable": canary}, [canary])

    # Version `first` is not loaded any more: the rollback loads it, waits, then moves the label.
    before = len(releases.history(model_dir))
    rolled = serving_command(release, "rollback", "--settle", "1")
    assert rolled.code == 0, rolled.err
    assert (
        f"Loading version {first} first" in rolled.out
        and f"Rolled back {model_dir}: labels: stable {first};" in rolled.out
    )
    loading, moved = releases.history(model_dir)[before:]
    assert (loading["loaded"], loading["labels"]) == ([first, canary], {"stable": canary})
    assert (moved["loaded"], moved["labels"]) == ([first], {"stable": first})
    assert moved["time"] - loading["time"] >= 1.0
    assert_tf_serving_reads(models_config(release.config), {"stable": first}, [first])

    with pytest.raises(SystemExit) as refused:
        serving_command(release, "rollback", "--settle", "-1")
    assert refused.value.code == 2  # argparse: "--settle: must be 0 or more seconds, got -1"
    assert releases.current(model_dir).label("stable") == first
    again = serving_command(release, "rollback", "--settle", "0")
    assert again.code == 2 and f"no stable version before {first} is recorded" in again.err
    pinned = serving_command(release, "pin", str(canary))
    assert pinned.code == 2 and f"use `vae-mnist serving rollback --to {canary}`" in pinned.err
    unpinned = serving_command(release, "unpin")
    assert unpinned.code == 0 and "Dropped the release labels (stable)" in unpinned.out
    assert_tf_serving_reads(models_config(release.config), {}, [])
    assert serving_layout.served_version(model_dir) == release.direct  # the newest again


def test_the_tf_serving_manifests_and_the_docker_line_allow_labels_at_start_up(release):
    """A restarted server reads labels before it has loaded anything (components/releases.py)."""
    from pipeline import serving

    flag = "--allow_version_labels_for_unavailable_models"
    assert serving.docker_command(release.config.serving_root).endswith(flag)
    assert flag in release.runs["first"].out  # the "Serve it" line
    for name in ("tf-serving.yaml", "tf-serving-s3.yaml"):
        with open(os.path.join(REPO, "kubeflow", "serving", name)) as f:
            deployment, _ = yaml.safe_load_all(f)
        assert flag in deployment["spec"]["template"]["spec"]["containers"][-1]["args"]


def test_the_kserve_manifests_serve_one_pushed_version_per_revision(release, tmp_path):
    """KServe's CRD schema accepts the manifests filled with real versions, and the layout its
    storage initializer makes of them (a version directory at /mnt/models/<version>) is a base
    path TF Serving loads that version from."""
    schema = k8s_schema.inference_service_schema()
    with open(os.path.join(REPO, "kubeflow", "serving", "kserve-inferenceservice.yaml")) as f:
        stable = yaml.safe_load(f.read().replace("STABLE_VERSION", str(release.first)))
    with open(os.path.join(REPO, "kubeflow", "serving", "kserve-canary-patch.yaml")) as f:
        patch = yaml.safe_load(f.read().replace("CANARY_VERSION", str(release.canary)))
    k8s_schema.check_openapi(stable, schema)
    canary = json.loads(json.dumps(stable))
    canary["spec"]["predictor"].update(patch["spec"]["predictor"])  # kubectl patch --type merge
    k8s_schema.check_openapi(canary, schema)
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 10
    model = stable["spec"]["predictor"]["model"]
    assert model["runtime"] == "kserve-tensorflow-serving" and model["runtimeVersion"] == "2.16.1"
    for document, version in ((stable, release.first), (canary, release.canary)):
        [storage] = document["spec"]["predictor"]["storageUris"]
        assert storage["uri"].endswith(f"/serving/vae-mnist/{version}")
        mnt = tmp_path / str(version) / "mnt" / "models"  # what the storage initializer writes
        shutil.copytree(
            serving_layout.version_path(release.config.serving_model_dir, version),
            str(mnt / storage["mountPath"].rsplit("/", 1)[1]),
        )
        assert serving_layout.served_version(str(mnt)) == version  # TF Serving's --model_base_path=/mnt/models
    with pytest.raises(ValueError, match="canaryTrafficPercent: must be of type integer"):
        k8s_schema.check_openapi(
            {**canary, "spec": {"predictor": {**canary["spec"]["predictor"], "canaryTrafficPercent": "10%"}}}, schema
        )
    with pytest.raises(ValueError, match=r"\.spec\.predictor\.model\.runtimeVersions: unknown field"):
        broken = json.loads(json.dumps(stable))
        broken["spec"]["predictor"]["model"]["runtimeVersions"] = "2.16.1"
        k8s_schema.check_openapi(broken, schema)


NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?%?")


def recorded_numbers(release: Release) -> list[float]:
    """Every number run 2 recorded where the card could have read it: ML Metadata's artifacts
    and properties, the Pusher's recorded settings, the exported vae_config.json,
    training_record.json, the evaluation's metrics of both models and its eval_config.json."""
    found: list[float] = []

    def collect(value) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            found.append(float(value))
        elif isinstance(value, str):
            found.extend(float(n) for n in re.findall(r"\d+(?:\.\d+)?", value))
        elif isinstance(value, dict):
            for key, item in value.items():
                collect(key)
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)

    components = release.components
    examples = components["IdxExampleGen"].output("examples")
    collect(json.loads(examples.custom_properties[INGESTED_KEY].string_value))
    model = components["Trainer"].output("model")
    collect(read_exported_config(path_utils.serving_model_path(model.uri)))
    collect(read_training_record(components["Trainer"].output("model_run").uri))
    evaluation = components["Evaluator"].output("evaluation").uri
    collect(slice_metrics(evaluation))
    collect(slice_metrics(evaluation, "baseline"))
    collect(evaluation_config(evaluation))
    collect(components["ServedModel"].output("model").custom_properties[SERVED_VERSION_KEY].int_value)
    [pusher] = store_of(release.config).get_executions_by_id([components["Pusher"].execution_id])
    collect(json.loads(pusher.custom_properties[RELEASE_KEY].string_value))  # the settings it was given
    collect(components["Pusher"].output("pushed_model").custom_properties["pushed_version"].string_value)
    return found


def matches(token: str, recorded: list[float]) -> bool:
    """The token is some recorded number as the card prints it (its decimals, or as a percent)."""
    percent = token.endswith("%")
    text = token.rstrip("%")
    decimals = len(text.split(".")[1]) if "." in text else 0
    value = float(text)
    for number in recorded:
        shown = number * 100 if percent else number
        if abs(round(shown, decimals) - value) < 10**-decimals / 2 + 1e-9:
            return True
    return False


def test_every_number_on_the_model_card_is_one_the_run_recorded(release):
    version_dir = serving_layout.version_path(release.config.serving_model_dir, release.canary)
    card = model_card.read(version_dir)
    printed = serving_command(release, "list", "--card", str(release.canary))
    assert printed.code == 0 and printed.out.rstrip("\n") == card.rstrip("\n")
    for section in ("## Data", "## Settings", "## Training", "## Evaluation", "## Anomaly detection", "## Lineage"):
        assert section in card
    assert f"against the served version {release.first}: -ELBO -" in card  # it beat the served model
    assert os.path.getsize(os.path.join(version_dir, "assets.extra", model_card.CURVES_PNG)) > 1000

    # What is not a measurement: the push time (the version number as a date), paths, digests,
    # the run id and the code revision (in backticks, unless they are a recorded JSON value).
    text = re.sub(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", "", card)
    text = re.sub(r"`([^`]*)`", lambda m: m.group(1) if _is_json(m.group(1)) else "", text)
    text = text.replace("SHA-256", "")
    tokens = NUMBER.findall(text)
    assert len(tokens) > 100
    recorded = recorded_numbers(release)
    unmatched = [token for token in tokens if not matches(token, recorded)]
    assert not unmatched, f"numbers on the card that the run did not record: {unmatched[:10]}"


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def test_a_tampered_card_number_is_caught(release):
    """The check above can fail: a number the run never recorded is found."""
    recorded = recorded_numbers(release)
    assert matches("0.5%", [0.005]) and not matches("123.457", recorded)


def follows_tf_servings_label_rule(before: releases.Step, steps: list[releases.Step]) -> bool:
    """server_core.cc's rule, step by step: a label that existed may only move onto a version the
    previous write already loads (new labels may name any version: the manifests' flag)."""
    for step in steps:
        old = dict(before.labels)
        for label, version in step.labels:
            if label in old and old[label] != version and version not in before.versions:
                return False
        before = step
    return True


def test_every_release_plan_keeps_tf_servings_label_rule(tmp_path):
    """Each transition, planned and applied on a serving root of stand-in versions (only their
    saved_model.pb's presence matters to the plans), keeps the rule, and ends where it should."""
    model_dir = str(tmp_path / "serving" / "vae-mnist")
    for version in (1, 2, 3, 4):
        os.makedirs(os.path.join(model_dir, str(version)))
        open(os.path.join(model_dir, str(version), serving_layout.SAVED_MODEL_FILE), "wb").close()
    serving_layout.write_models_config(model_dir)

    def do(steps: list[releases.Step], action: str) -> dict:
        assert follows_tf_servings_label_rule(releases.current(model_dir), steps), (action, steps)
        releases.apply(model_dir, steps, action, settle_seconds=0)
        state = releases.current(model_dir)
        return {"loaded": list(state.versions), "labels": dict(state.labels)}

    assert do(releases.plan_canary(model_dir, 2, served_before=1), "canary") == {
        "loaded": [1, 2],
        "labels": {"stable": 1, "canary": 2},
    }
    # A canary replacing an untried one: version 3 is loaded first, then the label moves.
    steps = releases.plan_canary(model_dir, 3, served_before=1)
    assert len(steps) == 2 and steps[0].versions == (1, 2, 3) and steps[0].label("canary") == 2
    assert do(steps, "canary") == {"loaded": [1, 3], "labels": {"stable": 1, "canary": 3}}
    assert do(releases.plan_promote(model_dir), "promote") == {"loaded": [3], "labels": {"stable": 3}}
    assert do(releases.plan_rollback(model_dir), "rollback") == {"loaded": [1], "labels": {"stable": 1}}
    assert do(releases.plan_rollback(model_dir, to=4), "rollback") == {"loaded": [4], "labels": {"stable": 4}}
    assert releases.stable_history(model_dir) == [1, 4]
    assert do(releases.plan_unpin(model_dir), "unpin") == {"loaded": [], "labels": {}}
    serving_layout.pin(model_dir, 2)  # a canary onto a pinned model: the pinned version is stable
    assert do(releases.plan_canary(model_dir, 4, served_before=2), "canary") == {
        "loaded": [2, 4],
        "labels": {"stable": 2, "canary": 4},
    }
    # The rule itself can fail: a label moved onto a version nothing loads yet.
    moved = [releases.Step.of([2, 3], {"stable": 3, "canary": 4})]
    assert not follows_tf_servings_label_rule(releases.current(model_dir), moved)
    with pytest.raises(releases.ReleaseError, match="has no complete version 9"):
        releases.plan_rollback(model_dir, to=9)
