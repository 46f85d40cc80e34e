"""Evaluator: TFX's, with the eval config settled against what this run actually has.

Three things can only be known when the Evaluator runs, and TFX's executor gets each wrong:

- Nothing served yet: ServedModel always publishes an artifact, and an empty one marks "nothing
  served". It is dropped here, so TFX judges the candidate alone on the absolute bounds and
  ignores the no-regression thresholds (TFX's ``rubber_stamp``).
- Digits with few eval images: TFMA's ``min_slice_size`` blanks a small slice's metrics, and its
  validator then fails every threshold on that slice as "Metric not found"
  (tensorflow_model_analysis/evaluators/metrics_validator.py); a digit absent from the split is a
  "missing slice", also a failure. So the eval split's labels are counted here, and the bounds of
  a digit with fewer images than ``min_slice_size`` are dropped (its metrics are still reported).
- A served model exported before a score existed: TFMA computes every metric for the baseline too,
  and a score the baseline does not output would fail its comparison. Such scores are computed for
  the candidate alone and bounded, not compared.

What was settled is recorded on the blessing (``ungated_digits``, ``not_compared``) for the run
summary. Everything else is TFX's Evaluator unchanged.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.proto import config_pb2  # TFMA 0.52 no longer exports every config proto
from tfx.components.evaluator import component as tfx_evaluator_component
from tfx.components.evaluator import executor as tfx_evaluator
from tfx.dsl.components.base import executor_spec
from tfx.types import artifact, artifact_utils, standard_component_specs
from tfx.utils import json_utils, path_utils, proto_utils

from components.served_model import is_nothing_served
from schema import LABEL_KEY, NUM_CLASSES

_BASELINE = standard_component_specs.BASELINE_MODEL_KEY
_EVAL_CONFIG = standard_component_specs.EVAL_CONFIG_KEY
UNGATED_DIGITS_KEY = "ungated_digits"  # JSON {digit: eval images} of digits judged without bounds
NOT_COMPARED_KEY = "not_compared"  # comma-separated scores the served model does not output


def model_names(evaluation_uri: str) -> list[str]:
    """The evaluation's model names: ['candidate', 'baseline'] when it compared, else ['']."""
    return [s.get("name", "") for s in evaluation_config(evaluation_uri)["modelSpecs"]]


def evaluation_config(evaluation_uri: str) -> dict:
    """The EvalConfig an evaluation ran with (TFMA's eval_config.json, as JSON): its thresholds
    are the bounds and tolerances the blessing was judged against."""
    with tf.io.gfile.GFile(os.path.join(evaluation_uri, "eval_config.json")) as f:
        return json.load(f)["evalConfig"]


def slice_metrics(evaluation_uri: str, model_name: str = "candidate") -> dict:
    """{slice: {metric: value}}, slice '' being the whole split and '<digit>' each label, of the
    candidate (or ``model_name``) model; an evaluation without baseline has one unnamed model."""
    if "baseline" not in model_names(evaluation_uri):
        model_name = None
    result = tfma.load_eval_result(evaluation_uri, model_name=model_name)
    metrics = {}
    for slice_key, values in result.slicing_metrics:
        name = "" if not slice_key else str(slice_key[0][1])
        # float(): TFMA's JSON view writes a NaN metric as the string "NaN".
        metrics[name] = {k: float(v["doubleValue"]) for k, v in values[""][""].items() if "doubleValue" in v}
    return metrics


def label_counts(examples: artifact.Artifact, splits: list[str]) -> np.ndarray:
    """How many examples of each label the splits hold."""
    files = []
    for split in splits:
        files += sorted(tf.io.gfile.glob(os.path.join(artifact_utils.get_split_uri([examples], split), "*")))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP" if files[0].endswith(".gz") else "")
    spec = {LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
    counts = np.zeros(NUM_CLASSES, np.int64)
    for batch in dataset.batch(4096).map(lambda records: tf.io.parse_example(records, spec)[LABEL_KEY]):
        counts += np.bincount(batch.numpy(), minlength=NUM_CLASSES)[:NUM_CLASSES]
    return counts


def signature_outputs(model_dir: str, signature: str) -> set[str] | None:
    """The output names of a SavedModel's signature (None if it has none), read from
    saved_model.pb without loading the model."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(model_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if signature in meta_graph.signature_def:
            return set(meta_graph.signature_def[signature].outputs)
    return None


def _digit(spec: config_pb2.SlicingSpec) -> int | None:
    value = spec.feature_values.get(LABEL_KEY)
    return int(value) if value is not None and not spec.feature_keys else None


def _score_of(metric: config_pb2.MetricConfig) -> str | None:
    """The model output a MeanScore metric averages (None for other metrics)."""
    return json.loads(metric.config or "{}").get("score")


def drop_small_digit_bounds(config: config_pb2.EvalConfig, counts: np.ndarray) -> dict[int, int]:
    """Removes the bounds of digits with fewer eval images than ``min_slice_size`` and clears it
    (see the module docstring). Returns {digit: images} of the digits left without bounds."""
    minimum = config.options.min_slice_size.value
    config.options.ClearField("min_slice_size")
    small = {digit: int(count) for digit, count in enumerate(counts) if count < minimum}
    for metrics_spec in config.metrics_specs:
        for per_slice in metrics_spec.per_slice_thresholds.values():
            kept = [t for t in per_slice.thresholds if _digit(t.slicing_specs[0]) not in small]
            del per_slice.thresholds[:]
            per_slice.thresholds.extend(kept)
    return small


def candidate_only(config: config_pb2.EvalConfig, scores: set[str]) -> None:
    """Computes these scores' metrics for the candidate alone, bounded but not compared."""
    moved = config_pb2.MetricsSpec(model_names=[tfma.CANDIDATE_KEY])
    for metrics_spec in config.metrics_specs:
        keep = [m for m in metrics_spec.metrics if _score_of(m) not in scores]
        moved.metrics.extend(m for m in metrics_spec.metrics if m not in keep)
        del metrics_spec.metrics[:]
        metrics_spec.metrics.extend(keep)
        for score in scores & set(metrics_spec.per_slice_thresholds):
            thresholds = moved.per_slice_thresholds[score]
            thresholds.CopyFrom(metrics_spec.per_slice_thresholds[score])
            del metrics_spec.per_slice_thresholds[score]
            for per_slice in thresholds.thresholds:
                per_slice.threshold.ClearField("change_threshold")
    config.metrics_specs.append(moved)


class Executor(tfx_evaluator.Executor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802
        config = config_pb2.EvalConfig()
        proto_utils.json_to_proto(exec_properties[_EVAL_CONFIG], config)
        splits = json_utils.loads(exec_properties.get(standard_component_specs.EXAMPLE_SPLITS_KEY) or "null")
        examples = input_dict[standard_component_specs.EXAMPLES_KEY][0]
        small = drop_small_digit_bounds(config, label_counts(examples, splits or ["eval"]))
        if small:
            logging.info("Digits judged without bounds (fewer eval images than the minimum): %s", small)

        not_compared: set[str] = set()
        baseline = input_dict.get(_BASELINE)
        if baseline and is_nothing_served(baseline[0]):
            logging.info("No model is served yet: the candidate is judged on the absolute bounds alone")
            baseline = None
        if baseline:
            [spec] = config.model_specs
            outputs = signature_outputs(path_utils.serving_model_path(baseline[0].uri), spec.signature_name)
            scores = {_score_of(m) for s in config.metrics_specs for m in s.metrics} - {None}
            not_compared = scores - (outputs or set())
            if outputs is None:
                logging.info("The served model has no %r signature: judged on the absolute bounds", spec.signature_name)
                baseline = None
            elif not_compared:
                logging.info("The served model does not output %s: bounded, not compared", sorted(not_compared))
                candidate_only(config, not_compared)
        if not baseline:
            input_dict = {key: value for key, value in input_dict.items() if key != _BASELINE}

        exec_properties = {**exec_properties, _EVAL_CONFIG: proto_utils.proto_to_json(config)}
        super().Do(input_dict, output_dict, exec_properties)
        blessing = output_dict[standard_component_specs.BLESSING_KEY][0]
        blessing.set_string_custom_property(UNGATED_DIGITS_KEY, json.dumps(small))
        blessing.set_string_custom_property(NOT_COMPARED_KEY, ",".join(sorted(not_compared)) if baseline else "")


class Evaluator(tfx_evaluator_component.Evaluator):
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
