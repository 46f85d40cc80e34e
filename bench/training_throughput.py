"""Training throughput through the TFX Trainer against plain in-memory ``model.fit``.

  .venv/bin/python bench/training_throughput.py [--preset tutorial] [--epochs 5] [--set FIELD=VALUE]

Both train the same VaeConfig on MNIST's 60,000 training images at the same batch size, in this
one process: first the pipeline (the Trainer's input pipeline and training step, read from its
training_record.json), then ``model.fit`` on NumPy arrays, the tutorial's way. Throughput is the
median over the epochs after the first (which also traces the graph). The Trainer's fixed cost,
its wall time outside the epochs (loading data, building, exporting), is reported beside it.
Results are printed and appended to bench/results/training_throughput.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

import common  # noqa: F401  (first: sets up paths and quiet logs)
import numpy as np

TARGET_RATIO = 0.9


def plain_fit(config, epochs: int) -> float:
    """Examples/s of model.fit on in-memory arrays (median over epochs after the first)."""
    from components import datasets, fetch
    from model.vae import TrainingRecord, build_vae

    directory = fetch.fetch(datasets.MNIST, os.path.join(common.REPO, "data"))
    images, _ = datasets.MNIST.read_split(directory, "train")
    pixels = images.reshape(len(images), -1).astype(np.float32) / 255.0
    vae = build_vae(config)
    with tempfile.TemporaryDirectory() as scratch:
        record = TrainingRecord(os.path.join(scratch, "record.json"), examples_per_epoch=len(pixels))
        vae.fit(pixels, batch_size=config.batch_size, epochs=epochs, shuffle=True, callbacks=[record], verbose=0)
    speeds = [e["train_examples_per_second"] for e in record.epochs]
    return statistics.median(speeds[1:] or speeds)


def main() -> None:
    from model.config import VaeConfig
    from model.trainer import read_training_record
    from pipeline.config import PipelineConfig

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
    trainer = common.run_pipeline(config)["Trainer"]
    record = read_training_record(trainer.output("model_run").uri)
    epoch_seconds = sum(e["seconds"] for e in record["epochs"])
    plain = plain_fit(config.vae, args.epochs)
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
