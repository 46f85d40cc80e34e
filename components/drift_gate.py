"""DriftGate: stops the run before training when the new span's images differ from the span before.

StatisticsGen pools the 784 pixel values of ``image`` into one histogram, so a span turned a
quarter or half round, or mixed with another dataset at the same ink, has the statistics and the
labels of a clean one. The gate compares what does move (SpanScores' rows):

- ``label``: the share of each digit (L-infinity distance; a digit that stops arriving);
- ``ink``, ``row_spread``, ``col_spread``, ``slant``: per-image summaries
  (components/span_scores.py; Jensen-Shannon divergence);
- the served model's per-image score, ``neg_elbo`` (and ``anomaly_score`` where the model has
  one), the summary that sees everything the model has learnt, half turns included. Its
  reference is the previous span's eval images, which the served model never trained on; the
  new span is all unseen, so a clean span scores alike.

The distances are TFDV's own drift comparators (``validate_statistics`` with
``previous_statistics``) over statistics of these columns. Why not TFX's DistributionValidator:
it compares two Statistics artifacts, which needs a resolver for the previous span's (which
open-source Kubeflow cannot run) and statistics of features the Examples do not have.

The first span passes (nothing to compare with), as does an unspanned input. ``accept_drift``
lets one run through on purpose: the report then records the drift as accepted.
"""

import dataclasses
import json
import logging
import os

import pandas as pd
from tfx.dsl.io import fileio

from components.artifacts import DriftReport, ImageScores
from components.span_scores import PREVIOUS_FILE, REPORT_FILE, SCORES_FILE, SUMMARIES, read_rows, write_file
from components.tfx_dsl import InputArtifact, OutputArtifact, Parameter, component

LABEL = "label"
# Measured on MNIST spans (tests/test_drift.py, and the prototype in issue 13's notes): clean spans
# of 600 to 20,000 images stay below 0.04 on every feature; quarter turns reach 0.45, inversions
# 1.0, half Fashion-MNIST 0.2; half turns move the served anomaly_score by 0.19 (a model of 10,000
# images and two epochs, tests/test_anomaly.py) to 0.34 (the default network); a missing digit
# moves its share ~0.1.
DEFAULT_THRESHOLDS = {
    LABEL: 0.05,
    "ink": 0.1,
    "row_spread": 0.1,
    "col_spread": 0.1,
    "slant": 0.1,
    "neg_elbo": 0.1,
    "anomaly_score": 0.1,
}
DRIFT_FILE = "drift.json"
DRIFTED_KEY = "drifted"  # custom property of the report: the drifted features, comma-separated
_HISTOGRAM_BUCKETS = 20


class DataDriftError(RuntimeError):
    """The new span's data differs from the previous span's beyond a threshold."""


@dataclasses.dataclass(frozen=True)
class Comparison:
    feature: str
    measure: str  # "L-infinity distance" or "Jensen-Shannon divergence"
    distance: float
    threshold: float

    @property
    def drifted(self) -> bool:
        return self.distance > self.threshold

    def describe(self) -> str:
        verdict = "above" if self.drifted else "within"
        return f"{self.feature}: {self.measure} {self.distance:.3f}, {verdict} the threshold {self.threshold:g}"


def _statistics(frame: pd.DataFrame):
    """TFDV statistics of the columns; the label as text, so that TFDV counts it by value."""
    import tensorflow_data_validation as tfdv

    if LABEL in frame:
        frame = frame.assign(**{LABEL: frame[LABEL].astype(str)})
    options = tfdv.StatsOptions(num_histogram_buckets=_HISTOGRAM_BUCKETS)
    return tfdv.generate_statistics_from_dataframe(frame, stats_options=options)


def compare(current: pd.DataFrame, previous: pd.DataFrame, thresholds: dict[str, float]) -> list[Comparison]:
    """TFDV's drift comparators on every thresholded column both frames have. Model scores are
    compared against the previous span's eval images only (held out from the served model)."""
    import tensorflow_data_validation as tfdv

    features = [name for name in thresholds if name in current and name in previous]
    scores = [name for name in features if name != LABEL and name not in SUMMARIES]
    model_free = [name for name in features if name not in scores]
    current_statistics = _statistics(current[features])
    reference = _statistics(previous[model_free])
    if scores:
        held_out = _statistics(previous.loc[previous["split"] == "eval", scores])
        reference.datasets[0].features.extend(held_out.datasets[0].features)
    schema = tfdv.infer_schema(current_statistics)
    for name in features:
        feature = tfdv.get_feature(schema, name)
        if name == LABEL:
            feature.drift_comparator.infinity_norm.threshold = thresholds[name]
        else:
            feature.drift_comparator.jensen_shannon_divergence.threshold = thresholds[name]
    anomalies = tfdv.validate_statistics(current_statistics, schema, previous_statistics=reference)
    measures = {"L_INFTY": "L-infinity distance", "JENSEN_SHANNON_DIVERGENCE": "Jensen-Shannon divergence"}
    comparisons = []
    for info in anomalies.drift_skew_info:
        name = info.path.step[0]
        for measurement in info.drift_measurements:
            kind = type(measurement).Type.Name(measurement.type)
            comparisons.append(Comparison(name, measures.get(kind, kind), measurement.value, measurement.threshold))
    return sorted(comparisons, key=lambda c: features.index(c.feature))


@component
def DriftGate(  # noqa: N802
    scores: InputArtifact[ImageScores],
    report: OutputArtifact[DriftReport],
    thresholds: Parameter[str],
    accept_drift: Parameter[bool] = False,
) -> None:
    """Raises DataDriftError, failing the run before training, if the span drifted (unless
    ``accept_drift``); ``thresholds`` is a JSON object {feature: threshold}."""
    with fileio.open(os.path.join(scores.uri, REPORT_FILE), "rb") as f:
        span = json.load(f)["span"]
    result = {"span": span, "compared_with": None, "comparisons": [], "accepted": bool(accept_drift)}
    if fileio.exists(os.path.join(scores.uri, PREVIOUS_FILE)):
        current, previous = read_rows(scores.uri, SCORES_FILE), read_rows(scores.uri, PREVIOUS_FILE)
        result["compared_with"] = int(previous["span"].iloc[0])
        comparisons = compare(current, previous, json.loads(thresholds))
        result["comparisons"] = [{**dataclasses.asdict(c), "drifted": c.drifted} for c in comparisons]
    write_file(os.path.join(report.uri, DRIFT_FILE), json.dumps(result, indent=1).encode())
    if result["compared_with"] is None:
        logging.info("Span %s: nothing earlier to compare with; the drift gate passes", span)
        return
    drifted = [c for c in comparisons if c.drifted]
    report.set_string_custom_property(DRIFTED_KEY, ",".join(c.feature for c in drifted))
    for comparison in comparisons:
        logging.info("Span %s against span %s: %s", span, result["compared_with"], comparison.describe())
    if drifted and not accept_drift:
        raise DataDriftError(
            f"span {span} drifted from span {result['compared_with']}; the run stops before training "
            "(--accept-drift lets it through on purpose).\n  "
            + "\n  ".join(c.describe() for c in drifted)
            + f"\n(the span's scores and pictures: {scores.uri})"
        )
