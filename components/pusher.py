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
model whose files equal the served version's is recorded as not pushed, with
``already_served`` naming that version, and nothing is copied.
"""

import logging

from tfx.components.pusher import component as tfx_pusher_component
from tfx.components.pusher import executor as tfx_pusher
from tfx.dsl.components.base import executor_spec
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

from components import serving_layout

ALREADY_SERVED_KEY = "already_served"  # on the PushedModel: the served version equal to the model
PINNED_KEY = "pinned"  # on the PushedModel: TF Serving is pinned to this other version


class Executor(tfx_pusher.Executor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802
        self._log_startup(input_dict, output_dict, exec_properties)
        pushed = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        if destination.WhichOneof("destination") != "filesystem":
            raise NotImplementedError("vae-mnist pushes to a file system (TF Serving's model base path)")
        model_dir = destination.filesystem.base_directory
        for path in serving_layout.remove_leftovers(model_dir):
            logging.warning("Removed %s, left by an interrupted push (TF Serving could not load it)", path)
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(pushed)
            return

        model_path = self.GetModelPath(input_dict)
        served = serving_layout.served_version(model_dir)
        if served is not None and serving_layout.fingerprint(model_path) == serving_layout.fingerprint(
            serving_layout.version_path(model_dir, served)
        ):
            self._MarkNotPushed(pushed)
            pushed.set_int_custom_property(ALREADY_SERVED_KEY, served)
            logging.info("The model is already served as version %d: nothing to push", served)
            return

        version = serving_layout.next_version(model_dir)
        staging = serving_layout.stage(model_path, model_dir, version)
        io_utils.copy_dir(model_path, pushed.uri)
        version_dir = serving_layout.publish(staging, model_dir, version)
        self._MarkPushed(pushed, pushed_destination=version_dir, pushed_version=str(version))
        logging.info("Model pushed to %s (archived in %s)", version_dir, pushed.uri)
        # TF Serving's --model_config_file, written beside the model once; a pin in it is kept.
        serving_layout.write_models_config(model_dir)
        pinned = serving_layout.pinned_version(model_dir)
        if pinned is not None:
            pushed.set_int_custom_property(PINNED_KEY, pinned)
            if serving_layout.is_complete(model_dir, pinned):
                logging.warning("TF Serving stays on pinned version %d until `vae-mnist serving unpin`", pinned)
            else:
                logging.warning("models.config pins version %d, which does not exist: nothing is served", pinned)


class Pusher(tfx_pusher_component.Pusher):
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)
