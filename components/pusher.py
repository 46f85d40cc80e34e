"""Pusher: TFX's filesystem Pusher, made atomic and recorded, and never pushing a served model twice.

Why our own executor: TFX's copies straight into the new version directory, where TF Serving
may find it half-written (a full disk left one without ``saved_model.pb`` as the newest
version), and copies its archive *after* the serving copy, so a failure there left a complete
served model that ML Metadata recorded as not pushed. Here a push is, in this order:

1. remove what an interrupted push left (``serving_layout.remove_leftovers``);
2. stage the model beside the serving directory, where TF Serving does not look;
3. archive it to the PushedModel artifact (what ML Metadata will point to);
4. publish the staged copy as the new version (an atomic rename on a local file system; see
   components/serving_layout.py for object stores);
5. record the push; the launcher then publishes the artifact to ML Metadata.

A failure in 1-4 fails the execution: ML Metadata records no push and TF Serving has nothing new
to load. A crash between 4 and 5 leaves a complete served version that ML Metadata does not
know; the next run sees that its model is the one served (below) and records that.

The Evaluator's baseline is looked up afresh on every run (ServedModel), so an unchanged re-run
reaches the Pusher again with the cached candidate that is already being served: a blessed
model whose files equal the served version's (or a labelled one's) is recorded as not pushed,
with ``already_served`` naming that version, and nothing is copied.

Beyond TFX's Pusher: the staged copy gets its model card (components/model_card.py) before it is
archived and published, from the extra inputs (the examples, the Trainer's run record, the
evaluation, the served model it was compared with); and after publishing, the ``release``
policy decides what TF Serving serves (components/releases.py): ``direct`` leaves models.config's
policy as it is (newest version, or a pin, or labels, which hold), ``canary`` labels the new
version canary beside stable.
"""

import json
import logging

from tfx import types
from tfx.components.pusher import executor as tfx_pusher
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import io_utils, proto_utils

from components import model_card, releases, serving_layout

ALREADY_SERVED_KEY = "already_served"  # on the PushedModel: the served version equal to the model
PINNED_KEY = "pinned"  # on the PushedModel: TF Serving is pinned to this other version
LABELS_KEY = "labels"  # on the PushedModel: JSON {label: version} after the push, when labelled
RELEASE_KEY = "release"  # the Pusher's parameter: JSON {policy, settle_seconds, and the card's settings}
CARD_INPUTS = ("examples", "model_run", "evaluation", "baseline_model")


class PusherSpec(standard_component_specs.PusherSpec):
    """TFX's PusherSpec, with the release settings and what the model card is written from."""

    PARAMETERS = {**standard_component_specs.PusherSpec.PARAMETERS, RELEASE_KEY: ExecutionParameter(type=str)}
    INPUTS = {
        **standard_component_specs.PusherSpec.INPUTS,
        "examples": ChannelParameter(type=standard_artifacts.Examples, optional=True),
        "model_run": ChannelParameter(type=standard_artifacts.ModelRun, optional=True),
        "evaluation": ChannelParameter(type=standard_artifacts.ModelEvaluation, optional=True),
        "baseline_model": ChannelParameter(type=standard_artifacts.Model, optional=True),
    }


def _single(input_dict, key: str):
    artifacts = input_dict.get(key) or []
    return artifacts[0] if artifacts else None


class Executor(tfx_pusher.Executor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802
        self._log_startup(input_dict, output_dict, exec_properties)
        pushed = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        if destination.WhichOneof("destination") != "filesystem":
            raise NotImplementedError("vae-mnist pushes to a file system (TF Serving's model base path)")
        release = json.loads(exec_properties.get(RELEASE_KEY) or "{}")
        model_dir = destination.filesystem.base_directory
        for path in serving_layout.remove_leftovers(model_dir):
            logging.warning("Removed %s, left by an interrupted push (TF Serving could not load it)", path)
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(pushed)
            return

        model_path = self.GetModelPath(input_dict)
        same = self._served_copy(model_path, model_dir)
        if same is not None:
            self._MarkNotPushed(pushed)
            pushed.set_int_custom_property(ALREADY_SERVED_KEY, same)
            logging.info("The model is already served as version %d: nothing to push", same)
            return

        served_before = serving_layout.served_version(model_dir)
        version = serving_layout.next_version(model_dir)
        staging = serving_layout.stage(model_path, model_dir, version)
        self._write_card(staging, input_dict, version, release, pushed.uri)
        io_utils.copy_dir(staging, pushed.uri)
        version_dir = serving_layout.publish(staging, model_dir, version)
        self._MarkPushed(pushed, pushed_destination=version_dir, pushed_version=str(version))
        logging.info("Model pushed to %s (archived in %s)", version_dir, pushed.uri)
        self._release(pushed, model_dir, version, served_before, release)

    @staticmethod
    def _served_copy(model_path: str, model_dir: str) -> int | None:
        """The served or labelled version whose files are the model's (its card aside), or None."""
        loaded = {serving_layout.served_version(model_dir), *serving_layout.loaded_versions(model_dir)}
        fingerprint = serving_layout.fingerprint(model_path, ignore=model_card.CARD_FILES)
        for version in sorted((v for v in loaded if v is not None), reverse=True):
            if not serving_layout.is_complete(model_dir, version):
                continue
            served = serving_layout.version_path(model_dir, version)
            if serving_layout.fingerprint(served, ignore=model_card.CARD_FILES) == fingerprint:
                return version
        return None

    def _write_card(self, staging: str, input_dict, version: int, release: dict, pushed_uri: str) -> None:
        from model.export import EXTRA_DIR

        found = {key: _single(input_dict, key) for key in CARD_INPUTS}
        paths = model_card.write(
            f"{staging}/{EXTRA_DIR}",
            model=_single(input_dict, standard_component_specs.MODEL_KEY),
            blessing=_single(input_dict, standard_component_specs.MODEL_BLESSING_KEY),
            examples=found["examples"],
            model_run=found["model_run"],
            evaluation=found["evaluation"],
            baseline=found["baseline_model"],
            version=version,
            # TFX's Kubeflow entrypoint gives executors no run id; there the archive's URI names the run.
            run=f"run `{self._context.pipeline_run_id}`"
            if self._context.pipeline_run_id
            else f"the run writing `{pushed_uri}`",
            settings=release,
        )
        logging.info("Model card: %s", ", ".join(paths))

    @staticmethod
    def _release(pushed, model_dir: str, version: int, served_before: int | None, release: dict) -> None:
        """What TF Serving serves after the push: the release policy (components/releases.py)."""
        if release.get("policy") == "canary":
            settle = release.get("settle_seconds")
            steps = releases.plan_canary(model_dir, version, served_before)
            state = releases.apply(model_dir, steps, "canary", releases.SETTLE_SECONDS if settle is None else settle)
            pushed.set_string_custom_property(LABELS_KEY, json.dumps(dict(state.labels)))
            logging.info("Released: %s", releases.describe(model_dir))
            return
        # TF Serving's --model_config_file, written beside the model once; a pin or labels in it are kept.
        serving_layout.write_models_config(model_dir)
        labels = serving_layout.release_labels(model_dir)
        if labels:
            pushed.set_string_custom_property(LABELS_KEY, json.dumps(labels))
            logging.warning(
                "Release labels hold (%s): version %d is on disk, not loaded (`vae-mnist serving unpin` "
                "serves the newest; `--release canary` labels a push)",
                labels,
                version,
            )
        pinned = serving_layout.pinned_version(model_dir)
        if pinned is not None:
            pushed.set_int_custom_property(PINNED_KEY, pinned)
            if serving_layout.is_complete(model_dir, pinned):
                logging.warning("TF Serving stays on pinned version %d until `vae-mnist serving unpin`", pinned)
            else:
                logging.warning("models.config pins version %d, which does not exist: nothing is served", pinned)


class Pusher(base_component.BaseComponent):
    """TFX's filesystem Pusher made atomic (above), with a model card and a release policy."""

    SPEC_CLASS = PusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        model_blessing: types.BaseChannel,
        push_destination: pusher_pb2.PushDestination,
        release: dict,
        **card_inputs: types.BaseChannel,
    ):
        """``release``: {policy, settle_seconds, and the settings the card names}; ``card_inputs``:
        the channels of CARD_INPUTS."""
        unknown = set(card_inputs) - set(CARD_INPUTS)
        if unknown:
            raise TypeError(f"Pusher got unknown inputs {sorted(unknown)}; it takes {', '.join(CARD_INPUTS)}")
        spec = PusherSpec(
            model=model,
            model_blessing=model_blessing,
            push_destination=push_destination,
            **{RELEASE_KEY: json.dumps(release, sort_keys=True)},
            pushed_model=types.Channel(type=standard_artifacts.PushedModel),
            **card_inputs,
        )
        super().__init__(spec=spec)
