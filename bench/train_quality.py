"""Trains presets on full MNIST through the TFX Trainer and measures the exported model.

  .venv/bin/python bench/train_quality.py                      # tutorial, latent2, quality
  .venv/bin/python bench/train_quality.py --preset tutorial --set epochs=30 --set batch_size=128

For each preset: the pipeline runs (ExampleGen ... Trainer, with caching, so the data stages run
once), then the exported SavedModel scores MNIST's 10,000 test images through its signatures:

- negative ELBO with one posterior sample per image (the estimate the model trains on), and at the
  posterior mean (what ``serving_default`` reports), in nats per image, with its parts;
- training throughput (examples/s, median over epochs, from the Trainer's training_record.json),
  the epochs run and the Trainer's wall time (from ML Metadata), against the stated CPU budget.

Results are printed and appended to bench/results/train_quality.json.
"""

from __future__ import annotations

import argparse
import json
import os

import common  # noqa: F401  (first: sets up paths and quiet logs)
import numpy as np

TARGETS = {"tutorial": 150.0, "latent2": 145.0, "quality": 100.0}  # nats, test negative ELBO
BUDGET_MINUTES = {"tutorial": 5, "latent2": 20, "quality": 10}  # 2-core CPU training budget


def test_set():
    from components import datasets, fetch, idx_format

    directory = fetch.fetch(datasets.MNIST, os.path.join(common.REPO, "data"))
    split = datasets.MNIST.splits["eval"]
    images = idx_format.read_array(os.path.join(directory, split.images), idx_format.IMAGES_MAGIC)
    labels = idx_format.read_array(os.path.join(directory, split.labels), idx_format.LABELS_MAGIC)
    return images.reshape(-1, 784).astype(np.int64), labels


def bernoulli_nats(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    return -(x * np.log(p) + (1 - x) * np.log1p(-p)).sum(axis=1)


def evaluate(model_dir: str, images: np.ndarray, seed: int = 0, batch: int = 1000) -> dict:
    import tensorflow as tf

    model = tf.saved_model.load(model_dir)
    serve, encode, decode = (model.signatures[n] for n in ("serving_default", "encode", "decode"))
    rng = np.random.default_rng(seed)
    at_mean, sampled_recon, kl = [], [], []
    for start in range(0, len(images), batch):
        chunk = tf.constant(images[start : start + batch])
        at_mean.append(serve(image=chunk)["neg_elbo"].numpy())
        posterior = encode(image=chunk)
        mean, log_var = posterior["z_mean"].numpy(), posterior["z_log_var"].numpy()
        z = mean + np.exp(0.5 * log_var) * rng.standard_normal(mean.shape).astype(np.float32)
        probabilities = decode(z=tf.constant(z))["images"].numpy()
        sampled_recon.append(bernoulli_nats(images[start : start + batch] / 255.0, probabilities))
        kl.append(-0.5 * (1 + log_var - mean**2 - np.exp(log_var)).sum(axis=1))
    recon, kl = np.concatenate(sampled_recon), np.concatenate(kl)
    return {
        "test_neg_elbo_single_sample": float(np.mean(recon + kl)),
        "test_neg_elbo_at_mean": float(np.mean(np.concatenate(at_mean))),
        "test_reconstruction": float(np.mean(recon)),
        "test_kl": float(np.mean(kl)),
    }


def bench_preset(name: str, overrides: dict) -> dict:
    from model.trainer import read_training_record
    from pipeline.config import PipelineConfig

    config = PipelineConfig(
        output_dir=os.path.join(common.OUTPUTS_DIR, "train_quality"), preset=name, vae_overrides=overrides
    )
    vae = config.vae
    label = name + "".join(f",{k}={v}" for k, v in sorted(overrides.items()))
    print(f"\n== {label}: {vae}")
    runs = common.run_pipeline(config)
    trainer = runs["Trainer"]
    record = read_training_record(trainer.output("model_run").uri)
    epochs = record["epochs"]
    model_dir = os.path.join(trainer.output("model").uri, "Format-Serving")
    result = {
        "preset": name,
        "label": label,
        "config": vae.to_dict(),
        **evaluate(model_dir, test_set()[0]),
        "train_examples_per_second": record["examples_per_second"],
        "epochs_run": len(epochs),
        "epoch_seconds_total": sum(e["seconds"] for e in epochs),
        "trainer_wall_seconds": trainer.seconds,
        "trainer_state": trainer.state,
        "target_nats": TARGETS.get(name),
        "budget_minutes": BUDGET_MINUTES.get(name),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", action="append", help="preset(s) to run (default: tutorial, latent2, quality)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON", help="override a VaeConfig field")
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, _, v in (s.partition("=") for s in args.set)}
    for name in args.preset or list(TARGETS):
        result = bench_preset(name, overrides)
        path = common.record("train_quality", result)
        target = result["target_nats"]
        verdict = ""
        if target is not None:
            met = result["test_neg_elbo_single_sample"] <= target
            verdict = f" (target <= {target:.0f}: {'met' if met else 'NOT met'})"
        print(
            f"{result['label']}: test -ELBO {result['test_neg_elbo_single_sample']:.1f} nats single-sample{verdict}, "
            f"{result['test_neg_elbo_at_mean']:.1f} at the posterior mean; reconstruction "
            f"{result['test_reconstruction']:.1f} + KL {result['test_kl']:.1f}; "
            f"{result['train_examples_per_second']:.0f} examples/s, {result['epochs_run']} epochs, "
            f"Trainer {result['trainer_wall_seconds'] / 60:.1f} min (budget {result['budget_minutes']} min) -> {path}"
        )


if __name__ == "__main__":
    main()
