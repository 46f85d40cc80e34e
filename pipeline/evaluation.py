"""The Evaluator's TFMA configuration: what is measured, sliced and required for a blessing.

The model has no class label to compare predictions with, so it scores itself: its
``score_tf_example`` signature returns per-image ``neg_elbo``, ``reconstruction_error``, ``kl``
(nats, at the posterior mean) and ``pixel_mse``, and ``model/metrics.py:MeanScore`` averages
them. That keeps TFMA's per-example work to four numbers; the mean of the per-image pixel MSE is
the pixel MSE of the split, since every image has 784 pixels. Every metric is computed overall
and per digit (the raw examples' ``label``).

A blessing needs every bound in ``model/bounds.py`` (overall, and per digit for the
reconstruction), and no regression against the served model beyond the tolerances: an absolute
one in nats for the overall -ELBO and reconstruction error, a relative one for the pixel MSE and
for each digit, whose means move more between retrains. TFX ignores the regression part when
nothing is served yet. What depends on the run itself (digits with too few eval images, a served
model without some output) is settled by our Evaluator executor (components/evaluator.py).
"""

from __future__ import annotations

import json

# TFMA's config protos come from their module: TFMA 0.52 no longer exports them all at the top level.
from tensorflow_model_analysis.proto import config_pb2

from model.bounds import Bounds
from model.export import SCORES
from schema import LABEL_KEY

NATS_SCORES = ("neg_elbo", "reconstruction_error", "kl")  # the others are compared relatively


def digit_slice(digit: int) -> config_pb2.SlicingSpec:
    return config_pb2.SlicingSpec(feature_values={LABEL_KEY: str(digit)})


def _mean_of(score: str) -> config_pb2.MetricConfig:
    return config_pb2.MetricConfig(class_name="MeanScore", module="model.metrics", config=json.dumps({"score": score}))


def _threshold(bound: float, no_regression: config_pb2.GenericChangeThreshold) -> config_pb2.MetricThreshold:
    return config_pb2.MetricThreshold(
        value_threshold=config_pb2.GenericValueThreshold(upper_bound={"value": bound}), change_threshold=no_regression
    )


def eval_config(
    bounds: Bounds, tolerance_nats: float, tolerance_fraction: float, min_examples_per_digit: int
) -> config_pb2.EvalConfig:
    lower = config_pb2.MetricDirection.LOWER_IS_BETTER
    absolute = config_pb2.GenericChangeThreshold(direction=lower, absolute={"value": tolerance_nats})
    relative = config_pb2.GenericChangeThreshold(direction=lower, relative={"value": tolerance_fraction})
    thresholds = {}
    for score, bound in bounds.overall().items():
        no_regression = absolute if score in NATS_SCORES else relative
        thresholds[score] = [
            config_pb2.PerSliceMetricThreshold(
                slicing_specs=[config_pb2.SlicingSpec()], threshold=_threshold(bound, no_regression)
            )
        ]
        for digit, digit_bound in enumerate(bounds.per_digit(score) or ()):
            thresholds[score].append(
                config_pb2.PerSliceMetricThreshold(
                    slicing_specs=[digit_slice(digit)], threshold=_threshold(digit_bound, relative)
                )
            )
    return config_pb2.EvalConfig(
        model_specs=[config_pb2.ModelSpec(signature_name="score_tf_example")],
        slicing_specs=[config_pb2.SlicingSpec(), config_pb2.SlicingSpec(feature_keys=[LABEL_KEY])],
        metrics_specs=[
            config_pb2.MetricsSpec(
                metrics=[config_pb2.MetricConfig(class_name="ExampleCount"), *(_mean_of(score) for score in SCORES)],
                per_slice_thresholds={
                    score: config_pb2.PerSliceMetricThresholds(thresholds=slices)
                    for score, slices in thresholds.items()
                },
            )
        ],
        # A digit's bounds apply only when the eval split holds this many of its images. TFMA
        # itself would fail every threshold on a smaller slice; the executor drops its bounds.
        options=config_pb2.Options(min_slice_size={"value": min_examples_per_digit}),
    )
