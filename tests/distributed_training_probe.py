"""Run by tests/test_distributed_training.py in a fresh process, because TensorFlow's CPU can be
split into logical devices only before it starts: the Trainer's multi-replica and
mixed-precision paths on 2 logical CPU devices. Prints one JSON line of findings.

Usage: python -m tests.distributed_training_probe TRANSFORM_GRAPH TRANSFORMED_EXAMPLES WORKDIR
"""

import json
import os
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402
from tfx.components.trainer.fn_args_utils import DataAccessor  # noqa: E402
from tfx.components.util import tfxio_utils  # noqa: E402
from tfx.types import standard_artifacts  # noqa: E402

from model import trainer, training_record, vae  # noqa: E402
from model.config import VaeConfig  # noqa: E402


def same_step_on_one_and_two_replicas(pixels: np.ndarray) -> dict:
    """One SGD step on the same 128 images, one global batch: on two replicas (64 each) and on
    one device. The posterior sample's noise is switched off here (each replica draws its own,
    so the draws could never match); what must match is how the loss is reduced over replicas.
    SGD, not Adam: Adam's update is blind to a gradient scaled by the replica count."""
    sample, vae.sample = vae.sample, lambda z_mean, z_log_var: z_mean
    try:
        config = VaeConfig(batch_size=128)
        strategy = trainer.distribution_strategy()
        with strategy.scope():
            two = vae.build_vae(config)
            two.compile(optimizer=keras.optimizers.SGD(0.01))
        one = vae.build_vae(config)
        one.compile(optimizer=keras.optimizers.SGD(0.01))
        one.set_weights(two.get_weights())
        before = one.get_weights()
        data = tf.data.Dataset.from_tensor_slices(pixels).batch(128)
        loss_two = two.fit(data, epochs=1, verbose=0).history["loss"][0]
        loss_one = one.fit(data, epochs=1, verbose=0).history["loss"][0]
        difference = max(
            float(np.max(np.abs(a - b))) for a, b in zip(one.get_weights(), two.get_weights(), strict=True)
        )
        step = max(float(np.max(np.abs(a - b))) for a, b in zip(one.get_weights(), before, strict=True))
        return {
            "replicas": strategy.num_replicas_in_sync,
            "loss_one": loss_one,
            "loss_two": loss_two,
            "weight_difference": difference,
            "step": step,
        }
    finally:
        vae.sample = sample


def trainer_run_fn_under_mixed_precision(graph_uri: str, examples_uri: str, workdir: str) -> dict:
    """The real run_fn, on the pipeline's examples and Transform graph, 2 replicas, mixed_float16."""
    examples = standard_artifacts.Examples()
    examples.uri, examples.split_names = examples_uri, '["train", "valid", "eval"]'

    class FnArgs:
        train_files = [os.path.join(examples_uri, "Split-train", "*")]
        eval_files = [os.path.join(examples_uri, "Split-valid", "*")]
        data_accessor = DataAccessor(
            tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact([examples], []),
            record_batch_factory=None,
            data_view_decode_fn=None,
        )
        transform_output = graph_uri
        model_run_dir = os.path.join(workdir, "model_run")
        serving_model_dir = os.path.join(workdir, "serving_model")
        base_model = None  # no warm start
        custom_config = {"vae": VaeConfig(batch_size=64, epochs=2, mixed_precision=True).to_dict()}

    trainer.run_fn(FnArgs)
    record = training_record.read_training_record(FnArgs.model_run_dir)
    keras.mixed_precision.set_global_policy("float32")
    served = tf.saved_model.load(FnArgs.serving_model_dir)
    signature = served.signatures["serving_default"]
    images = tf.constant(np.arange(4 * 784).reshape(4, 784) % 256, tf.int64)
    outputs = signature(image=images)
    return {
        "policy_during_training": "mixed_float16",
        "epoch_losses": [e["loss"] for e in record["epochs"]],
        "val_neg_elbo": [e["val_neg_elbo"] for e in record["epochs"]],
        "output_dtypes": {k: v.dtype.name for k, v in signature.structured_outputs.items()},
        "outputs_finite": bool(all(np.isfinite(v.numpy()).all() for v in outputs.values())),
    }


if __name__ == "__main__":
    graph, examples, workdir = sys.argv[1:4]
    images = np.concatenate(
        list(
            tf.data.TFRecordDataset(tf.io.gfile.glob(os.path.join(examples, "Split-train", "*")), "GZIP")
            .take(128)
            .batch(128)
            .map(lambda r: tf.io.parse_example(r, {"image": tf.io.FixedLenFeature([784], tf.int64)})["image"])
            .as_numpy_iterator()
        )
    )
    findings = {"replicated": same_step_on_one_and_two_replicas(images.astype(np.float32) / 255.0)}
    findings["mixed_precision"] = trainer_run_fn_under_mixed_precision(graph, examples, workdir)
    print("FINDINGS " + json.dumps(findings))
