"""Serving cost of the pushed SavedModel, in-process: ``serving_default`` and ``score_tf_example``
latency at batch 1 (p50, p99) and throughput at batch 256, against calling the raw Keras encoder
and decoder the same way, and the exported model's size on disk.

  .venv/bin/python bench/serving_latency.py [--model-dir outputs/serving/vae-mnist] [--calls 2000]

The difference between the two is what serving adds: the Transform graph, the input checks and
the extra outputs (the anomaly detector's among them). ``score_tf_example`` also parses
serialized tf.Examples, as batch scoring sends them. Results are printed and appended to
bench/results/serving_latency.json.
"""

from __future__ import annotations

import argparse
import os
import time

import common  # noqa: F401  (first: sets up paths and quiet logs)
import numpy as np

TARGET_P50_MS = 2.0


def timings(call, batch, calls: int) -> np.ndarray:
    for _ in range(20):  # warm up: tracing, allocations
        call(batch)
    seconds = np.empty(calls)
    for i in range(calls):
        started = time.perf_counter()
        call(batch)
        seconds[i] = time.perf_counter() - started
    return seconds


def directory_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def main() -> None:
    import tensorflow as tf

    from components.idx_example_gen import serialize_examples
    from model.export import load_networks
    from pipeline.serving import latest_version_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", default=os.path.join(common.REPO, "outputs", "serving", "vae-mnist"))
    parser.add_argument("--calls", type=int, default=2000, help="timed calls at batch 1")
    args = parser.parse_args()

    version_dir = latest_version_dir(args.model_dir)
    model = tf.saved_model.load(version_dir)
    serve, score = model.signatures["serving_default"], model.signatures["score_tf_example"]

    networks = load_networks(version_dir)

    @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32)])
    def raw_keras(pixels):  # the network alone: encoder, decoder at the posterior mean
        z_mean, _ = networks.encoder(pixels)
        return tf.sigmoid(networks.decoder(z_mean))

    rng = np.random.default_rng(0)
    images = {n: tf.constant(rng.integers(0, 256, size=(n, 784)), tf.int64) for n in (1, 256)}
    pixels = {n: tf.cast(images[n], tf.float32) / 255.0 for n in (1, 256)}
    examples = {n: tf.constant(serialize_examples(images[n].numpy(), np.zeros(n, np.int64))) for n in (1, 256)}

    result = {"model_dir": version_dir, "model_bytes": directory_bytes(version_dir)}
    for name, call, inputs in (
        ("serving_default", lambda b: serve(image=b), images),
        ("score_tf_example", lambda b: score(examples=b), examples),
        ("raw_keras", raw_keras, pixels),
    ):
        single = timings(call, inputs[1], args.calls) * 1000
        batched = timings(call, inputs[256], max(args.calls // 20, 20))
        result[name] = {
            "batch1_p50_ms": float(np.percentile(single, 50)),
            "batch1_p99_ms": float(np.percentile(single, 99)),
            "batch256_examples_per_second": float(256 / np.median(batched)),
        }
    path = common.record("serving_latency", result)
    for name in ("serving_default", "score_tf_example", "raw_keras"):
        t = result[name]
        met = "" if name == "raw_keras" else f" (target < {TARGET_P50_MS} ms: "
        met += "" if name == "raw_keras" else ("met)" if t["batch1_p50_ms"] < TARGET_P50_MS else "NOT met)")
        print(
            f"{name + ':':<17} batch 1 p50 {t['batch1_p50_ms']:.2f} ms{met}, p99 {t['batch1_p99_ms']:.2f} ms; "
            f"batch 256 {t['batch256_examples_per_second']:,.0f} examples/s"
        )
    print(f"model size {result['model_bytes'] / 1e6:.1f} MB ({version_dir}) -> {path}")


if __name__ == "__main__":
    main()
