"""Pusher: TFX's filesystem Pusher, except that a model already served is not pushed again.

Why: the Evaluator's baseline is looked up afresh on every run (ServedModel), so an unchanged
re-run evaluates and reaches the Pusher again, with the cached candidate that is already being
served. TFX's Pusher would copy it once more as a new timestamped version. Here a blessed model
whose files equal the served version's is recorded as not pushed, with ``already_served`` naming
that version, and the serving directory is left alone.
"""

import logging
import os

from tfx import v1 as tfx
from tfx.components.pusher import executor as tfx_pusher
from tfx.dsl.components.base import executor_spec
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components import serving_layout

ALREADY_SERVED_KEY = "already_served"  # on the PushedModel: the served version equal to the model


class Executor(tfx_pusher.Executor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802
        if self.CheckBlessing(input_dict):
            destination = pusher_pb2.PushDestination()
            proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
            model_dir = destination.filesystem.base_directory
            served = serving_layout.served_version(model_dir)
            if served is not None and serving_layout.fingerprint(
                self.GetModelPath(input_dict)
            ) == serving_layout.fingerprint(os.path.join(model_dir, str(served))):
                pushed = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
                self._MarkNotPushed(pushed)
                pushed.set_int_custom_property(ALREADY_SERVED_KEY, served)
                logging.info("The model is already served as version %d: nothing to push", served)
                return
        super().Do(input_dict, output_dict, exec_properties)


class Pusher(tfx.components.Pusher):
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)
