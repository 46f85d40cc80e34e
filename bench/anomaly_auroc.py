"""How well the negative ELBO tells a digit the model never saw from the ones it did.

  .venv/bin/python bench/anomaly_auroc.py [--digits 0 1 7] [--preset tutorial] [--set epochs=10]

For each held-out digit: train the preset's VAE (the model code of model/, on in-memory arrays)
on MNIST's training images of the other nine digits, score every test image with its negative
ELBO at the posterior mean (what ``serving_default`` returns), and report the AUROC of that score
at ranking the held-out digit above the rest (1.0: perfect, 0.5: chance). Results are printed and
appended to bench/results/anomaly_auroc.json.
"""

from __future__ import annotations

import argparse
import os

import common  # noqa: F401  (first: sets up paths and quiet logs)
import numpy as np


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the chance a positive outscores a negative (ties count half)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over ties.
    unique, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def neg_elbo_at_mean(vae, pixels: np.ndarray) -> np.ndarray:
    from model.losses import kl_nats, reconstruction_nats

    z_mean, z_log_var = vae.encoder.predict(pixels, batch_size=2000, verbose=0)
    logits = vae.decoder.predict(z_mean, batch_size=2000, verbose=0)
    return (reconstruction_nats(pixels, logits) + kl_nats(z_mean, z_log_var)).numpy()


def main() -> None:
    import tf_keras as keras

    from components import datasets, fetch
    from model.config import VaeConfig, preset
    from model.vae import build_vae

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--digits", type=int, nargs="+", default=[0, 1, 7, 9])
    parser.add_argument("--preset", default="tutorial")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON")
    args = parser.parse_args()
    config = preset(args.preset).replace(**VaeConfig.parse_overrides(args.set))

    directory = fetch.fetch(datasets.MNIST, os.path.join(common.REPO, "data"))

    def load(split: str):
        images, labels = datasets.MNIST.read_split(directory, split)
        return images.reshape(len(images), -1).astype(np.float32) / 255.0, labels

    (x_train, y_train), (x_test, y_test) = load("train"), load("eval")
    per_digit = {}
    for digit in args.digits:
        keras.utils.set_random_seed(config.seed)
        vae = build_vae(config)
        seen = x_train[y_train != digit]
        validation = x_test[y_test != digit]
        callbacks = []
        if config.early_stopping_patience:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_neg_elbo", patience=config.early_stopping_patience, restore_best_weights=True
                )
            )
        vae.fit(
            seen,
            validation_data=(validation,),
            batch_size=config.batch_size,
            epochs=config.epochs,
            verbose=0,
            callbacks=callbacks,
        )
        scores = neg_elbo_at_mean(vae, x_test)
        held_out = y_test == digit
        per_digit[str(digit)] = {
            "auroc": auroc(scores, held_out),
            "held_out_mean_neg_elbo": float(scores[held_out].mean()),
            "others_mean_neg_elbo": float(scores[~held_out].mean()),
        }
        print(
            f"digit {digit} held out: AUROC {per_digit[str(digit)]['auroc']:.3f} "
            f"(-ELBO {scores[held_out].mean():.1f} nats vs {scores[~held_out].mean():.1f} for the others)"
        )
    result = {"preset": args.preset, "config": config.to_dict(), "per_digit": per_digit}
    result["mean_auroc"] = float(np.mean([d["auroc"] for d in per_digit.values()]))
    print(f"mean AUROC {result['mean_auroc']:.3f} -> {common.record('anomaly_auroc', result)}")


if __name__ == "__main__":
    main()
