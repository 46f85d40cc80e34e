"""How well each candidate anomaly score tells a digit the model never saw from the ones it did.

  .venv/bin/python bench/anomaly_auroc.py --set epochs=20 --without-iw  # the recorded run: ten digits, three seeds
  .venv/bin/python bench/anomaly_auroc.py --fast                # the same in minutes, for checking
  .venv/bin/python bench/anomaly_auroc.py --digits 1 9 --preset tutorial --set epochs=20
  .venv/bin/python bench/anomaly_auroc.py --fast --seeds 0 --without-iw --background  # with Ren et al.'s ratio

For each held-out digit: train the preset's VAE with the Trainer's own model and callbacks
(model/vae.py, model/trainer.py:training_callbacks) on MNIST's training images of the other nine
digits, with the pipeline's validation split (the training files' last twelfth, the held-out digit
removed) for early stopping and for fitting the anomaly detector as the Trainer does before export
(model/detector.py:fit_detector). Then score every test image with each candidate of
model/anomaly.py and report the AUROC of each at ranking the held-out digit above the other nine
(1.0: perfect, 0.5: chance), per digit, the mean and the minimum; and, for the served score, the
AUPRC (beside the held-out digit's prevalence), the recall at 1 % and 5 % false positives, and
the share of each digit flagged at the calibrated threshold (on the nine seen digits: its
false-positive rate on test images). With Debian's dataset-fashion-mnist
installed, each model also ranks 2,000 Fashion-MNIST test images against MNIST's test images: a
far anomaly, which a score corrected too hard for complexity misses.

One model per digit and seed (``--seeds``, three by default); each figure is the mean over the
seeds, each seed's kept beside it. The trained models are kept under outputs/bench/anomaly_auroc/
by their settings, so a new candidate score is measured on the same models in seconds
(``--retrain`` trains again).

``--fast`` trains on the first 10,000 training images for 10 epochs: the ranking of the scores,
not their final values. Results are printed and appended to bench/results/anomaly_auroc.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import time

import common  # noqa: F401  (first: sets up paths and quiet logs)
import numpy as np

FAST_IMAGES, FAST_EPOCHS = 10_000, 10
MUTATION_RATE = 0.2  # the background model's share of replaced pixels (likelihood_ratio)
FASHION_IMAGES = 2000


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the chance a positive outscores a negative (ties count half)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    unique, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)  # average ranks over ties
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def trained_without(config, digit: int, seen, valid, run_dir: str, retrain: bool, kind: str = "without"):
    """The VAE trained on ``seen`` (early stopping on ``valid``), and its training seconds. Kept in
    ``run_dir`` under ``kind`` and its settings, so that new scores are measured on the same models
    in seconds; ``retrain`` ignores what is kept."""
    import tf_keras as keras

    from components import object_store
    from model.trainer import training_callbacks
    from model.vae import build_vae

    key = hashlib.sha256(json.dumps([config.to_dict(), len(seen)], sort_keys=True).encode()).hexdigest()[:12]
    kept = os.path.join(run_dir, "models", f"{kind}_{digit}-{key}")
    keras.utils.set_random_seed(config.seed)
    vae = build_vae(config)
    if not retrain and os.path.exists(kept + ".json"):
        vae(seen[:1])  # builds the weights
        vae.load_weights(kept + ".weights.h5")
        with open(kept + ".json") as f:
            return vae, json.load(f)["train_seconds"]
    started = time.perf_counter()
    vae.fit(
        seen,
        validation_data=(valid,),
        batch_size=config.batch_size,
        epochs=config.epochs,
        verbose=0,
        callbacks=training_callbacks(config, os.path.join(run_dir, f"{kind}_{digit}"), len(seen)),
    )
    seconds = time.perf_counter() - started
    os.makedirs(os.path.dirname(kept), exist_ok=True)
    vae.save_weights(kept + ".weights.h5")
    # Written last and whole: its presence says the weights beside it are complete.
    object_store.write_text_atomically(
        kept + ".json", json.dumps({"train_seconds": seconds, "config": config.to_dict()})
    )
    return vae, seconds


def auprc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the precision-recall curve (average precision: the precision at each positive,
    averaged); chance is the prevalence."""
    order = np.argsort(-scores, kind="mergesort")
    hits = positive[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def recall_at(scores: np.ndarray, positive: np.ndarray, false_positive_rate: float) -> float:
    """The share of positives above the score that ``false_positive_rate`` of the negatives exceed
    (a point of the ROC curve: its threshold is set on these negatives, so it describes the
    ranking; the served threshold is the calibrated one)."""
    threshold = np.quantile(scores[~positive], 1.0 - false_positive_rate, method="higher")
    return float((scores[positive] > threshold).mean())


def perturbed(pixels: np.ndarray, seed: int) -> np.ndarray:
    """``pixels`` with a ``MUTATION_RATE`` share replaced by uniform grey levels: what Ren et al.'s
    background model trains on (their images: rates 0.1-0.3)."""
    rng = np.random.default_rng(seed)
    mutate = rng.random(pixels.shape) < MUTATION_RATE
    return np.where(mutate, rng.integers(0, 256, pixels.shape) / 255.0, pixels).astype(np.float32)


def held_out_run(config, digit: int, train, validation, test, fashion, run_dir: str, names, retrain=False) -> dict:
    """Trains without ``digit``, fits the detector as the Trainer does, and measures every
    candidate on the test images (and on Fashion-MNIST's, when installed: a far anomaly the score
    must not miss); for the served score also AUPRC, recall at 1 % and 5 % false positives, and
    what the calibrated threshold flags of each digit."""
    from model import anomaly

    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = train, validation, test
    seen, valid = x_train[y_train != digit], x_valid[y_valid != digit]
    vae, seconds = trained_without(config, digit, seen, valid, run_dir, retrain)
    reference = anomaly.fit_reference(
        vae.encoder, vae.decoder, seen, valid, config.anomaly_false_positive_rate, seed=config.seed
    )
    if "likelihood_ratio" in names:
        noisy = perturbed(seen, config.seed), perturbed(valid, config.seed + 1)
        background, _ = trained_without(config, digit, *noisy, run_dir, retrain, kind="background_without")
        reference = dataclasses.replace(reference, background=background)
    detector = reference.detector
    scores = anomaly.candidate_scores(vae.encoder, vae.decoder, x_test, reference, names)
    held_out = y_test == digit
    served = scores[anomaly.SERVED]
    flagged = served > detector.threshold
    result = {
        "auroc": {name: auroc(values, held_out) for name, values in scores.items()},
        "auprc": auprc(served, held_out),
        "prevalence": float(held_out.mean()),
        "recall_at_fpr": {str(rate): recall_at(served, held_out, rate) for rate in (0.01, 0.05)},
        "calibration": detector.to_dict(),
        "complexity_slope": reference.slope,
        "test_false_positive_rate": float(flagged[~held_out].mean()),
        "flagged_per_digit": {str(d): float(flagged[y_test == d].mean()) for d in range(10)},
        "held_out_flagged": float(flagged[held_out].mean()),
        "train_seconds": seconds,
    }
    if fashion is not None:
        far = anomaly.candidate_scores(vae.encoder, vae.decoder, fashion, reference, names)
        is_far = np.r_[np.zeros(len(x_test), bool), np.ones(len(fashion), bool)]
        result["fashion_auroc"] = {name: auroc(np.r_[scores[name], far[name]], is_far) for name in scores}
        result["fashion_flagged"] = float((far[anomaly.SERVED] > detector.threshold).mean())
    return result


def mean_over_seeds(runs: list[dict]):
    """Each number of the runs' results averaged over the seeds, in the shape of one run's result,
    with ``auroc_spread``: each AUROC's standard deviation over the seeds."""

    def mean(values):
        if isinstance(values[0], dict):
            return {key: mean([v[key] for v in values]) for key in values[0]}
        if isinstance(values[0], str):  # a description, the same for every seed
            return values[0]
        return float(np.mean(values))

    result = mean(runs)
    result["auroc_spread"] = {name: float(np.std([r["auroc"][name] for r in runs])) for name in runs[0]["auroc"]}
    return result


def main() -> None:
    from components import datasets
    from model import anomaly
    from model.config import VaeConfig, preset

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--digits", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--preset", default="detector")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON")
    parser.add_argument("--fast", action="store_true", help=f"{FAST_IMAGES:,} training images, {FAST_EPOCHS} epochs")
    parser.add_argument(
        "--without-iw",
        action="store_true",
        help="leave out the importance-weighted scores (iw_nll, png_corrected): 64 decodes per image",
    )
    parser.add_argument(
        "--background",
        action="store_true",
        help="also train a background model per digit and seed, for likelihood_ratio (Ren et al.)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one model per digit and seed")
    parser.add_argument("--retrain", action="store_true", help="train again instead of reusing kept models")
    args = parser.parse_args()
    left_out = {"iw_nll", "png_corrected"} if args.without_iw else set()
    left_out |= set() if args.background else {"likelihood_ratio"}
    names = tuple(n for n in anomaly.CANDIDATES if n not in left_out)
    config = preset(args.preset)
    if args.fast:
        config = config.replace(epochs=FAST_EPOCHS)
    config = config.replace(**VaeConfig.parse_overrides(args.set))

    splits = common.mnist_splits(stop=FAST_IMAGES if args.fast else None)
    train, validation, test = splits["train"], splits["valid"], splits["eval"]
    fashion = None
    if os.path.isdir(datasets.FASHION_MNIST.debian_dir):
        images, _ = datasets.FASHION_MNIST.read_split(datasets.FASHION_MNIST.debian_dir, "eval", stop=FASHION_IMAGES)
        fashion = images.reshape(len(images), -1).astype(np.float32) / 255.0
    run_dir = os.path.join(common.OUTPUTS_DIR, "anomaly_auroc")
    per_digit = {}
    for digit in args.digits:
        runs = [
            held_out_run(config.replace(seed=s), digit, train, validation, test, fashion, run_dir, names, args.retrain)
            for s in args.seeds
        ]
        result = per_digit[str(digit)] = {**mean_over_seeds(runs), "per_seed": runs}
        best = max(result["auroc"], key=result["auroc"].get)
        print(
            f"digit {digit} held out ({result['train_seconds']:.0f} s): "
            + ", ".join(f"{name} {value:.3f}" for name, value in result["auroc"].items())
            + f"; best {best}; served score flags {result['held_out_flagged']:.1%} of the {digit}s and "
            f"{result['test_false_positive_rate']:.1%} of the others"
            + (f", {result['fashion_flagged']:.1%} of Fashion-MNIST" if "fashion_flagged" in result else ""),
            flush=True,
        )
    summary = {}
    for name in names:
        held = [d["auroc"][name] for d in per_digit.values()]
        far = [d["fashion_auroc"][name] for d in per_digit.values() if "fashion_auroc" in d]
        summary[name] = {"mean": float(np.mean(held)), "min": float(np.min(held))}
        if far:
            summary[name]["fashion_mean"] = float(np.mean(far))
        print(
            f"{name:>22}: held-out digit AUROC mean {summary[name]['mean']:.3f}, min {summary[name]['min']:.3f}"
            + (f"; Fashion-MNIST AUROC {summary[name]['fashion_mean']:.3f}" if far else "")
        )
    result = {
        "preset": args.preset,
        "fast": args.fast,
        "seeds": len(args.seeds),
        "served": anomaly.SERVED,
        "config": config.to_dict(),
        "per_digit": per_digit,
        "summary": summary,
    }
    print(f"-> {common.record('anomaly_auroc', result)}")


if __name__ == "__main__":
    main()
