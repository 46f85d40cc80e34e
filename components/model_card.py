"""The model card: ``assets.extra/model_card.md`` (and ``training_curves.png``) in every pushed
version, written by the Pusher from what the run recorded.

Why our own: TFX's model-card toolkit is unmaintained since 2023, and a card a person reads
beside the model should say what this pipeline knows: the data (files, checksums, spans,
counts), every setting, the training record, the evaluation against its bounds overall and per
digit, the served model it was compared with, the anomaly threshold and how many eval images it
flagged, and where it came from (the run, the code). It lives in the SavedModel directory, so it
travels with the version to any serving root (TF Serving ignores ``assets.extra``'s other files).

Every number is read from an artifact of the run, never recomputed here: the Examples'
``ingested`` record, the exported ``vae_config.json``, the Trainer's ``training_record.json``,
TFMA's evaluation and its ``eval_config.json`` (the bounds), the blessing, the ServedModel
lookup. ``serving list --card VERSION`` prints the card.
"""

from __future__ import annotations

import datetime
import io
import json
import os

from tfx.dsl.io import fileio
from tfx.utils import path_utils

from components import datasets
from components.evaluator import evaluation_config, model_names, slice_metrics
from components.idx_example_gen import INGESTED_KEY, SPANS_KEY
from components.served_model import SERVED_VERSION_KEY
from model.export import EXTRA_DIR

CARD_FILE = "model_card.md"
CURVES_PNG = "training_curves.png"
CARD_FILES = tuple(f"{EXTRA_DIR}/{name}" for name in (CARD_FILE, CURVES_PNG))  # not in the model's fingerprint
_SCORES = ("neg_elbo", "reconstruction_error", "kl", "pixel_mse", "anomaly_score", "is_anomaly")
_DIGIT_SCORES = ("neg_elbo", "reconstruction_error", "pixel_mse", "is_anomaly")


def _number(score: str, value: float | None) -> str:
    if value is None:
        return "-"
    if score == "is_anomaly":
        return f"{value:.2%}"
    return f"{value:.4f}" if score == "pixel_mse" else f"{value:.2f}"


def bounds(evaluation_uri: str) -> dict[str, dict[str, dict]]:
    """{slice: {score: {"upper_bound": x, "absolute"/"relative": tolerance}}} from the thresholds
    the evaluation ran with; slice '' is the whole split, '<digit>' a label."""
    found: dict[str, dict[str, dict]] = {}
    for spec in evaluation_config(evaluation_uri).get("metricsSpecs", []):
        for score, thresholds in spec.get("perSliceThresholds", {}).items():
            for threshold in thresholds.get("thresholds", []):
                values = threshold.get("threshold", {})
                rule = {"upper_bound": values.get("valueThreshold", {}).get("upperBound")}
                change = values.get("changeThreshold", {})
                for kind in ("absolute", "relative"):
                    if kind in change:
                        rule[kind] = change[kind]
                for slicing in threshold.get("slicingSpecs", [{}]):
                    name = "".join(slicing.get("featureValues", {}).values())
                    found.setdefault(name, {})[score] = rule
    return found


def _data_section(examples, dataset: str) -> list[str]:
    ingested = json.loads(examples.get_string_custom_property(INGESTED_KEY) or "{}")
    spec = datasets.DATASETS.get(dataset)
    published = set(spec.sha256.values()) if spec else set()
    spans = examples.get_string_custom_property(SPANS_KEY)
    lines = [
        "## Data",
        "",
        f"Dataset `{dataset}`" + (f", spans {spans}" if spans else "") + f"; examples `{examples.uri}`.",
        "",
    ]
    lines += ["| split | records | files, records [start, stop) |", "| --- | --- | --- |"]
    files: dict[str, str] = {}
    for split, entry in sorted(ingested.items()):
        for source in entry["sources"]:
            start, stop = source["rows"]
            names = f"`{source['images']}`, `{os.path.basename(source['labels'])}` [{start}, {stop})"
            lines.append(f"| {split} | {entry['records']} | {names} |")
            files.update({source[kind]: source[f"{kind}_sha256"] for kind in ("images", "labels")})
    lines += ["", "SHA-256 of each file's uncompressed IDX bytes:", ""]
    for path, digest in sorted(files.items()):
        lines.append(
            f"- `{digest}` `{os.path.basename(path)}`" + (" (the published file)" if digest in published else "")
        )
    return lines + [""]


def _settings_section(exported: dict, settings: dict) -> list[str]:
    lines = [
        "## Settings",
        "",
        f"Preset `{settings.get('preset', '?')}`, release policy `{settings.get('policy', '?')}`.",
        "",
    ]
    lines += ["| setting (the model's, then the pipeline's) | value |", "| --- | --- |"]
    lines += [f"| {name} | `{json.dumps(value)}` |" for name, value in sorted(exported.get("config", {}).items())]
    lines += [
        f"| {name} | `{json.dumps(value)}` |" for name, value in sorted(settings.get("pipeline_settings", {}).items())
    ]
    return lines + [""]


def _training_section(record: dict | None) -> list[str]:
    if not record:
        return ["## Training", "", "No training record.", ""]
    epochs, best = record["epochs"], record.get("best_epoch") or {}
    phases = record.get("phase_seconds") or {}
    lines = ["## Training", "", f"{epochs[-1]['epoch'] if epochs else 0} epochs"]
    if "val_neg_elbo" in best:
        lines[-1] += f"; best epoch {best['epoch']}: validation -ELBO {best['val_neg_elbo']:.2f} nats"
    if record.get("warm_start"):
        lines[-1] += f"; weights: {record['warm_start']}"
    if phases:
        lines += ["", "Phases (s): " + ", ".join(f"{name} {value:.1f}" for name, value in phases.items())]
    return lines + ["", f"![training curves]({CURVES_PNG})", ""]


def _change(score: str, value: float | None) -> str:
    return "-" if value is None else ("+" if value >= 0 else "") + _number(score, value)


def _allowed(rule: dict) -> str:
    if "absolute" in rule:
        return f"+{rule['absolute']:g} nats"
    return f"+{rule['relative']:.0%}" if "relative" in rule else "-"


def _evaluation_section(evaluation_uri: str, metrics: dict, blessing, baseline_version: int | None) -> list[str]:
    """The evaluation's own numbers: this model's, the served model's and TFMA's ``<score>_diff``
    (this minus served), against the thresholds of its eval_config.json."""
    compared = "baseline" in model_names(evaluation_uri)
    baseline = slice_metrics(evaluation_uri, "baseline") if compared else {}
    limits = bounds(evaluation_uri)
    overall = metrics.get("", {})
    verdict = "BLESSED" if blessing.get_int_custom_property("blessed") == 1 else "NOT BLESSED"
    lines = ["## Evaluation", "", f"{verdict} on {overall.get('example_count', 0):.0f} eval images"]
    if compared and "neg_elbo_diff" in overall:
        lines[-1] += (
            f", against the served version {baseline_version}: -ELBO "
            f"{_change('neg_elbo', overall['neg_elbo_diff'])} nats (this model minus the served one)."
        )
    else:
        lines[-1] += ", with no served model to compare with: judged on the absolute bounds."
    lines += ["", "| score | this model | bound | served model | change | allowed change |"]
    lines += ["| --- | --- | --- | --- | --- | --- |"]
    for score in _SCORES:
        if score not in overall:
            continue
        rule = limits.get("", {}).get(score, {})
        lines.append(
            f"| {score} | {_number(score, overall[score])} | {_number(score, rule.get('upper_bound'))} | "
            f"{_number(score, baseline.get('', {}).get(score))} | {_change(score, overall.get(f'{score}_diff'))} | "
            f"{_allowed(rule)} |"
        )
    lines += ["", "Per digit, with its bounds (judged where the digit has enough eval images):", ""]
    lines += ["| digit | images | " + " | ".join(_DIGIT_SCORES) + " | -ELBO change |"]
    lines += ["| --- " * (len(_DIGIT_SCORES) + 3) + "|"]
    for digit in sorted((k for k in metrics if k), key=int):
        values = metrics[digit]
        cells = []
        for score in _DIGIT_SCORES:
            bound = limits.get(digit, {}).get(score, {}).get("upper_bound")
            cells.append(_number(score, values.get(score)) + (f" (≤ {_number(score, bound)})" if bound else ""))
        change = _change("neg_elbo", values.get("neg_elbo_diff"))
        lines.append(f"| {digit} | {values.get('example_count', 0):.0f} | " + " | ".join(cells) + f" | {change} |")
    return lines + [""]


def _anomaly_section(exported: dict, overall: dict) -> list[str]:
    calibration = exported.get("anomaly")
    if not calibration:
        return []
    flagged = overall.get("is_anomaly")
    lines = ["## Anomaly detection", ""]
    if calibration["threshold"] == float("inf"):
        lines.append(
            f"No threshold: {calibration['images']} validation images cannot certify a "
            f"{calibration['false_positive_rate']:.2%} false-positive rate."
        )
    else:
        lines.append(
            f"`is_anomaly` = `anomaly_score` > {calibration['threshold']:.4f} (p-value ≤ "
            f"{calibration['false_positive_rate']:.2%}), calibrated on {calibration['images']} validation images."
        )
    if flagged is not None:
        lines.append(f"Measured on the eval split (normal images): {flagged:.2%} flagged.")
    return lines + [""]


def write(
    assets_dir: str,
    *,
    model,
    examples,
    model_run,
    evaluation,
    blessing,
    baseline,
    version: int,
    run: str,
    settings: dict,
) -> list[str]:
    """Writes the card (and its curves PNG) into ``assets_dir``; returns the paths."""
    from model import pictures
    from model.export import read_exported_config
    from model.training_record import read_training_record

    exported = read_exported_config(path_utils.serving_model_path(model.uri))
    record = read_training_record(model_run.uri) if model_run else None
    baseline_version = baseline.get_int_custom_property(SERVED_VERSION_KEY) if baseline else None
    pushed = datetime.datetime.fromtimestamp(version, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# {settings.get('model_name', 'vae-mnist')} version {version}",
        "",
        f"Pushed {pushed} by {run} of pipeline `{settings.get('pipeline_name', '?')}`, "
        f"code `{settings.get('code_revision', '?')}`.",
        "",
    ]
    if examples:
        lines += _data_section(examples, settings.get("dataset", ""))
    lines += _settings_section(exported, settings)
    lines += _training_section(record)
    if evaluation and blessing:
        metrics = slice_metrics(evaluation.uri)  # this model's, read once
        lines += _evaluation_section(evaluation.uri, metrics, blessing, baseline_version or None)
        lines += _anomaly_section(exported, metrics.get("", {}))
    lines += [
        "## Lineage",
        "",
        f"- model: `{model.uri}`",
        *([f"- training record: `{model_run.uri}`"] if model_run else []),
        *([f"- evaluation: `{evaluation.uri}`", f"- blessing: `{blessing.uri}`"] if evaluation and blessing else []),
        *([f"- served model compared with: version {baseline_version}"] if baseline_version else []),
        "",
    ]
    # Through TFX's fileio, not tf.io.gfile: the staging directory may be in S3, which only our
    # fileio plugin writes (components/object_store.py).
    fileio.makedirs(assets_dir)
    card = os.path.join(assets_dir, CARD_FILE)
    with fileio.open(card, "wb") as f:
        f.write("\n".join(lines).encode())
    written = [card]
    if record:
        series = {
            name: [e[key] for e in record["epochs"] if key in e]
            for name, key in (("training -ELBO", "neg_elbo"), ("validation -ELBO", "val_neg_elbo"))
        }
        png = io.BytesIO()
        pictures.curves(series, "-ELBO per epoch (nats)").save(png, format="PNG", optimize=True)
        with fileio.open(os.path.join(assets_dir, CURVES_PNG), "wb") as f:
            f.write(png.getvalue())
        written.append(os.path.join(assets_dir, CURVES_PNG))
    return written


def read(version_dir: str) -> str | None:
    """The card of a pushed version, or None for a version pushed without one."""
    path = os.path.join(version_dir, EXTRA_DIR, CARD_FILE)
    if not fileio.exists(path):
        return None
    with fileio.open(path, "rb") as f:
        return f.read().decode()
