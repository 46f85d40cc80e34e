"""The end of a run in a few lines: each component's state and time, how training went, what the
Evaluator measured, whether the model was blessed (and if not, why), and where it was pushed."""

from __future__ import annotations

import json
import math
import os

from components.evaluator import model_names, slice_metrics
from components.served_model import SERVED_VERSION_KEY
from components.serving_layout import CANARY_LABEL, STABLE_LABEL, is_complete, pinned_version, served_version
from pipeline import stack
from pipeline.run_record import ComponentRun

_DIGIT_LINES = 3
_LABELS = {"neg_elbo": "-ELBO"}


def _custom(artifact, name: str):
    value = artifact.custom_properties.get(name)
    if value is None:
        return None
    return value.string_value or value.int_value


def format_summary(run_name: str, components: list[ComponentRun]) -> str:
    """The table of a run, headed by the stack it ran on: every component with its state and wall time."""
    lines = [f"Run {run_name} on {stack.describe()}:"]
    width = max((len(c.node) for c in components), default=0)
    for c in components:
        lines.append(f"  {c.node:<{width}}  {c.state:<8} {c.seconds:7.1f} s")
    if components:
        lines.append(f"  {'all components':<{width}}  {'':<8} {sum(c.seconds for c in components):7.1f} s")
    return "\n".join(lines)


def training_lines(trainer: ComponentRun) -> list[str]:
    from model.training_record import read_training_record

    model_run = trainer.output("model_run")
    record = model_run and read_training_record(model_run.uri)
    if not record:
        return []
    epochs, best = record["epochs"], record["best_epoch"]
    line = f"Training: {len(epochs)} epochs, {record['examples_per_second'] or 0:,.0f} examples/s"
    if best and "val_neg_elbo" in best:
        line += f"; best epoch {best['epoch']}: validation -ELBO {best['val_neg_elbo']:.1f} nats (one sample)"
    lines = [line] + ([f"  weights: {record['warm_start']}"] if "warm_start" in record else [])
    return lines + time_lines(record) + anomaly_lines(trainer)


def time_lines(record: dict) -> list[str]:
    """Where the Trainer's time went: its epochs, and its phases outside them (read, build,
    calibrate, export)."""
    phases, epochs = dict(record.get("phase_seconds") or {}), [e["seconds"] for e in record["epochs"]]
    if not phases or not epochs:
        return []
    phases["fit"] = phases.get("fit", 0.0) - sum(epochs)  # fit's own set-up and callbacks
    outside = ", ".join(f"{name} {seconds:.1f}" for name, seconds in phases.items())
    return [
        f"  time: epochs {sum(epochs):.1f} s (the first, which traces the graph, {epochs[0]:.1f} s); "
        f"outside them {sum(phases.values()):.1f} s ({outside})"
    ]


def anomaly_lines(trainer: ComponentRun) -> list[str]:
    """The anomaly threshold the Trainer calibrated (recorded in the exported model; model/detector.py)."""
    from tfx.utils import path_utils

    from model.export import read_exported_config

    model = trainer.output("model")
    calibration = model and read_exported_config(path_utils.serving_model_path(model.uri)).get("anomaly")
    if not calibration:
        return []
    rate, images = calibration["false_positive_rate"], calibration["images"]
    if calibration["threshold"] == float("inf"):
        return [f"  no anomaly threshold: {images:,} validation images cannot certify a {rate:.1%} false-positive rate"]
    return [
        f"  anomaly threshold: anomaly_score > {calibration['threshold']:.2f} (p-value <= {rate:.1%}, "
        f"calibrated on {images:,} validation images)"
    ]


def span_lines(span_scores: ComponentRun | None, drift_gate: ComponentRun | None) -> list[str]:
    """What the served model made of the new span, and what the drift gate compared."""
    from components.drift_gate import DRIFT_FILE
    from components.span_scores import HISTOGRAM_PNG, REPORT_FILE
    from model.pictures import LEAST_ANOMALOUS_PNG, MOST_ANOMALOUS_PNG

    scores = span_scores and span_scores.output("scores")
    if not scores:
        return []
    with open(os.path.join(scores.uri, REPORT_FILE)) as f:
        report = json.load(f)
    where = f"span {report['span']}" if report["span"] else "the input"
    if not report.get("score"):
        lines = [f"Scores: nothing is served yet; {report['images']:,} images of {where} summarized ({scores.uri})"]
    else:
        threshold = (
            f"{report['above_threshold']:,} above the model's threshold"
            if report.get("above_threshold") is not None
            else "the served model has no anomaly threshold"
        )
        lines = [
            f"Scores of {where} by served version {report['scored_by']}: {report['images']:,} images, "
            f"{report['score']} median {report['median']:.1f}, 99th percentile {report['p99']:.1f}; {threshold}",
            f"  {os.path.join(scores.uri, 'scores.parquet')}, {MOST_ANOMALOUS_PNG}, {LEAST_ANOMALOUS_PNG}, "
            f"{HISTOGRAM_PNG}",
        ]
    drift = drift_gate and drift_gate.output("report")
    if drift:
        with open(os.path.join(drift.uri, DRIFT_FILE)) as f:
            result = json.load(f)
        if result["compared_with"] is None:
            lines.append("Drift gate: nothing earlier to compare with")
        else:
            drifted = [c["feature"] for c in result["comparisons"] if c["drifted"]]
            verdict = f"drift in {', '.join(drifted)} ACCEPTED (--accept-drift)" if drifted else "no drift"
            lines.append(f"Drift gate: span {result['span']} against span {result['compared_with']}: {verdict}")
    return lines


def evaluation_lines(evaluator: ComponentRun, served_version: int | None = None) -> list[str]:
    import tensorflow_model_analysis as tfma

    from components.evaluator import NOT_COMPARED_KEY, UNGATED_DIGITS_KEY

    evaluation, blessing = evaluator.output("evaluation"), evaluator.output("blessing")
    if not evaluation or not blessing:
        return []
    has_baseline = "baseline" in model_names(evaluation.uri)
    metrics = slice_metrics(evaluation.uri)
    overall = metrics.pop("", {})
    lines = [
        f"Evaluation on {overall.get('example_count', 0):,.0f} eval images (scores at the posterior mean): "
        f"-ELBO {overall.get('neg_elbo', float('nan')):.1f} nats = reconstruction "
        f"{overall.get('reconstruction_error', float('nan')):.1f} + KL {overall.get('kl', float('nan')):.1f}; "
        f"pixel MSE {overall.get('pixel_mse', float('nan')):.4f}"
    ]
    if "is_anomaly" in overall:
        lines.append(f"  anomalies flagged by the model's threshold: {overall['is_anomaly']:.1%} of the eval images")
    by_digit = sorted(((v["neg_elbo"], k) for k, v in metrics.items() if "neg_elbo" in v), reverse=True)
    if by_digit:
        worst = ", ".join(f"{digit} ({value:.1f})" for value, digit in by_digit[:_DIGIT_LINES])
        best = ", ".join(f"{digit} ({value:.1f})" for value, digit in by_digit[-_DIGIT_LINES:][::-1])
        lines.append(f"  hardest digits: {worst}; easiest: {best}")
    baseline = slice_metrics(evaluation.uri, "baseline") if has_baseline else {}
    if "neg_elbo" in baseline.get("", {}):
        diff = overall["neg_elbo"] - baseline[""]["neg_elbo"]
        served = f"the served model (version {served_version})" if served_version else "the served model"
        lines.append(f"  against {served}: {baseline['']['neg_elbo']:.1f} nats, change {diff:+.2f}")
    elif not has_baseline:
        lines.append("  no model is served yet: judged on the absolute bounds alone")
    not_compared = _custom(blessing, NOT_COMPARED_KEY)
    if not_compared:
        missing = ", ".join(not_compared.split(","))
        lines.append(f"  the served model does not output {missing}: measured for this model alone, not compared")
    ungated = json.loads(_custom(blessing, UNGATED_DIGITS_KEY) or "{}")
    if ungated:
        few = ", ".join(f"{digit} ({count})" for digit, count in ungated.items())
        lines.append(f"  too few eval images for per-digit bounds: digits {few}")

    if _custom(blessing, "blessed") == 1:
        lines.append("BLESSED")
        return lines
    validation = tfma.load_validation_result(evaluation.uri)
    reasons = []
    for per_slice in sorted(validation.metric_validations_per_slice, key=lambda s: _slice_name(s.slice_key)):
        slice_name = _slice_name(per_slice.slice_key)  # '' (the whole split) sorts first
        for failure in per_slice.failures:
            reasons.append(_reason(failure, slice_name, baseline.get(slice_name, {})))
    reasons += [f"digit {_slice_name(spec)}: no eval images" for spec in validation.missing_slices]
    reasons = list(dict.fromkeys(reasons))
    if not reasons:
        return [*lines, f"NOT BLESSED: see {evaluation.uri}"]
    failed = f"{len(reasons)} threshold{'s' if len(reasons) > 1 else ''} failed"
    return [*lines, f"NOT BLESSED: {failed}", *(f"  {reason}" for reason in reasons)]


def _slice_name(slice_key_or_spec) -> str:
    """'' for the whole split, '<digit>' for a label slice (a SliceKey or a SlicingSpec proto)."""
    if hasattr(slice_key_or_spec, "single_slice_keys"):
        return "".join(str(getattr(key, key.WhichOneof("kind"))) for key in slice_key_or_spec.single_slice_keys)
    return "".join(slice_key_or_spec.feature_values.values())


def _value(score: str, value: float) -> str:
    return f"{value:.4f}" if score == "pixel_mse" else f"{value:.1f}"


def _reason(failure, slice_name: str = "", baseline: dict | None = None) -> str:
    """One failed threshold in words, e.g. 'digit 1: reconstruction_error 166.2 is above the bound 155.5'."""
    key, threshold = failure.metric_key, failure.metric_threshold
    value = failure.metric_value.double_value.value
    where = f"digit {slice_name}: " if slice_name else ""
    label = _LABELS.get(key.name, key.name)
    if failure.message:  # e.g. TFMA's "Metric not found."
        return f"{where}{label}: {failure.message.strip()}"
    if math.isnan(value):
        return f"{where}{label} is NaN{' against the served model' if key.is_diff else ''}"
    if key.is_diff:
        change = threshold.change_threshold
        if change.HasField("relative") and (baseline or {}).get(key.name):
            return (
                f"{where}{key.name} is {value / baseline[key.name]:+.1%} against the served model "
                f"(allowed: up to {change.relative.value:+.0%})"
            )
        allowed = change.absolute.value
        return f"{where}{key.name} is {value:+.2f} nats against the served model (allowed: up to {allowed:+.2f})"
    if threshold.value_threshold.HasField("upper_bound"):
        bound = threshold.value_threshold.upper_bound.value
        return f"{where}{key.name} {_value(key.name, value)} is above the bound {_value(key.name, bound)}"
    return f"{where}{key.name}: threshold not met"


def push_lines(pusher: ComponentRun, serving_model_dir: str) -> list[str]:
    from components.pusher import ALREADY_SERVED_KEY, LABELS_KEY, PINNED_KEY

    pushed = pusher.output("pushed_model")
    if pushed and _custom(pushed, "pushed") == 1:
        lines = [f"Pushed: {_custom(pushed, 'pushed_destination')}"]
        labels = json.loads(_custom(pushed, LABELS_KEY) or "{}")
        version = int(_custom(pushed, "pushed_version") or 0)
        if labels.get(CANARY_LABEL) == version:
            lines.append(
                f"  labelled canary beside stable version {labels[STABLE_LABEL]} "
                "(vae-mnist serving promote, or predict --label canary to try it)"
            )
        elif labels.get(STABLE_LABEL) == version:
            lines.append("  labelled stable (the first release of this model)")
        elif labels:
            held = ", ".join(f"{label} {v}" for label, v in sorted(labels.items()))
            lines.append(f"  release labels hold ({held}): not loaded (vae-mnist serving unpin serves the newest)")
        pinned = _custom(pushed, PINNED_KEY)
        if pinned and not is_complete(serving_model_dir, pinned):
            lines.append(f"  models.config pins version {pinned}, which does not exist: TF Serving serves nothing")
            lines.append("  (vae-mnist serving unpin, or pin a version that `vae-mnist serving list` shows)")
        elif pinned:
            lines.append(f"  TF Serving stays on pinned version {pinned} (vae-mnist serving unpin)")
        return lines
    if pushed and _custom(pushed, ALREADY_SERVED_KEY):
        return [f"Not pushed: this model is already served as version {_custom(pushed, ALREADY_SERVED_KEY)}"]
    served, pinned = served_version(serving_model_dir), pinned_version(serving_model_dir)
    if served is None and pinned is not None:
        kept = f"models.config pins version {pinned}, which does not exist: TF Serving serves nothing"
    else:
        kept = f"TF Serving keeps serving version {served}" if served is not None else "nothing is being served yet"
    return [f"Not pushed: {kept} ({serving_model_dir})"]


def outcome_lines(components: dict[str, ComponentRun], serving_model_dir: str) -> list[str]:
    lines = span_lines(components.get("SpanScores"), components.get("DriftGate"))
    if "Trainer" in components:
        lines += training_lines(components["Trainer"])
    if "Evaluator" in components and components["Evaluator"].state in ("ran", "cached"):
        lookup = components.get("ServedModel")
        baseline_version = lookup and lookup.output("model") and _custom(lookup.output("model"), SERVED_VERSION_KEY)
        lines += evaluation_lines(components["Evaluator"], baseline_version or None)
    pictures = components.get("ModelPictures")
    if pictures and pictures.output("pictures_dir"):
        lines.append(f"Pictures: {pictures.output('pictures_dir').uri}")
    if "Pusher" in components and components["Pusher"].state in ("ran", "cached"):
        lines += push_lines(components["Pusher"], serving_model_dir)
    return lines
