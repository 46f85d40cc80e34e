"""Evaluator: TFX's, judging the candidate against the served model, or alone when none is.

The baseline comes from ServedModel, which always publishes an artifact; when it is the empty
marker (nothing served yet) this executor drops it, so TFX evaluates the candidate alone and
ignores the no-regression thresholds (TFX's ``rubber_stamp``), judging a first model on the
absolute bounds. Everything else is TFX's Evaluator unchanged.
"""

import logging

from tfx import v1 as tfx
from tfx.components.evaluator import executor as tfx_evaluator
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_component_specs

from components.served_model import is_nothing_served

_BASELINE = standard_component_specs.BASELINE_MODEL_KEY


class Executor(tfx_evaluator.Executor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802
        baseline = input_dict.get(_BASELINE)
        if baseline and is_nothing_served(baseline[0]):
            logging.info("No model is served yet: the candidate is judged on the absolute bounds alone")
            input_dict = {key: value for key, value in input_dict.items() if key != _BASELINE}
        super().Do(input_dict, output_dict, exec_properties)


class Evaluator(tfx.components.Evaluator):
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
