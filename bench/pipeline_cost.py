"""Where a whole pipeline run's time goes on full MNIST, beside the training alone.

  .venv/bin/python bench/pipeline_cost.py [--preset detector] [--set epochs=3] [--beam-arg ...]

One process, no cache, nothing served (its output directory is emptied first): first the
pipeline, as ``vae-mnist run`` runs it (``run_locally``, the same progress and summary; every
component's wall time from ML Metadata's execution records; inside the Trainer, the phases of
run_fn and every epoch from its training_record.json), then the same model trained alone with
plain ``model.fit`` on in-memory arrays for exactly the epochs the Trainer ran, on the same
training and validation images (bench/common.py:plain_fit).

Figures: the breakdown; what is not an epoch (the whole run less the Trainer's epochs); the ratio
whole run / plain training; the Trainer's steady examples/s over plain ``model.fit``'s; and the
model's test -ELBO at the posterior mean, as the run's Evaluator measured it.
Results are printed and appended to bench/results/pipeline_cost.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time

import common  # (first: sets up paths and quiet logs)

TARGET_NOT_EPOCH_SECONDS = 25.0  # everything that is not an epoch
TARGET_RATIO = 1.25  # whole run / plain training
TARGET_THROUGHPUT_RATIO = 0.95  # the Trainer's examples/s / plain model.fit's
TARGET_WHOLE_FRACTION = 2 / 3  # the whole run / the first one measured on the same machine

PHASES = {  # model/trainer.py:run_fn's phases, as the table names them
    "read": "read the transformed splits",
    "build": "build the network (and warm start)",
    "fit": "fit",
    "calibrate": "calibrate the anomaly threshold",
    "export": "export the SavedModel",
}


def breakdown(wall: float, component_seconds: dict[str, float], record: dict) -> list[tuple[str, float]]:
    """(stage, seconds) rows that add up to ``wall``: orchestration, each component, and inside the
    Trainer the TFX executor around run_fn, run_fn's phases, and the epochs inside fit."""
    phases = record.get("phase_seconds", {})
    epochs = [e["seconds"] for e in record["epochs"]]
    rows = [
        (
            "orchestration (start-up, ML Metadata, drivers; outside every component)",
            wall - sum(component_seconds.values()),
        )
    ]
    for node, seconds in component_seconds.items():
        if node != "Trainer":
            rows.append((node, seconds))
            continue
        rows.append(("Trainer: TFX executor around run_fn", seconds - sum(phases.values())))
        for name, label in PHASES.items():
            if name == "fit":
                rows.append(("Trainer: first epoch (traces the graph)", epochs[0]))
                rows.append((f"Trainer: the other {len(epochs) - 1} epochs", sum(epochs[1:])))
                rows.append(
                    ("Trainer: fit outside its epochs (set-up, callbacks, best weights)", phases["fit"] - sum(epochs))
                )
            elif name in phases:
                rows.append((f"Trainer: {label}", phases[name]))
    return rows


def main() -> None:
    from components import evaluator
    from model.config import VaeConfig
    from model.training_record import read_training_record
    from pipeline import summary
    from pipeline.config import DEFAULT_BEAM_ARGS, PipelineConfig
    from pipeline.local_runner import run_locally

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="detector")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON")
    parser.add_argument("--beam-arg", action="append", help="Beam arguments (default: the pipeline's)")
    args = parser.parse_args()
    splits = common.mnist_splits()  # also fetches MNIST into data/, before the clock starts
    output_dir = os.path.join(common.OUTPUTS_DIR, "pipeline_cost")
    # A first run, as on a fresh install: a model served by an earlier run here would be scored
    # against and compared with, which a first run does not do.
    shutil.rmtree(output_dir, ignore_errors=True)
    config = PipelineConfig(
        data_root=os.path.join(common.REPO, "data"),
        output_dir=output_dir,
        preset=args.preset,
        vae_overrides=VaeConfig.parse_overrides(args.set),
        beam_args=tuple(args.beam_arg) if args.beam_arg else DEFAULT_BEAM_ARGS,
        enable_cache=False,
    )
    started = time.perf_counter()
    runs = run_locally(config)
    wall = time.perf_counter() - started
    print("\n".join(summary.outcome_lines(runs, config.serving_model_dir)))  # what `vae-mnist run` ends with
    record = read_training_record(runs["Trainer"].output("model_run").uri)
    epochs = [e["seconds"] for e in record["epochs"]]
    rows = breakdown(wall, {node: run.seconds for node, run in runs.items()}, record)
    plain = common.plain_fit(config.vae, len(epochs), splits["train"][0], splits["valid"][0])
    not_epoch = wall - sum(epochs)
    result = {
        "preset": args.preset,
        "config": config.vae.to_dict(),
        "beam_args": list(config.beam_args),
        "breakdown": dict(rows),
        "wall_seconds": wall,
        "epochs": len(epochs),
        "epoch_seconds": sum(epochs),
        "first_epoch_excess_seconds": epochs[0] - statistics.median(epochs[1:] or epochs),
        "not_epoch_seconds": not_epoch,
        "plain_fit_seconds": plain["seconds"],
        "ratio": wall / plain["seconds"],
        "trainer_examples_per_second": record["examples_per_second"],
        "plain_fit_examples_per_second": plain["examples_per_second"],
        "throughput_ratio": record["examples_per_second"] / plain["examples_per_second"],
        # The model this run made, as its Evaluator measured it on MNIST's 10,000 test images.
        "test_neg_elbo_at_mean": evaluator.slice_metrics(runs["Evaluator"].output("evaluation").uri)[""]["neg_elbo"],
    }
    width = max(len(stage) for stage, _ in rows)
    for stage, seconds in rows:
        print(f"  {stage:<{width}}  {seconds:7.1f} s")

    def verdict(met: bool) -> str:
        return "met" if met else "NOT met"

    print(
        f"whole run {wall:.1f} s; not an epoch {not_epoch:.1f} s (target <= {TARGET_NOT_EPOCH_SECONDS:.0f} s: "
        f"{verdict(not_epoch <= TARGET_NOT_EPOCH_SECONDS)}); plain model.fit of the same {len(epochs)} epochs "
        f"{plain['seconds']:.1f} s: ratio {result['ratio']:.2f} (target <= {TARGET_RATIO}: "
        f"{verdict(result['ratio'] <= TARGET_RATIO)}); Trainer {result['trainer_examples_per_second']:,.0f} "
        f"examples/s against {plain['examples_per_second']:,.0f}: {result['throughput_ratio']:.2f} "
        f"(target >= {TARGET_THROUGHPUT_RATIO}: {verdict(result['throughput_ratio'] >= TARGET_THROUGHPUT_RATIO)})"
        f" -> {common.record('pipeline_cost', result)}"
    )


if __name__ == "__main__":
    main()
