"""The baseline a candidate model is compared with: the newest blessed model *other than itself*.

TFX's LatestBlessedModelStrategy returns the newest blessed model, which after an unchanged
re-run is the (cached) candidate itself: the Evaluator's inputs then differ from the first run's,
so it and the Pusher run again and push the same model a second time. Leaving the candidate out
keeps a re-run fully cached and never compares a model with itself.

Kubeflow's compiler knows only TFX's two stock strategies, so compiled pipelines use
LatestBlessedModelStrategy (``PipelineConfig.baseline``); KFP's own cache covers re-runs there.
"""

from __future__ import annotations

from tfx import v1 as tfx
from tfx.components.evaluator import constants
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import LatestBlessedModelStrategy
from tfx.types import standard_artifacts

MODEL_KEY = "model"
BLESSING_KEY = "model_blessing"
CANDIDATE_KEY = "candidate"


class OtherBlessedModelStrategy(tfx.dsl.experimental.ResolverStrategy):
    """Resolves {model, model_blessing} to the newest blessed Model that is not the candidate."""

    def resolve_artifacts(self, store, input_dict):
        candidate_ids = {a.id for a in input_dict.get(CANDIDATE_KEY, [])}
        blessed_ids = {
            b.get_int_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY): b
            for b in input_dict[BLESSING_KEY]
            if b.get_int_custom_property(constants.ARTIFACT_PROPERTY_BLESSED_KEY) == 1
        }
        for model in sorted(input_dict[MODEL_KEY], key=lambda a: a.id, reverse=True):
            if model.id in blessed_ids and model.id not in candidate_ids:
                return {MODEL_KEY: [model], BLESSING_KEY: [blessed_ids[model.id]], CANDIDATE_KEY: []}
        return {MODEL_KEY: [], BLESSING_KEY: [], CANDIDATE_KEY: []}


def baseline_resolver(kind: str, candidate: tfx.dsl.Channel) -> tfx.dsl.Resolver:
    """A Resolver node whose ``outputs['model']`` is the baseline for the Evaluator."""
    channels = {
        MODEL_KEY: tfx.dsl.Channel(type=standard_artifacts.Model),
        BLESSING_KEY: tfx.dsl.Channel(type=standard_artifacts.ModelBlessing),
    }
    if kind == "other_blessed":
        return tfx.dsl.Resolver(strategy_class=OtherBlessedModelStrategy, candidate=candidate, **channels).with_id(
            "baseline_model_resolver"
        )
    return tfx.dsl.Resolver(strategy_class=LatestBlessedModelStrategy, **channels).with_id("baseline_model_resolver")
