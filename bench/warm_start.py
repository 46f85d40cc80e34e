"""Warm start against training from scratch, on a new clean span of full MNIST.

  .venv/bin/python bench/warm_start.py                    # tutorial preset, MNIST in two spans
  .venv/bin/python bench/warm_start.py --set warm_start_epochs=5

MNIST is cut into two spans (``vae-mnist data spans``: 30,000 training and 5,000 test images
each). Span 1 trains from scratch and is pushed. Span 2 arrives: the same output directory
retrains with ``--warm-start`` (from the served span-1 model), and a fresh output directory
trains span 2 from scratch. Figures: each Trainer's wall time and epochs (ML Metadata, the
training record) and each model's test -ELBO on all 10,000 MNIST test images (one posterior
sample, as bench/train_quality.py). The claim (issue 13): warm within 1 nat of scratch, in at
most a third of the Trainer time. Results go to bench/results/warm_start.json.
"""

import argparse
import os
import shutil

import common  # noqa: F401  (first: sets up paths and quiet logs)
from train_quality import evaluate, test_set

# The benchmark measures training; blessing must not stop span 1 from being served.
BOUNDS = {
    "neg_elbo": 250.0,
    "reconstruction_error": 250.0,
    "pixel_mse": 0.1,
    "reconstruction_error_per_digit": 300.0,
    "pixel_mse_per_digit": 0.15,
}
NATS_WITHIN, TIME_FRACTION = 1.0, 1 / 3


def trained(runs: dict) -> dict:
    from model.training_record import read_training_record

    trainer = runs["Trainer"]
    record = read_training_record(trainer.output("model_run").uri)
    model_dir = os.path.join(trainer.output("model").uri, "Format-Serving")
    figures = evaluate(model_dir, *test_set(), iw_k=1, iw_images=0)
    return {
        "trainer_wall_seconds": trainer.seconds,
        "epochs_run": len(record["epochs"]),
        "epoch_seconds_total": sum(e["seconds"] for e in record["epochs"]),
        "warm_start": record.get("warm_start"),
        "test_neg_elbo_single_sample": figures["test_neg_elbo_single_sample"],
        "test_neg_elbo_at_mean": figures["test_neg_elbo_at_mean"],
    }


def main() -> None:
    from components import datasets, fetch, spans
    from model.config import VaeConfig
    from pipeline.config import PipelineConfig
    from pipeline.local_runner import run_locally

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tutorial")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON", help="override a VaeConfig field")
    args = parser.parse_args()
    overrides = VaeConfig.parse_overrides(args.set)

    root = os.path.join(common.OUTPUTS_DIR, "warm_start")
    shutil.rmtree(root, ignore_errors=True)
    source = fetch.fetch(datasets.MNIST, os.path.join(common.REPO, "data"))
    made = spans.write_spans(source, os.path.join(root, "spans"), 2)
    arriving = os.path.join(root, "input")

    def config(output: str, **changes) -> PipelineConfig:
        return PipelineConfig(
            input_dir=arriving,
            output_dir=os.path.join(root, output),
            preset=args.preset,
            vae_overrides=overrides,
            bounds=BOUNDS,
            **changes,
        )

    shutil.copytree(made[1], spans.span_dir(arriving, 1))
    print("\n== span 1, from scratch (then served)")
    first = trained(run_locally(config("served", warm_start=True)))
    shutil.copytree(made[2], spans.span_dir(arriving, 2))
    print("\n== span 2, warm from the served span-1 model")
    warm = trained(run_locally(config("served", warm_start=True)))
    print("\n== span 2, from scratch")
    scratch = trained(run_locally(config("scratch")))

    gap = warm["test_neg_elbo_single_sample"] - scratch["test_neg_elbo_single_sample"]
    fraction = warm["trainer_wall_seconds"] / scratch["trainer_wall_seconds"]
    result = {
        "preset": args.preset,
        "overrides": overrides,
        "config": config("served").vae.to_dict(),
        "span_images": {"train": 30_000, "eval": 5_000},
        "span_1": first,
        "span_2_warm": warm,
        "span_2_scratch": scratch,
        "warm_minus_scratch_nats": gap,
        "trainer_time_fraction": fraction,
        "claim_met": gap <= NATS_WITHIN and fraction <= TIME_FRACTION,
    }
    path = common.record("warm_start", result)
    print(
        f"span 2: warm {warm['test_neg_elbo_single_sample']:.1f} nats in {warm['trainer_wall_seconds']:.0f} s "
        f"({warm['epochs_run']} epochs); scratch {scratch['test_neg_elbo_single_sample']:.1f} nats in "
        f"{scratch['trainer_wall_seconds']:.0f} s ({scratch['epochs_run']} epochs): {gap:+.2f} nats at "
        f"{fraction:.2f} of the time (claim: <= +{NATS_WITHIN:.0f} nat at <= {TIME_FRACTION:.2f}: "
        f"{'met' if result['claim_met'] else 'NOT met'}) -> {path}"
    )


if __name__ == "__main__":
    main()
