"""The Evaluator's TFMA configuration: what is measured, sliced and required for a blessing.

The model has no class label to compare predictions with, so it scores itself: its
``score_tf_example`` signature returns per-image ``neg_elbo``, ``reconstruction_error``, ``kl``
(nats, at the posterior mean) and ``pixel_mse``, and ``model/metrics.py:MeanScore`` averages
them. That keeps TFMA's per-example work to four numbers; the mean of the per-image pixel MSE is
the pixel MSE of the split, since every image has 784 pixels. Every metric is computed overall
and per digit (the raw examples' ``label``).
"""

from __future__ import annotations

import json

import tensorflow_model_analysis as tfma

from model.export import SCORES
from model.features import LABEL_KEY

GATING_METRIC = "neg_elbo"


def _mean_of(score: str) -> tfma.MetricConfig:
    return tfma.MetricConfig(class_name="MeanScore", module="model.metrics", config=json.dumps({"score": score}))


def eval_config(max_neg_elbo: float, regression_tolerance_nats: float) -> tfma.EvalConfig:
    gate = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(upper_bound={"value": max_neg_elbo}),
        # Worse than the baseline by more than the tolerance is a regression. TFX ignores this
        # part when there is no blessed baseline yet (the first run).
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.LOWER_IS_BETTER, absolute={"value": regression_tolerance_nats}
        ),
    )
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name="score_tf_example")],
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[LABEL_KEY])],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    *(_mean_of(score) for score in SCORES),
                ],
                # The bound is on the whole eval split; per-digit values are reported, not gated.
                per_slice_thresholds={
                    GATING_METRIC: tfma.PerSliceMetricThresholds(
                        thresholds=[tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=gate)]
                    )
                },
            )
        ],
    )
