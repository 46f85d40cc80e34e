"""Training throughput through the TFX Trainer against plain in-memory ``model.fit``.

  .venv/bin/python bench/training_throughput.py [--preset tutorial] [--epochs 5] [--set FIELD=VALUE]

Both train the same VaeConfig on the same 55,000 training images at the same batch size and
validate on the same 5,000 every epoch, in this one process: first the pipeline (the Trainer's
input pipeline and training step, read from its training_record.json), then ``model.fit`` on NumPy
arrays, the tutorial's way (bench/common.py:plain_fit). Throughput is the median over the epochs
after the first (which also traces the graph). The Trainer's fixed cost,
its wall time outside the epochs (loading data, building, exporting), is reported beside it.
Results are printed and appended to bench/results/training_throughput.json.
"""

from __future__ import annotations

import argparse
import os

import common  # (first: sets up paths and quiet logs)

TARGET_RATIO = 0.95


def main() -> None:
    from model.config import VaeConfig
    from model.training_record import read_training_record
    from pipeline.config import PipelineConfig
    from pipeline.local_runner import run_locally

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tutorial")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON")
    args = parser.parse_args()
    overrides = VaeConfig.parse_overrides(args.set)
    # Early stopping off: both sides run exactly the same number of epochs.
    overrides |= {"epochs": args.epochs, "early_stopping_patience": 0}
    config = PipelineConfig(
        output_dir=os.path.join(common.OUTPUTS_DIR, "training_throughput"), preset=args.preset, vae_overrides=overrides
    )
    trainer = run_locally(config)["Trainer"]
    record = read_training_record(trainer.output("model_run").uri)
    epoch_seconds = sum(e["seconds"] for e in record["epochs"])
    splits = common.mnist_splits()
    plain = common.plain_fit(config.vae, args.epochs, splits["train"][0], splits["valid"][0])["examples_per_second"]
    result = {
        "preset": args.preset,
        "config": config.vae.to_dict(),
        "tfx_trainer_examples_per_second": record["examples_per_second"],
        "plain_fit_examples_per_second": plain,
        "ratio": record["examples_per_second"] / plain,
        "trainer_wall_seconds": trainer.seconds,
        "trainer_epoch_seconds": epoch_seconds,
        "trainer_fixed_seconds": trainer.seconds - epoch_seconds,
        "trainer_state": trainer.state,
    }
    path = common.record("training_throughput", result)
    met = "met" if result["ratio"] >= TARGET_RATIO else "NOT met"
    print(
        f"{args.preset}, batch {config.vae.batch_size}: TFX Trainer {result['tfx_trainer_examples_per_second']:,.0f} "
        f"examples/s, plain model.fit {plain:,.0f} examples/s, ratio {result['ratio']:.2f} "
        f"(target >= {TARGET_RATIO}: {met}); Trainer fixed cost {result['trainer_fixed_seconds']:.1f} s of "
        f"{result['trainer_wall_seconds']:.1f} s -> {path}"
    )


if __name__ == "__main__":
    main()
