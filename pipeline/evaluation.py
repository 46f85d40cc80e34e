"""The Evaluator's TFMA configuration: what is measured, sliced and required for a blessing.

The model has no class label, so TFMA is told to use Transform's scaled ``pixels`` as the label
(through the model's ``transform_features`` signature) and the ``reconstruction`` as the
prediction: that pair gives the pixel MSE. The per-image scores the serving signature returns
(``neg_elbo``, ``reconstruction_error``, ``kl``, in nats at the posterior mean) are averaged by
``model/metrics.py:MeanScore``. Every metric is computed overall and per digit.
"""

from __future__ import annotations

import json

import tensorflow_model_analysis as tfma

from model.features import LABEL_KEY, PIXELS_KEY

SCORES = ("neg_elbo", "reconstruction_error", "kl")
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
        model_specs=[
            tfma.ModelSpec(
                signature_name="serving_tf_example",
                preprocessing_function_names=["transform_features"],
                label_key=PIXELS_KEY,
                prediction_key="reconstruction",
            )
        ],
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[LABEL_KEY])],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    *(_mean_of(score) for score in SCORES),
                    tfma.MetricConfig(
                        class_name="MeanSquaredError",
                        module="tensorflow_model_analysis.metrics",
                        config=json.dumps({"name": "pixel_mse"}),
                    ),
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
