"""Trains presets on full MNIST through the TFX Trainer and measures the exported model.

  .venv/bin/python bench/train_quality.py                      # tutorial, latent2, quality
  .venv/bin/python bench/train_quality.py --preset tutorial --set epochs=30 --set batch_size=128

For each preset: the pipeline runs (ExampleGen ... Trainer, with caching, so the data stages run
once), then the exported SavedModel scores MNIST's 10,000 test images through its signatures:

- negative ELBO with one posterior sample per image (the estimate the model trains on), and at the
  posterior mean (what ``serving_default`` reports), in nats per image, with its parts;
- the importance-weighted negative log-likelihood estimate (IWAE bound, k samples per image, on
  the first --iw-images test images), overall and per digit;
- training throughput (examples/s, median over epochs, from the Trainer's training_record.json),
  the epochs run and the Trainer's wall time (from ML Metadata), against the stated CPU budget.

Results are printed and appended to bench/results/train_quality.json.
"""

from __future__ import annotations

import argparse
import os

import common  # noqa: F401  (first: sets up paths and quiet logs)
import numpy as np

GATED = ("reconstruction_error", "pixel_mse")  # per-image outputs of serving_default the Evaluator bounds
# nats, test negative ELBO; detector: a 784-400-20 MLP reaches 105.6 in PyTorch's example (BENCHMARKS.md)
TARGETS = {"detector": 105.0, "tutorial": 150.0, "latent2": 145.0, "quality": 100.0}
# minutes of 2-core CPU training
BUDGET_MINUTES = {"detector": 5, "tutorial": 5, "tutorial_as_written": 5, "latent2": 20, "quality": 10}


def test_set():
    from components import datasets, fetch

    directory = fetch.fetch(datasets.MNIST, os.path.join(common.REPO, "data"))
    images, labels = datasets.MNIST.read_split(directory, "eval")
    return images.reshape(-1, 784).astype(np.int64), labels


def log_normal(z: np.ndarray, mean: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """log N(z; mean, exp(log_var)) summed over the last axis."""
    return -0.5 * (np.log(2 * np.pi) + log_var + (z - mean) ** 2 / np.exp(log_var)).sum(axis=-1)


def log_likelihood(x: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """log p(x | z) of grey-level pixels under Bernoulli logits: minus BCE, summed over pixels."""
    return -(np.maximum(logits, 0) - logits * x + np.log1p(np.exp(-np.abs(logits)))).sum(axis=-1)


def evaluate(model_dir: str, images: np.ndarray, labels: np.ndarray, iw_k: int, iw_images: int, seed: int = 0) -> dict:
    """Test-set figures through the exported model: its ``encode`` signature (which applies
    Transform) and its decoder's logits (the exported weights in the network), so likelihoods are
    exact."""
    import tensorflow as tf

    from model.export import load_networks

    model = tf.saved_model.load(model_dir)
    decoder = load_networks(model_dir).decoder
    serve, encode = model.signatures["serving_default"], model.signatures["encode"]
    rng = np.random.default_rng(seed)
    x = images / 255.0
    at_mean, single, kl, iw_nll = [], [], [], []
    gated = {name: [] for name in GATED}  # what the Evaluator's bounds apply to, at the posterior mean
    for start in range(0, len(images), 500):
        chunk = slice(start, start + 500)
        served = serve(image=tf.constant(images[chunk]))
        at_mean.append(served["neg_elbo"].numpy())
        for name in GATED:
            gated[name].append(served[name].numpy().astype(np.float64))
        posterior = encode(image=tf.constant(images[chunk]))
        mean, log_var = (
            posterior["z_mean"].numpy().astype(np.float64),
            posterior["z_log_var"].numpy().astype(np.float64),
        )
        z = mean + np.exp(0.5 * log_var) * rng.standard_normal(mean.shape)
        logits = decoder(tf.constant(z, tf.float32)).numpy().astype(np.float64)
        kl.append(-0.5 * (1 + log_var - mean**2 - np.exp(log_var)).sum(axis=1))
        single.append(-log_likelihood(x[chunk], logits) + kl[-1])
        for i in range(start, min(start + 500, iw_images)):  # importance-weighted bound, k samples
            j = i - start
            zs = mean[j] + np.exp(0.5 * log_var[j]) * rng.standard_normal((iw_k, mean.shape[1]))
            sample_logits = decoder(tf.constant(zs, tf.float32)).numpy().astype(np.float64)
            log_w = log_likelihood(x[i], sample_logits) + log_normal(zs, 0.0, 0.0) - log_normal(zs, mean[j], log_var[j])
            iw_nll.append(-(np.logaddexp.reduce(log_w) - np.log(iw_k)))
    single, kl = np.concatenate(single), np.concatenate(kl)
    iw_nll = np.array(iw_nll)
    gated = {name: np.concatenate(values) for name, values in gated.items()}

    def mean_or_none(values: np.ndarray) -> float | None:
        return float(values.mean()) if values.size else None

    per_digit = {
        str(d): {
            "neg_elbo_single_sample": mean_or_none(single[labels == d]),
            "iw_nll": mean_or_none(iw_nll[labels[: len(iw_nll)] == d]),
            **{name: mean_or_none(values[labels == d]) for name, values in gated.items()},
        }
        for d in range(10)
    }
    return {
        "test_neg_elbo_single_sample": float(single.mean()),
        "test_neg_elbo_at_mean": float(np.concatenate(at_mean).mean()),
        "test_reconstruction": float((single - kl).mean()),
        "test_kl": float(kl.mean()),
        **{f"test_{name}": float(values.mean()) for name, values in gated.items()},
        "test_iw_nll": float(iw_nll.mean()) if iw_nll.size else float("nan"),  # none asked for
        "iw_k": iw_k,
        "iw_images": len(iw_nll),
        "per_digit": per_digit,
    }


def bench_preset(name: str, overrides: dict, iw_k: int, iw_images: int) -> dict:
    from model.training_record import read_training_record
    from pipeline.config import PipelineConfig
    from pipeline.local_runner import run_locally

    config = PipelineConfig(
        output_dir=os.path.join(common.OUTPUTS_DIR, "train_quality"), preset=name, vae_overrides=overrides
    )
    vae = config.vae
    label = name + "".join(f",{k}={v}" for k, v in sorted(overrides.items()))
    print(f"\n== {label}: {vae}")
    runs = run_locally(config)
    trainer = runs["Trainer"]
    record = read_training_record(trainer.output("model_run").uri)
    epochs = record["epochs"]
    model_dir = os.path.join(trainer.output("model").uri, "Format-Serving")
    result = {
        "preset": name,
        "label": label,
        "model_chosen_on": "valid",  # early stopping and the schedule on the valid split, never the test images
        "config": vae.to_dict(),
        **evaluate(model_dir, *test_set(), iw_k=iw_k, iw_images=iw_images),
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
    from model.config import VaeConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", action="append", help="preset(s) to run (default: tutorial, latent2, quality)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON", help="override a VaeConfig field")
    parser.add_argument("--iw-k", type=int, default=1000, help="samples per image for the importance-weighted NLL")
    parser.add_argument("--iw-images", type=int, default=2000, help="test images the importance-weighted NLL uses")
    args = parser.parse_args()
    overrides = VaeConfig.parse_overrides(args.set)
    for name in args.preset or list(TARGETS):
        result = bench_preset(name, overrides, args.iw_k, args.iw_images)
        path = common.record("train_quality", result)
        target = result["target_nats"]
        verdict = ""
        if target is not None:
            met = result["test_neg_elbo_single_sample"] <= target
            verdict = f" (target <= {target:.0f}: {'met' if met else 'NOT met'})"
        print(
            f"{result['label']}: test -ELBO {result['test_neg_elbo_single_sample']:.1f} nats single-sample{verdict}, "
            f"{result['test_neg_elbo_at_mean']:.1f} at the posterior mean, importance-weighted NLL "
            f"{result['test_iw_nll']:.1f} (k={result['iw_k']}, {result['iw_images']} images); reconstruction "
            f"{result['test_reconstruction']:.1f} + KL {result['test_kl']:.1f}; "
            f"{result['train_examples_per_second']:.0f} examples/s, {result['epochs_run']} epochs, "
            f"Trainer {result['trainer_wall_seconds'] / 60:.1f} min (budget {result['budget_minutes']} min) -> {path}"
        )


if __name__ == "__main__":
    main()
