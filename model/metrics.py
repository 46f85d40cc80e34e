"""MeanScore: a TFMA metric averaging one per-image score the serving signature returns.

TFMA's own ``Mean`` (metrics/stats.py) reads a fixed key path, which breaks once a baseline model
joins the evaluation (predictions are then keyed by model name), and it keys its results as
unweighted, which TFMA 0.47's threshold lookup (keys built with ``example_weighted=None``) never
matches: a threshold on it can only fail with "Metric not found". This metric does both right.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types


@dataclasses.dataclass
class _Sum:
    total: float = 0.0
    count: int = 0


class _MeanScoreCombiner(beam.CombineFn):
    def __init__(self, key: metric_types.MetricKey, score: str):
        self._key = key
        self._score = score

    def create_accumulator(self) -> _Sum:
        return _Sum()

    def add_input(self, accumulator: _Sum, element: metric_types.StandardMetricInputs) -> _Sum:
        predictions = element.predictions
        # With a baseline in the evaluation, predictions are keyed by model name.
        if self._key.model_name and self._key.model_name in predictions:
            predictions = predictions[self._key.model_name]
        values = np.asarray(predictions[self._score], dtype=np.float64).reshape(-1)
        accumulator.total += float(values.sum())
        accumulator.count += values.size
        return accumulator

    def merge_accumulators(self, accumulators) -> _Sum:
        merged = _Sum()
        for accumulator in accumulators:
            merged.total += accumulator.total
            merged.count += accumulator.count
        return merged

    def extract_output(self, accumulator: _Sum) -> dict:
        return {self._key: accumulator.total / accumulator.count if accumulator.count else float("nan")}


def _mean_score(name: str, score: str, model_names: list[str] | None = None) -> metric_types.MetricComputations:
    model_names = model_names or [""]
    computations = []
    for model_name in model_names:
        key = metric_types.MetricKey(name=name, model_name=model_name, example_weighted=None)
        computations.append(
            metric_types.MetricComputation(
                keys=[key],
                preprocessors=[
                    metric_types.StandardMetricInputsPreprocessor(
                        include_filter={"predictions": {}}, include_default_inputs=False
                    )
                ],
                combiner=_MeanScoreCombiner(key, score),
            )
        )
    return computations


class MeanScore(metric_types.Metric):
    """The mean over examples of ``predictions[score]`` (a per-example scalar output)."""

    def __init__(self, score: str, name: str | None = None):
        super().__init__(_mean_score, name=name or score, score=score)


metric_types.register_metric(MeanScore)
