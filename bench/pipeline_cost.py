"""What the whole pipeline costs on full MNIST: wall time per component, from ML Metadata's
execution records, and the pipeline's overhead over the training itself.

  .venv/bin/python bench/pipeline_cost.py [--preset tutorial] [--set epochs=3] [--beam-arg ...]

Every component runs (no cache). "Training" is the sum of the Trainer's epochs; everything else,
the Trainer's fixed cost included, is overhead. Results are printed and appended to
bench/results/pipeline_cost.json.
"""

from __future__ import annotations

import argparse
import os

import common  # noqa: F401  (first: sets up paths and quiet logs)

TARGET_OTHER_COMPONENTS_SECONDS = 45.0


def main() -> None:
    import time

    from components import datasets, fetch
    from model.config import VaeConfig
    from model.trainer import read_training_record
    from pipeline.config import DEFAULT_BEAM_ARGS, PipelineConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tutorial")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON")
    parser.add_argument("--beam-arg", action="append", help="Beam arguments (default: the pipeline's)")
    args = parser.parse_args()
    overrides = VaeConfig.parse_overrides(args.set)
    data_root = os.path.join(common.REPO, "data")
    fetch.fetch(datasets.MNIST, data_root)
    config = PipelineConfig(
        data_root=data_root,
        output_dir=os.path.join(common.OUTPUTS_DIR, "pipeline_cost"),
        preset=args.preset,
        vae_overrides=overrides,
        beam_args=tuple(args.beam_arg) if args.beam_arg else DEFAULT_BEAM_ARGS,
        enable_cache=False,
    )
    started = time.perf_counter()
    runs = common.run_pipeline(config)
    wall = time.perf_counter() - started
    record = read_training_record(runs["Trainer"].output("model_run").uri)
    training = sum(e["seconds"] for e in record["epochs"])
    seconds = {node: run.seconds for node, run in runs.items()}
    others = sum(s for node, s in seconds.items() if node != "Trainer")
    result = {
        "preset": args.preset,
        "config": config.vae.to_dict(),
        "beam_args": list(config.beam_args),
        "component_seconds": seconds,
        "other_components_seconds": others,
        "trainer_seconds": seconds["Trainer"],
        "trainer_epoch_seconds": training,
        "trainer_fixed_seconds": seconds["Trainer"] - training,
        "wall_seconds": wall,
        "overhead_seconds": wall - training,
    }
    path = common.record("pipeline_cost", result)
    met = "met" if others <= TARGET_OTHER_COMPONENTS_SECONDS else "NOT met"
    print(
        f"components other than the Trainer: {others:.1f} s (target <= {TARGET_OTHER_COMPONENTS_SECONDS:.0f} s: "
        f"{met}); Trainer {seconds['Trainer']:.1f} s of which epochs {training:.1f} s, fixed "
        f"{result['trainer_fixed_seconds']:.1f} s; whole run {wall:.1f} s, overhead over training "
        f"{result['overhead_seconds']:.1f} s -> {path}"
    )


if __name__ == "__main__":
    main()
