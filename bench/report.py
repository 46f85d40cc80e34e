"""Writes BENCHMARKS.md from bench/results/*.json: the newest result of each benchmark (of each
preset, for model quality), with its method, its machine, the targets and reference numbers.

  .venv/bin/python bench/report.py
"""

from __future__ import annotations

import json
import os
import re

import common
import numpy as np
import pipeline_cost
import training_throughput

REFERENCES = """\
Reference numbers (grey-level MNIST, Bernoulli likelihood, single-sample test negative ELBO unless
said otherwise): a 2-D latent space reaches about 140-155 nats (Keras' convolutional VAE example
ends at a training loss of 146.95 after 30 epochs); a 784-400-20 MLP about 105.6 after 10 epochs
(PyTorch's VAE example). Measured here with plain `model.fit` on in-memory arrays: the tutorial as
written (latent 2, batch 32, 10 epochs) reaches 155.0 nats at ~4.2k examples/s; the same network
for 30 epochs at batch 128, 152.8 nats at ~16k examples/s; with latent 20, 104.3 nats. On
*binarized* MNIST (not comparable to grey-level figures) importance-weighted NLLs are VAE 86.8,
IWAE 82.9, NVAE 78.0 nats."""


def load(name: str) -> list[dict]:
    path = os.path.join(common.RESULTS_DIR, f"{name}.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def verdict(value: float | None, target: float | None, lower_is_better: bool = True) -> str:
    if value is None or target is None:
        return ""
    met = value <= target if lower_is_better else value >= target
    return "met" if met else "**not met**"


def stack_of(result: dict) -> dict:
    """The stack a result measured; results from before stacks were recorded are TFX 1.16's."""
    return result.get("stack") or {"name": "fallback", "tfx": "1.16.0", "python": result["machine"]["python"]}


def machine_line(result: dict) -> str:
    m, s = result["machine"], stack_of(result)
    gpus = ", ".join(m["gpus"]) or "no GPU"
    return f"{result['when']} on {m['cores']} cores ({m['cpu']}), {gpus}, TFX {s['tfx']} on Python {s['python']}"


STACKS = ("fallback", "current")


def newest_per_stack(history: list[dict], keep=lambda r: True) -> dict[str, dict]:
    newest = {}
    for result in history:
        if keep(result):
            newest[stack_of(result)["name"]] = result
    return newest


STACKS_NOTES = """\
What the figures say (2026-12-02, both stacks on one quiet 2-core machine, one after the other):

- Model quality: the current stack's `tutorial` -ELBO is 0.3-0.4 nats higher at both seeds (each
  seed moves it by 0.1 on either stack), while the importance-weighted NLL, the better estimate of
  the model's likelihood, is the same to 0.1 nats: the models are as good, the bound is a little
  looser on TF 2.21 (tf_keras 2.21's kernels and initializer streams differ). Both are inside the
  preset's 150-nat target and its 163.5-nat bound, and every other gate holds on both
  (`tests/test_stack_contract.py`).
- Time: the current stack's data stages are faster (TFDV 1.21's StatisticsGen 7.6 s against
  11.9 s, TFMA 0.52's Evaluator 6.6 s against 9.2 s), so the default run is shorter; its ratio to
  plain `model.fit` is higher only because plain `model.fit` itself is faster on TF 2.21.
- Beam's DirectRunner tries Beam's Prism runner first on both stacks (Beam 2.74 and 2.77,
  `apache_beam/runners/direct/direct_runner.py`): it downloads a Prism binary from GitHub, which
  this machine cannot reach, and falls back to the in-process runner. The attempt costs 0.1 s
  (IdxExampleGen), 1.2 s (StatisticsGen) and 0.7 s (Evaluator) per run here (the pods' logs of
  `tests/test_kubeflow_run.py`); Transform's pipeline is not one Prism takes. Where GitHub is
  reachable, Beam downloads Prism once and runs those stages on it: not measured here.
- Serving: `serving_default` is faster on TF 2.21 (batch 1 p50 0.25 against 0.38 ms)."""


def stacks_section() -> list[str]:
    """The newest measurement of each stack side by side: model quality, the default run's time,
    serving latency (README, "Stacks")."""

    def tutorial(label: str) -> dict[str, dict]:
        return newest_per_stack(
            load("train_quality"), lambda r: r.get("label") == label and r.get("model_chosen_on") == "valid"
        )

    quality, quality_seed1 = tutorial("tutorial"), tutorial("tutorial,seed=1")
    cost = newest_per_stack(load("pipeline_cost"), lambda r: "breakdown" in r)
    serving = newest_per_stack(load("serving_latency"))
    beam_stages = ("IdxExampleGen", "StatisticsGen", "Transform", "Evaluator", "SpanScores")
    rows = [
        ("`tutorial` test -ELBO, one sample (nats)", quality, lambda r: f"{r['test_neg_elbo_single_sample']:.1f}"),
        ("... at the posterior mean", quality, lambda r: f"{r['test_neg_elbo_at_mean']:.1f}"),
        ("... importance-weighted NLL (k=1000, 2,000 images)", quality, lambda r: f"{r['test_iw_nll']:.1f}"),
        ("... epochs run (early stopping on `valid`)", quality, lambda r: f"{r['epochs_run']}"),
        (
            "the same with `--set seed=1`: -ELBO one sample / at the mean / IW NLL",
            quality_seed1,
            lambda r: (
                f"{r['test_neg_elbo_single_sample']:.1f} / {r['test_neg_elbo_at_mean']:.1f} / {r['test_iw_nll']:.1f}"
            ),
        ),
        ("default run, whole (s)", cost, lambda r: f"{r['wall_seconds']:.1f}"),
        ("... of it not an epoch (s)", cost, lambda r: f"{r['not_epoch_seconds']:.1f}"),
        (
            "... Beam stages (s): " + ", ".join(beam_stages),
            cost,
            lambda r: ", ".join(f"{r['breakdown'].get(stage, float('nan')):.1f}" for stage in beam_stages),
        ),
        ("... ratio whole run / plain `model.fit`", cost, lambda r: f"{r['ratio']:.2f}"),
        ("... Trainer examples/s", cost, lambda r: f"{r['trainer_examples_per_second']:,.0f}"),
        ("... the model's test -ELBO at the posterior mean", cost, lambda r: f"{r['test_neg_elbo_at_mean']:.1f}"),
        (
            "`serving_default` batch 1 p50 / p99 (ms)",
            serving,
            lambda r: f"{r['serving_default']['batch1_p50_ms']:.2f} / {r['serving_default']['batch1_p99_ms']:.2f}",
        ),
        (
            "`serving_default` batch 256 (examples/s)",
            serving,
            lambda r: f"{r['serving_default']['batch256_examples_per_second']:,.0f}",
        ),
    ]
    measured = [r for results in (quality, quality_seed1, cost, serving) for r in results.values()]
    if not measured:
        return []

    def version(name: str) -> str:
        found = [stack_of(r) for r in measured if stack_of(r)["name"] == name]
        return f"{name}: TFX {found[-1]['tfx']}, Python {found[-1]['python']}" if found else name

    lines = [
        "",
        "## The two stacks side by side",
        "",
        'The newest measurement on each stack (README, "Stacks"): `bench/train_quality.py --preset tutorial`, '
        "`bench/pipeline_cost.py` and `bench/serving_latency.py`, the current stack's run in the Debian 13 root "
        "(`.ci/debian13 .venv/bin/python bench/...`) on the same machine.",
        "",
        "| | " + " | ".join(version(name) for name in STACKS) + " |",
        "| --- |" + " --- |" * len(STACKS),
    ]
    for label, results, cell in rows:
        lines.append(f"| {label} | " + " | ".join(cell(results[n]) if n in results else "-" for n in STACKS) + " |")
    lines += ["", STACKS_NOTES, "", "Measured:"] + [
        f"- {name}: "
        + "; ".join(
            f"{what} {machine_line(results[name])}"
            for what, results in (("quality", quality), ("run", cost), ("serving", serving))
            if name in results
        )
        for name in STACKS
    ]
    return lines


def cost_section(history: list[dict]) -> list[str]:
    """The whole run's breakdown: the first measured beside the two newest (before and after changes)."""
    lines = ["", "## Whole-pipeline cost (`bench/pipeline_cost.py`)", ""]
    measured = [r for r in history if "breakdown" in r]
    older = [r for r in history if "breakdown" not in r]
    if older:  # measured before the Trainer recorded its phases
        r = older[-1]
        lines += [
            f"Before the breakdown existed ({machine_line(r)}): the whole run {r['wall_seconds']:.1f} s, "
            f"components other than the Trainer {r['other_components_seconds']:.1f} s, the Trainer "
            f"{r['trainer_seconds']:.1f} s of which {r['trainer_epoch_seconds']:.1f} s in epochs.",
            "",
        ]
    if not measured:
        return lines + ["No breakdown measured yet."]
    runs = [measured[0], *measured[1:][-2:]]

    def heading(r: dict) -> str:
        return f"{r['when'][:16]}" + (f" at `{r['commit']}`" if r.get("commit") else "") + " (s)"

    lines += [
        "| stage | " + " | ".join(heading(r) for r in runs) + " |",
        "| --- |" + " --- |" * len(runs),
    ]
    # "the other 68 epochs" and "the other 69 epochs" are one row.
    breakdowns = [
        {re.sub(r"the other \d+ epochs", "the epochs after the first", k): v for k, v in r["breakdown"].items()}
        for r in runs
    ]
    stages = list(dict.fromkeys(stage for b in breakdowns for stage in b))
    for stage in stages:
        cells = [f"{b[stage]:.1f}" if stage in b else "-" for b in breakdowns]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    figures = [
        ("**whole run**", "wall_seconds", "{:.1f}"),
        ("epochs run", "epochs", "{}"),
        ("not an epoch (whole run less the epochs)", "not_epoch_seconds", "{:.1f}"),
        ("first epoch over a later one", "first_epoch_excess_seconds", "{:.1f}"),
        ("plain `model.fit`, same epochs and images", "plain_fit_seconds", "{:.1f}"),
        ("**ratio whole run / plain training**", "ratio", "{:.2f}"),
        ("Trainer examples/s / plain `model.fit`'s", "throughput_ratio", "{:.2f}"),
        ("the model's test -ELBO at the posterior mean (its Evaluator's)", "test_neg_elbo_at_mean", "{:.1f}"),
    ]
    for label, key, form in figures:
        lines.append(f"| {label} | " + " | ".join(form.format(r[key]) if key in r else "-" for r in runs) + " |")
    first = runs[0]
    lines.append(
        "| whole run / the first column's |"
        + "".join(f" {r['wall_seconds'] / first['wall_seconds']:.2f} |" for r in runs)
    )
    r, cost = runs[-1], pipeline_cost
    fraction = r["wall_seconds"] / first["wall_seconds"]
    beam = f"`{' '.join(r['beam_args'])}`" if r["beam_args"] else "with no arguments (the in-process DirectRunner)"
    lines += [
        "",
        f"The `{r['preset']}` preset on full MNIST, no cache, Beam {beam}, one process: the "
        "pipeline, then the same network trained alone with plain `model.fit` for the epochs the Trainer ran. "
        "Rows add up to the whole run: components from ML Metadata's execution records, the Trainer's phases "
        "from its training record (model/training_record.py). Targets (newest): not an epoch <= "
        f"{cost.TARGET_NOT_EPOCH_SECONDS:.0f} s ({verdict(r['not_epoch_seconds'], cost.TARGET_NOT_EPOCH_SECONDS)}), "
        f"ratio <= {cost.TARGET_RATIO} ({verdict(r['ratio'], cost.TARGET_RATIO)}), throughput "
        f">= {cost.TARGET_THROUGHPUT_RATIO} ({verdict(r['throughput_ratio'], cost.TARGET_THROUGHPUT_RATIO, False)}), "
        f"the whole run <= 2/3 of the first column's, on the same machine ({fraction:.2f}: "
        f"{verdict(fraction, cost.TARGET_WHOLE_FRACTION)}). "
        f"Measured {machine_line(r)}.",
    ]
    return lines


def quality_section() -> list[str]:
    newest = {}
    # Only models chosen on the valid split: older results chose their epoch on the test images.
    for result in load("train_quality"):
        if result.get("model_chosen_on") == "valid":
            newest[result["label"]] = result
    if not newest:
        return ["No results yet: `bench/train_quality.py`."]
    lines = [
        "| run | test -ELBO, one sample | at the posterior mean | importance-weighted NLL | reconstruction | KL "
        "| target | examples/s | epochs | Trainer time (budget) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, r in sorted(newest.items()):
        target = r.get("target_nats") if label == r["preset"] else None
        iw = f"{r['test_iw_nll']:.1f} (k={r['iw_k']}, {r['iw_images']} images)" if "test_iw_nll" in r else ""
        budget = f" ({r['budget_minutes']} min)" if r.get("budget_minutes") and label == r["preset"] else ""
        lines.append(
            f"| `{label}` | {r['test_neg_elbo_single_sample']:.1f} | {r['test_neg_elbo_at_mean']:.1f} | {iw} "
            f"| {r['test_reconstruction']:.1f} | {r['test_kl']:.1f} "
            f"| {f'<= {target:.0f} ' + verdict(r['test_neg_elbo_single_sample'], target) if target else ''} "
            f"| {r['train_examples_per_second']:,.0f} | {r['epochs_run']} "
            f"| {r['trainer_wall_seconds'] / 60:.1f} min{budget} |"
        )
    digits = [r for r in newest.values() if "per_digit" in r and r["label"] == r["preset"]]
    if digits:
        lines += ["", "Per digit, test -ELBO with one sample (nats):", ""]
        lines.append("| preset | " + " | ".join(str(d) for d in range(10)) + " |")
        lines.append("| --- |" + " --- |" * 10)
        for r in sorted(digits, key=lambda r: r["preset"]):
            cells = [r["per_digit"][str(d)]["neg_elbo_single_sample"] for d in range(10)]
            lines.append(f"| `{r['preset']}` | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    lines += [
        "",
        "Measured " + machine_line(max(newest.values(), key=lambda r: r["when"])) + ". Trainer times and "
        "examples/s here are as these runs met them, some sharing the cores with other work: speed is "
        "measured in the sections below.",
    ]
    return lines + bounds_section([r for r in digits if "test_reconstruction_error" in r])


def bounds_section(results: list[dict]) -> list[str]:
    """The Evaluator's bounds each preset's figures give (model/bounds.py:calibrated), beside the
    bounds the preset ships with: the check that model/bounds.py follows the measurements."""
    from model.bounds import MARGIN, PRESET_BOUNDS, calibrated

    if not results:
        return []
    lines = [
        "",
        f"Evaluator bounds (`model/bounds.py`): each preset's figures at the posterior mean (what the Evaluator "
        f"measures) plus {MARGIN:.0%}, rounded up. Shipped: the preset's bounds in `model/bounds.py`; "
        "per digit, reconstruction error (nats) / pixel MSE.",
        "",
        "| preset | | -ELBO | reconstruction | pixel MSE | " + " | ".join(str(d) for d in range(10)) + " |",
        "| --- | --- | --- | --- | --- |" + " --- |" * 10,
    ]
    for r in sorted(results, key=lambda r: r["preset"]):
        scores = ("reconstruction_error", "pixel_mse")
        measured = calibrated(
            {"neg_elbo": r["test_neg_elbo_at_mean"], **{s: r[f"test_{s}"] for s in scores}},
            {s: [r["per_digit"][str(d)][s] for d in range(10)] for s in scores},
        )
        for name, bounds in (("measured + margin", measured), ("shipped", PRESET_BOUNDS.get(r["preset"]))):
            if bounds is None:
                continue
            cells = [f"{bounds.neg_elbo:g}", f"{bounds.reconstruction_error:g}", f"{bounds.pixel_mse:g}"]
            cells += [
                f"{rec:g} / {mse:g}"
                for rec, mse in zip(bounds.reconstruction_error_per_digit, bounds.pixel_mse_per_digit, strict=True)
            ]
            lines.append(f"| `{r['preset']}` | {name} | " + " | ".join(cells) + " |")
    return lines


def warm_start_section(result: dict | None) -> list[str]:
    lines = ["", "## Warm start on a new span (`bench/warm_start.py`)", ""]
    if not result:
        return lines + ["No results yet."]
    lines += [
        f"Full MNIST in two spans ({result['span_images']['train']:,} training and {result['span_images']['eval']:,} "
        f"test images each), preset `{result['preset']}`; test -ELBO (one sample) on all 10,000 MNIST test images.",
        "",
        "| run | weights | epochs | Trainer wall time | test -ELBO |",
        "| --- | --- | --- | --- | --- |",
    ]
    runs = {"span 1": "span_1", "span 2, warm": "span_2_warm", "span 2, from scratch": "span_2_scratch"}
    for label, key in runs.items():
        run = result[key]
        weights = "warm" if (run["warm_start"] or "").startswith("warm start") else "scratch"
        lines.append(
            f"| {label} | {weights} | {run['epochs_run']} | {run['trainer_wall_seconds']:.0f} s | "
            f"{run['test_neg_elbo_single_sample']:.1f} |"
        )
    met = "met" if result["claim_met"] else "NOT met"
    lines += [
        "",
        f"Warm minus scratch: {result['warm_minus_scratch_nats']:+.2f} nats at {result['trainer_time_fraction']:.2f} "
        f"of the Trainer time. Target: within 1 nat in at most a third of the time: {met}. "
        f"Measured {machine_line(result)}.",
    ]
    return lines


def newest(name: str) -> dict | None:
    results = load(name)
    return results[-1] if results else None


ANOMALY_NOTES = """\
What was tried, and why the served score is `max_z` (issue 28). Before it, the served score was
`excess_nats` of the 2-D `tutorial` network: mean 0.784, lowest 0.498 (a held-out 9), Fashion-MNIST
0.995, on one seed of the same protocol.

- Reconstruction alone cannot tell a digit the model never saw: the raw likelihood (`neg_elbo`,
  `iw_nll` with 64 importance samples, `reconstruction_error`) ranks a held-out 1 *below* the known
  digits (a 1 is mostly background, which every model codes cheaply), and a 20-D network, which
  reconstructs better, does so more (0.03 here). Corrections for complexity help but trade one
  failure for another: Serra et al.'s PNG correction as written (`png_corrected`) ranks images by
  simplicity (on the 2-D network: 0.553 mean, Fashion-MNIST 0.085); `excess_nats` (beyond the
  grey-level entropy floor) lifts the 1s only part of the way; a fitted slope (`complexity_residual`)
  rewards complexity and lets grey garments pass.
- `latent_mixture_nll`, where the image's code lies among the training images' codes (a Gaussian
  mixture of 10, 20 or 40 components over them, the size chosen on half the validation codes: 40
  every time here, the largest tried), is the best single score on held-out digits: a digit the
  model never saw is coded between the clusters of the digits it knows. With 2-D codes it is not:
  there the held-out digit lands inside the clusters it resembles (`--fast`, below: 0.367). It
  misses far anomalies (Fashion-MNIST 0.915): clothes are coded near the digits.
- `mixture_elbo` / `mixture_excess`, the ELBO with that mixture as its prior: the reconstruction
  term dominates them, and they rank like `neg_elbo` / `excess_nats`.
- `likelihood_ratio` (Ren et al., NeurIPS 2019: -ELBO minus that of a background model, the same
  network trained on the training images with 20 % of their pixels replaced by noise; `--fast`,
  one seed, `--background`): mean 0.478, lowest 0.263, Fashion-MNIST 0.998. What both models
  explain cancels, and for a near anomaly that is almost everything: it separates other datasets,
  not digits.
- Fusions of the two views, each as a robust z-score against half the validation images:
  `max_z` (served), `sum_z`, and `fisher` (conformal p-values, -sum log p; p-values saturate at
  1/(n+1), so far anomalies tie). The maximum keeps what each view catches and adds only the other
  view's tail of normal images to the false alarms; a sum lets one view's ordinary spread drown the
  other's signal (the 1s: 0.480). The first fusion paired `excess_nats` with the mixture
  (`--fast`: Fashion-MNIST 0.986, short of the far check's 0.99); the reconstruction error itself
  catches clothes better, and in a maximum its blindness to simple digits costs nothing. That
  pairing was chosen among three on `--fast` test AUROCs (a design choice, like the served score
  itself); each model's mixture size, z-scores, p-values and threshold come from its validation
  images alone.

Recall at a strict threshold stays low for the hardest digits (a held-out 9 or 1: a few percent
at 1 % false positives): the ranking is good on average, but the most familiar-looking
held-out digits overlap the tail of normal images. On the seen digits' test images the calibrated
1 % threshold flags 0.8-1.2 % overall and at most 2.2-2.7 % of any one digit (test images come from
other writers than the validation images).
Budget: each model trains at most 20 epochs (`--set epochs=20`; the preset trains up to 60, with
early stopping) so that the 30 models fit in about an hour on 2 cores; `--fast` (10,000 images, 10
epochs) runs in minutes. The machine was shared with the test suite during the recorded full run
(AUROCs do not depend on it; its training minutes are not a speed measurement)."""

ANOMALY_TARGET = (0.90, 0.75)  # the served score's mean and lowest AUROC over the ten held-out digits (issue 28)

LATENT_NOTES = """\
Every candidate in fast mode, per network. The `quality` and `tutorial` rows were measured before
the served fusion paired the reconstruction error with the mixture: their `fisher`, `max_z` and
`sum_z` fuse `excess_nats` instead (the `detector` rows: the served definition). Earlier trial
runs with fixed mixture sizes (10, 20 and 50 components, `quality`, seed 0: mean 0.856, 0.899 and
0.906; lowest 0.709, 0.861, 0.773) were read on test images; they only explain why the size is
chosen on validation codes, and are not in the results file."""


def anomaly_presets_section(history: list[dict]) -> list[str]:
    """The presets side by side in fast mode (the newest fast run of each): which network to serve
    for anomaly detection."""
    newest = {}
    for result in history:
        if result.get("fast") and "summary" in result:
            overrides = {k: v for k, v in result["config"].items() if k == "latent_dim"}
            newest[result["preset"] + "".join(f", {k}={v}" for k, v in overrides.items())] = result
    if not newest:
        return []
    lines = [
        "",
        "### Which network for anomaly detection (`--fast`)",
        "",
        "The same measurement for each preset in fast mode (10,000 training images, 10 epochs"
        + (
            "; the conv `latent2` without the importance-weighted scores, which decode 64 times per image"
            if any(r["preset"] == "latent2" for r in newest.values())
            else ""
        )
        + "): the served score's AUROC over the ten held-out digits (the mean over seeds, one model per digit "
        "and seed), and the raw -ELBO's for comparison; "
        "Fashion-MNIST where Debian's dataset-fashion-mnist was installed.",
        "",
        "| preset | latent | seeds | served mean | served lowest (digit) | served on Fashion-MNIST | -ELBO mean "
        "| -ELBO lowest | training minutes per seed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, r in sorted(newest.items(), key=lambda item: -item[1]["summary"][item[1]["served"]]["mean"]):
        served, raw = r["summary"][r["served"]], r["summary"]["neg_elbo"]
        lowest = min(r["per_digit"], key=lambda d: r["per_digit"][d]["auroc"][r["served"]])
        minutes = sum(d["train_seconds"] for d in r["per_digit"].values()) / 60
        fashion = f"{served['fashion_mean']:.3f}" if "fashion_mean" in served else "-"
        lines.append(
            f"| `{label}` | {r['config']['latent_dim']} | {r.get('seeds', 1)} | {served['mean']:.3f} (`{r['served']}`) "
            f"| {served['min']:.3f} ({lowest}) "
            f"| {fashion} | {raw['mean']:.3f} "
            f"| {raw['min']:.3f} | {minutes:.0f} |"
        )
    lines += ["", f"Measured {machine_line(max(newest.values(), key=lambda r: r['when']))}."]
    # Every candidate of the newest fast runs that measured them all (mean, lowest, Fashion-MNIST).
    measured = {label: r for label, r in newest.items() if "latent_mixture_nll" in r["summary"]}
    if measured:
        labels = sorted(measured)
        lines += [
            "",
            LATENT_NOTES,
            "",
            "| score | " + " | ".join(f"`{label}`: mean / lowest / Fashion-MNIST" for label in labels) + " |",
            "| --- " * (len(labels) + 1) + "|",
        ]
        for name in measured[labels[0]]["summary"]:
            cells = []
            for label in labels:
                figures = measured[label]["summary"].get(name)
                far = f" / {figures['fashion_mean']:.3f}" if figures and "fashion_mean" in figures else ""
                cells.append(f"{figures['mean']:.3f} / {figures['min']:.3f}{far}" if figures else "-")
            lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return lines


def served_detail(result: dict) -> list[str]:
    """The served score per held-out digit: AUROC with its spread over seeds, AUPRC beside the
    prevalence (chance), recall at 1 % and 5 % false positives, and what the calibrated threshold
    flags of the held-out digit and, at most, of any seen digit."""
    served = result["served"]
    rows = [
        "| held out | AUROC (spread) | AUPRC (prevalence) | recall at 1 % FPR | at 5 % FPR "
        "| flagged: held-out digit | flagged: seen digits, highest | Fashion-MNIST flagged |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for digit, d in result["per_digit"].items():
        seen = max(v for k, v in d["flagged_per_digit"].items() if k != digit)
        far = f"{d['fashion_flagged']:.1%}" if "fashion_flagged" in d else "-"
        rows.append(
            f"| {digit} | {d['auroc'][served]:.3f} ({d['auroc_spread'][served]:.3f}) | {d['auprc']:.3f} "
            f"({d['prevalence']:.3f}) | {d['recall_at_fpr']['0.01']:.1%} | {d['recall_at_fpr']['0.05']:.1%} "
            f"| {d['held_out_flagged']:.1%} | {seen:.1%} | {far} |"
        )
    return rows


def anomaly_section(result: dict | None) -> list[str]:
    """One row per candidate score: its AUROC for each held-out digit, the mean, the lowest, and on
    Fashion-MNIST; then the served score in detail and what its threshold flags."""
    lines = ["", "## Anomaly detection (`bench/anomaly_auroc.py`)", ""]
    if not result or "summary" not in result:
        return lines + ["No results yet."]
    digits = list(result["per_digit"])
    config = result["config"]
    seeds = result.get("seeds", 1)
    schedule = f"{config['epochs']} epochs at most" + (" (--fast: 10,000 training images)" if result["fast"] else "")
    lines += [
        f"The `{result['preset']}` VAE (latent {config['latent_dim']}, {schedule}) trained without each digit in "
        f"turn, {seeds} seed{'s' if seeds > 1 else ''} per digit; each candidate score of `model/anomaly.py` ranks "
        "the test images, and the AUROC says how well the held-out digit comes first (0.5: chance), the mean "
        "over seeds. Last column: the same models ranking 2,000 Fashion-MNIST test images against MNIST's. "
        "The served score is in bold.",
        "",
        "| score | " + " | ".join(digits) + " | mean | lowest | Fashion-MNIST |",
        "| --- " * (len(digits) + 4) + "|",
    ]
    for name, figures in result["summary"].items():
        label = f"**`{name}`**" if name == result["served"] else f"`{name}`"
        cells = [f"{result['per_digit'][d]['auroc'][name]:.3f}" for d in digits]
        far = f"{figures['fashion_mean']:.3f}" if "fashion_mean" in figures else "-"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {figures['mean']:.3f} | {figures['min']:.3f} | {far} |")
    served = result["summary"][result["served"]]
    target_mean, target_min = ANOMALY_TARGET
    met = served["mean"] >= target_mean and served["min"] >= target_min
    per_digit = result["per_digit"].values()
    false_positives = [d["test_false_positive_rate"] for d in per_digit]
    flagged = [d["held_out_flagged"] for d in per_digit]
    fashion = [d["fashion_flagged"] for d in per_digit if "fashion_flagged" in d]
    best = max(result["summary"], key=lambda n: result["summary"][n]["mean"])
    lines += [
        "",
        f"Target for the served score: mean AUROC at least {target_mean}, no digit below {target_min}: "
        f"{'met' if met else 'not met'} (mean {served['mean']:.3f}, lowest {served['min']:.3f}; the best mean "
        f"of any candidate: `{best}`, {result['summary'][best]['mean']:.3f}).",
        f"At the threshold calibrated on each model's validation split for "
        f"{config['anomaly_false_positive_rate']:.0%}, the served score flags "
        f"{min(false_positives):.1%}-{max(false_positives):.1%} of the nine seen digits' test images, "
        f"{np.mean(flagged):.1%} of the held-out digit's on average"
        + (f", and {np.mean(fashion):.1%} of Fashion-MNIST's" if fashion else "")
        + f". Measured {machine_line(result)}: "
        f"{sum(d['train_seconds'] for d in per_digit) * seeds / 60:.0f} minutes of training for the "
        f"{len(digits) * seeds} models.",
    ]
    if all("auprc" in d for d in per_digit):
        lines += ["", f"The served score (`{result['served']}`) per held-out digit, means over seeds:", ""]
        lines += served_detail(result)
    lines += ["", ANOMALY_NOTES]
    return lines


SERVING_PATHS = {
    "serving_default": "`serving_default` (Transform + checks + all outputs)",
    "score_tf_example": "`score_tf_example` (tf.Example parsing + the scores)",
    "raw_keras": "raw Keras encoder + decoder",
}


def serving_section(history: list[dict]) -> list[str]:
    """The newest measurement of each model; and every pair of consecutive runs on one stack that
    measured a model exported without, then with, the anomaly detector (issue 28), as ratios."""
    lines = ["", "## Serving (`bench/serving_latency.py`)", ""]
    if not history:
        return lines + ["No results yet."]
    models = {r["model_dir"]: r for r in history}  # the newest run of each model
    runs = sorted(models.values(), key=lambda r: r["when"])[-2:]
    lines += ["| model | path | batch 1 p50 | batch 1 p99 | batch 256 throughput |", "| --- | --- | --- | --- | --- |"]
    for run in runs:
        for key, label in SERVING_PATHS.items():
            if key in run:
                t = run[key]
                lines.append(
                    f"| `{run['model_dir']}` ({run['model_bytes'] / 1e6:.1f} MB) | {label} "
                    f"| {t['batch1_p50_ms']:.2f} ms | {t['batch1_p99_ms']:.2f} ms "
                    f"| {t['batch256_examples_per_second']:,.0f} examples/s |"
                )
    lines += [
        "",
        f"In-process. Target: p50 at batch 1 under 2 ms "
        f"({verdict(runs[-1]['serving_default']['batch1_p50_ms'], 2.0)}). Measured {machine_line(runs[-1])}.",
    ]
    pairs = [
        (a, b)
        for a, b in zip(history, history[1:], strict=False)
        if "/before/" in a["model_dir"] and "/after/" in b["model_dir"] and a["stack"] == b["stack"]
    ]
    if pairs:
        ratios = [
            f"{b['stack']['name']} "
            + " / ".join(
                f"x{b[k]['batch1_p50_ms'] / a[k]['batch1_p50_ms']:.2f}" for k in ("serving_default", "score_tf_example")
            )
            for a, b in pairs
        ]
        worst = max(
            b[k]["batch1_p50_ms"] / a[k]["batch1_p50_ms"]
            for a, b in pairs
            for k in ("serving_default", "score_tf_example")
        )
        lines += [
            "",
            "`before` and `after` are the same `detector` network (the pushed model of the `train_quality` run), "
            "exported by the code before issue 28 (the -ELBO beyond the entropy floor and its threshold) and with "
            "the anomaly detector (the latent mixture, the z-scores and the conformal p-value in the graph). "
            f"Batch-1 p50 after over before, `serving_default` then `score_tf_example`, each pair run back to "
            f"back: {', '.join(ratios)}. The budget is x2 ({'met' if worst <= 2 else 'NOT met'}, at worst "
            f"x{worst:.2f}). The fallback's in-process latency varies between repeats of one model here "
            "(0.35-0.62 ms), more than the detector adds.",
        ]
    return lines


def main() -> None:
    sections = [
        "# Benchmarks",
        "",
        "Generated by `bench/report.py` from `bench/results/*.json`; each figure is the newest run of its "
        "benchmark. Re-run a benchmark, then this script, to refresh it.",
        "",
        "## Model quality (`bench/train_quality.py`)",
        "",
        "Each preset is trained on MNIST's training images through the TFX Trainer (the whole pipeline, "
        "`LocalDagRunner`): 55,000 to fit, the last 5,000 (the `valid` split) for early stopping and the "
        "learning-rate schedule. The exported SavedModel then scores the 10,000 test images, which "
        "played no part in training or model choice: the "
        "negative ELBO with one posterior sample (what the model trains on), at the posterior mean (what "
        "`serving_default` returns), and the importance-weighted (IWAE) estimate of the negative "
        "log-likelihood, all in nats per image.",
        "",
        *quality_section(),
        "",
        REFERENCES,
    ]
    throughput = newest("training_throughput")
    sections += stacks_section()
    sections += ["", "## Training throughput (`bench/training_throughput.py`)", ""]
    if throughput:
        sections += [
            f"The `{throughput['preset']}` network at batch {throughput['config']['batch_size']}: the TFX "
            f"Trainer trains at {throughput['tfx_trainer_examples_per_second']:,.0f} examples/s, plain "
            f"`model.fit` on NumPy arrays in the same process at {throughput['plain_fit_examples_per_second']:,.0f}: "
            f"a ratio of {throughput['ratio']:.2f} (target >= {training_throughput.TARGET_RATIO}: "
            f"{verdict(throughput['ratio'], training_throughput.TARGET_RATIO, False)}). "
            f"The Trainer's fixed cost outside its epochs (loading the transformed split, building, exporting) "
            f"is {throughput['trainer_fixed_seconds']:.1f} s. Measured {machine_line(throughput)}.",
        ]
    else:
        sections.append("No results yet.")
    sections += cost_section(load("pipeline_cost"))
    sections += serving_section(load("serving_latency"))
    sections += warm_start_section(newest("warm_start"))
    full = [r for r in load("anomaly_auroc") if not r.get("fast")]
    sections += anomaly_section(full[-1] if full else None)
    sections += anomaly_presets_section(load("anomaly_auroc"))
    path = os.path.join(common.REPO, "BENCHMARKS.md")
    with open(path, "w") as f:
        f.write("\n".join(sections) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
