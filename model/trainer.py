"""The TFX Trainer's entry point, ``run_fn``: read examples through Transform, train the VAE, export it.

The model's settings arrive as ``custom_config['vae']`` (a VaeConfig as a dict). Training runs under
``MirroredStrategy`` when GPUs are visible (all GPUs of the node) and the default strategy on CPU;
the code path is the same (tests/test_distributed_training.py runs it on 2 logical CPU devices).
TensorBoard logs go to the Trainer's model-run directory.

Warm start: given a ``base_model`` (the pipeline's ServedModel output, when
``PipelineConfig.warm_start``), the network starts from the served model's encoder and decoder
weights if the served model recorded the same architecture, and trains at most
``warm_start_epochs`` without KL warm-up. Otherwise it trains from scratch and says why; the
training record carries that sentence to the run summary.
"""

import functools
import json
import logging
import os

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx.components.trainer.fn_args_utils import FnArgs  # not tfx.v1: components/tfx_dsl.py says why
from tfx_bsl.public import tfxio

from model import detector as detectors
from model.config import VaeConfig
from model.export import export_serving_model, read_architecture, read_weights
from model.features import PIXELS_KEY
from model.latent_mixture import FIT_CODES
from model.training_record import TRAINING_RECORD, Phases, TrainingRecord
from model.vae import build_vae

_LOAD_BATCH = 4096


def distribution_strategy() -> tf.distribute.Strategy:
    """MirroredStrategy over every GPU of the node; on CPU the default strategy, unless the CPU
    was split into logical devices (how the tests exercise the multi-replica path without GPUs)."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        logging.info("Training on %d GPU(s) with MirroredStrategy", len(gpus))
        return tf.distribute.MirroredStrategy([device.name for device in gpus])
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) > 1:
        logging.info("Training on %d logical CPU devices with MirroredStrategy", len(cpus))
        return tf.distribute.MirroredStrategy([device.name for device in cpus])
    return tf.distribute.get_strategy()


def _transformed_pixels(files, *, data_accessor, tf_transform_output, batch_size, shuffle, seed) -> tf.data.Dataset:
    """Batches of ExampleGen's raw examples through the Transform graph: pixels [batch, 784].

    Transform does not materialize its output (pipeline/pipeline.py): the Trainer applies the same
    graph as it reads, the way the serving signatures do. The map is not converted by AutoGraph:
    converting Transform's layer took 11.7 s of the Trainer here, against 0.1 s to trace it as it is."""
    options = tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=shuffle, shuffle_seed=seed, num_epochs=1)
    dataset = data_accessor.tf_dataset_factory(files, options, tf_transform_output.raw_metadata.schema)
    transform = tf_transform_output.transform_features_layer()
    pixels = tf.autograph.experimental.do_not_convert(lambda features: transform(features)[PIXELS_KEY])
    return dataset.map(pixels, num_parallel_calls=tf.data.AUTOTUNE)


def load_pixels(read, files) -> np.ndarray:
    """The whole transformed split as one float32 array [n, 784]."""
    return np.concatenate(list(read(files, batch_size=_LOAD_BATCH, shuffle=False, seed=None).as_numpy_iterator()))


def shuffled_batches(pixels: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
    """One epoch of ``pixels`` in batches, in a new order on every iteration (Keras iterates once
    per epoch; ``repeat`` iterates again), deterministic given ``seed``.

    It shuffles the indices and gathers each batch, as Keras does for arrays: shuffling the images
    themselves copies every 3 KB image through a 55,000-image buffer each epoch, about twice the
    CPU, on the cores the training step needs."""
    images = tf.convert_to_tensor(pixels)
    count = len(pixels)

    @tf.autograph.experimental.do_not_convert  # plain TF ops: nothing for AutoGraph to convert
    def batches_of_indices(epoch_seed: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count, dtype=tf.int64), seed=tf.stack([epoch_seed, tf.constant(0, tf.int64)])
        )
        whole = count // batch_size * batch_size
        batches = tf.data.Dataset.from_tensor_slices(tf.reshape(order[:whole], [-1, batch_size]))
        return batches.concatenate(tf.data.Dataset.from_tensors(order[whole:])) if whole < count else batches

    epoch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    gather = tf.autograph.experimental.do_not_convert(lambda indices: tf.gather(images, indices))
    batches = epoch_seeds.flat_map(batches_of_indices).map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    # Known length, so that Keras can run several steps per call (VaeConfig.steps_per_execution).
    return batches.apply(tf.data.experimental.assert_cardinality(-(-count // batch_size)))


def without_autotune(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` without tf.data's autotuning model.

    Keras makes a new iterator every epoch and for every validation pass, and destroying an
    autotuned iterator joins its model thread: measured here, 0.02 s to 18 s a time, 25 s over a
    default run's epochs and 53 s once at the end of ``fit`` (issue 15). In memory the input is a
    gather per batch: the default parallelism (one call per core) and prefetching keep up."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def input_datasets(fn_args: FnArgs, tf_transform_output, config: VaeConfig):
    """(train, validation, steps_per_epoch, examples_per_epoch): batched datasets of transformed
    pixels (x / 255). ``fn_args.eval_files`` is the validation split (the pipeline's EvalArgs), never the
    eval split the Evaluator judges on."""
    read = functools.partial(
        _transformed_pixels, data_accessor=fn_args.data_accessor, tf_transform_output=tf_transform_output
    )
    if config.input_mode == "memory":
        train_pixels = load_pixels(read, fn_args.train_files)
        eval_pixels = load_pixels(read, fn_args.eval_files)
        logging.info("Loaded %d training and %d validation examples into memory", len(train_pixels), len(eval_pixels))
        train = without_autotune(shuffled_batches(train_pixels, config.batch_size, config.seed))
        evaluation = without_autotune(tf.data.Dataset.from_tensor_slices(eval_pixels).batch(config.batch_size))
        examples = config.steps_per_epoch * config.batch_size if config.steps_per_epoch else len(train_pixels)
    else:
        train = read(fn_args.train_files, batch_size=config.batch_size, shuffle=True, seed=config.seed)
        evaluation = read(fn_args.eval_files, batch_size=config.batch_size, shuffle=False, seed=None)
        examples = config.steps_per_epoch * config.batch_size if config.steps_per_epoch else None
    if config.steps_per_epoch:
        train = train.repeat()
    prefetch = tf.data.AUTOTUNE
    return train.prefetch(prefetch), evaluation.prefetch(prefetch), config.steps_per_epoch, examples


def fit_steps_per_execution(config: VaeConfig, train, evaluation, steps: int | None) -> VaeConfig:
    """``config`` with one step per call when a split streamed from disk has an unknown length:
    Keras must know how many steps an epoch has to run several per call."""
    unknown = tf.data.UNKNOWN_CARDINALITY
    if config.steps_per_execution > 1 and (
        evaluation.cardinality() == unknown or (steps is None and train.cardinality() == unknown)
    ):
        logging.info("One step per call: the input is streamed, of unknown length")
        return config.replace(steps_per_execution=1)
    return config


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite: nothing is exported, so nothing can be blessed or pushed."""


class StopOnNaN(keras.callbacks.Callback):
    """Stops training with TrainingDivergedError as soon as an epoch's loss is not finite.

    Unlike Keras' TerminateOnNaN, which stops quietly and lets the broken weights be exported, it
    fails the Trainer with a message that says what to change. It checks once per epoch: a
    per-batch hook would make Keras fetch the metrics after every step, which costs throughput.
    """

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        bad = {k: v for k, v in (logs or {}).items() if not np.isfinite(v)}
        if bad:
            learning_rate = float(keras.backend.get_value(self.model.optimizer.learning_rate))
            raise TrainingDivergedError(
                f"training diverged in epoch {epoch + 1}: {', '.join(f'{k} is {v}' for k, v in bad.items())}; "
                f"nothing was exported. Lower the learning rate (now {learning_rate:g}: --set learning_rate=...) "
                "or check the input data for NaN values."
            )


class KlWarmup(keras.callbacks.Callback):
    """Raises the KL weight linearly from 1/(n+1) to 1 over the first n epochs."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.model.kl_weight.assign(min(1.0, (epoch + 1) / (self.epochs + 1)))


def training_callbacks(
    config: VaeConfig, model_run_dir: str, examples_per_epoch: int | None, notes: dict | None = None
) -> list:
    """What watches the epochs: divergence, TensorBoard, the training record (with ``notes``), and
    the schedule."""
    callbacks = [
        StopOnNaN(),
        keras.callbacks.TensorBoard(log_dir=model_run_dir, update_freq="epoch"),
        TrainingRecord(os.path.join(model_run_dir, TRAINING_RECORD), examples_per_epoch, notes),
    ]
    if config.kl_warmup_epochs:
        callbacks.append(KlWarmup(config.kl_warmup_epochs))
    if config.lr_plateau_patience:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_neg_elbo", factor=0.5, patience=config.lr_plateau_patience, min_lr=1e-5
            )
        )
    if config.early_stopping_patience:
        # Start judging after warm-up: until then the objective itself is still changing.
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_neg_elbo",
                patience=config.early_stopping_patience,
                restore_best_weights=True,
                start_from_epoch=config.kl_warmup_epochs,
            )
        )
    return callbacks


def warm_start(vae, base_model: str | None, requested: bool = True) -> tuple[bool, str]:
    """Loads the served model's weights into ``vae`` when a warm start was asked for and its
    recorded architecture is the same. Returns (warm, a sentence for the run summary)."""
    if not requested:
        return False, "trained from scratch (warm start off: --warm-start starts from the served model)"
    if not base_model or not tf.io.gfile.exists(os.path.join(base_model, "saved_model.pb")):
        return False, "no model is served yet: trained from scratch"
    served = read_architecture(base_model)
    wanted = json.loads(json.dumps(vae.config.architecture()))  # tuples as lists, as recorded
    if served is None:
        return False, "the served model does not record its architecture (exported before warm starts): from scratch"
    if served != wanted:
        changed = ", ".join(f"{k} {served.get(k)} -> {v}" for k, v in wanted.items() if served.get(k) != v)
        return False, f"the architecture differs from the served model's ({changed}): trained from scratch"
    read_weights(vae, base_model)
    return True, f"warm start from the served model ({base_model})"


def warmup_images(evaluation: tf.data.Dataset, count: int = 8) -> np.ndarray:
    """A few validation images as raw pixels (Transform's x / 255, undone exactly)."""
    pixels = next(iter(evaluation.unbatch().batch(count).take(1))).numpy()
    return np.rint(pixels * 255).astype(np.int64)


def run_fn(fn_args: FnArgs) -> None:
    config = VaeConfig.from_dict((fn_args.custom_config or {}).get("vae", {}))
    logging.info("Training with %s", config)
    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")

    phases = Phases()
    with phases("read"):
        tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
        train, evaluation, steps, examples_per_epoch = input_datasets(fn_args, tf_transform_output, config)
    config = fit_steps_per_execution(config, train, evaluation, steps)
    with phases("build"), distribution_strategy().scope():
        vae = build_vae(config)
        warm, how = warm_start(vae, fn_args.base_model, (fn_args.custom_config or {}).get("warm_start", False))
    logging.info("Weights: %s", how)
    if warm:  # the served model has learnt its posterior: no KL warm-up, a shorter budget
        config = config.replace(epochs=min(config.epochs, config.warm_start_epochs), kl_warmup_epochs=0)
        vae.config = config

    callbacks = training_callbacks(config, fn_args.model_run_dir, examples_per_epoch, {"warm_start": how, "warm": warm})
    with phases("fit"):
        vae.fit(
            train,
            validation_data=evaluation,
            epochs=config.epochs,
            steps_per_epoch=steps,
            callbacks=callbacks,
            verbose=2,
        )
    with phases("calibrate"):
        validation = np.concatenate(list(evaluation.as_numpy_iterator()))
        codes = detectors.encode(vae.encoder, train.take(-(-FIT_CODES // config.batch_size)))
        detector = detectors.fit_detector(
            vae.encoder, vae.decoder, codes, validation, config.anomaly_false_positive_rate, config.seed
        )
    logging.info("Anomaly detector, calibrated on the validation split: %s", detector.to_dict())
    with phases("export"):
        warmup = warmup_images(evaluation)
        export_serving_model(vae, tf_transform_output, fn_args.serving_model_dir, warmup, detector)
    record = next(callback for callback in callbacks if isinstance(callback, TrainingRecord))
    record.save(phase_seconds=phases.seconds)
