"""VaeConfig: the model's every knob, and the named presets.

The pipeline passes a VaeConfig to the Trainer as ``custom_config`` (a JSON-able dict), so one
typed object decides the architecture, the optimiser and the training schedule.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from schema import IMAGE_SIDE, NUM_PIXELS

ARCHITECTURE_FIELDS = ("hidden_units", "latent_dim", "activation", "conv", "conv_filters")
ACTIVATIONS = ("relu", "elu", "selu", "gelu", "swish", "tanh", "softplus", "leaky_relu")


@dataclasses.dataclass(frozen=True)
class VaeConfig:
    # Architecture. The MLP is 784 -> hidden... -> latent -> reversed(hidden)... -> 784.
    hidden_units: tuple[int, ...] = (256,)
    latent_dim: int = 2
    activation: str = "relu"
    # A convolutional encoder/decoder (two stride-2 conv layers each way) instead of the MLP;
    # hidden_units then sizes the dense layers between the convolutions and the latent space.
    conv: bool = False
    conv_filters: tuple[int, ...] = (32, 64)
    # Optimisation.
    learning_rate: float = 1e-3
    batch_size: int = 32
    epochs: int = 10
    steps_per_epoch: int | None = None  # None: one pass over the training split
    # Training (and validation) steps per call into the compiled graph. One step per call costs the
    # tutorial network a third of its epoch in Keras' per-step Python and dispatch (4.6 s an epoch
    # against 3.0 s at 32, 2 cores): small networks want many (issue 15).
    steps_per_execution: int = 32
    # KL warm-up: the KL term's weight rises linearly from 0 to 1 over this many epochs (0: off).
    kl_warmup_epochs: int = 0
    early_stopping_patience: int = 5  # epochs without a better validation loss; 0: off
    # Halve the learning rate after this many epochs without a better validation loss; 0: off.
    lr_plateau_patience: int = 0
    # Warm start (PipelineConfig.warm_start): a retrain from the served model's weights runs at
    # most this many epochs, without KL warm-up (the served model has learnt its posterior).
    warm_start_epochs: int = 8
    # Input: "memory" loads the transformed split once into RAM (the fastest path for MNIST-sized
    # data); "stream" reads it from disk every epoch (for data larger than RAM).
    input_mode: str = "memory"
    # The anomaly threshold: the served ``anomaly_score`` above which ``is_anomaly`` is true, set
    # after training so that this fraction of the validation split is flagged.
    anomaly_false_positive_rate: float = 0.01
    mixed_precision: bool = False  # float16 compute on GPUs
    seed: int = 42

    def __post_init__(self) -> None:
        check_types(self)
        for name, minimum in _MINIMUM.items():
            value = getattr(self, name)
            for item in value if isinstance(value, tuple) else [value]:
                if item is not None and item < minimum:
                    raise ValueError(f"VaeConfig.{name} must be at least {minimum}, got {value!r}")
        for name, maximum in _MAXIMUM.items():
            value = getattr(self, name)
            for item in value if isinstance(value, tuple) else [value]:
                if item is not None and item > maximum:
                    raise ValueError(f"VaeConfig.{name} must be at most {maximum:,}, got {value!r}")
        if not self.hidden_units:
            raise ValueError("VaeConfig.hidden_units must name at least one layer, e.g. [256]")
        if self.conv and IMAGE_SIDE % 2 ** len(self.conv_filters):
            raise ValueError(
                f"VaeConfig.conv_filters: at most {int(math.log2(IMAGE_SIDE & -IMAGE_SIDE))} layers "
                f"({IMAGE_SIDE} pixels must halve exactly at each), got {list(self.conv_filters)}"
            )
        if self.parameter_count() > MAX_PARAMETERS:
            raise ValueError(
                f"VaeConfig: the network would hold {self.parameter_count():,} weights "
                f"({self.parameter_count() * TRAINING_BYTES_PER_WEIGHT / 2**30:.1f} GB to train with Adam); "
                f"at most {MAX_PARAMETERS:,} (hidden_units, latent_dim, conv_filters)"
            )
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"VaeConfig.learning_rate must be positive, got {self.learning_rate!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"VaeConfig.activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if not 0 < self.anomaly_false_positive_rate < 1:
            raise ValueError(
                f"VaeConfig.anomaly_false_positive_rate must be in (0, 1), got {self.anomaly_false_positive_rate!r}"
            )
        if self.input_mode not in ("memory", "stream"):
            raise ValueError(f"VaeConfig.input_mode must be 'memory' or 'stream', got {self.input_mode!r}")

    def parameter_count(self) -> int:
        """The network's weights, counted from the architecture as model/vae.py builds it."""

        def dense(inputs: int, units: int) -> int:
            return inputs * units + units

        def conv(channels: int, filters: int) -> int:  # 3x3 kernels
            return 9 * channels * filters + filters

        count, width, channels = 0, NUM_PIXELS, 1
        if self.conv:
            side = IMAGE_SIDE
            for filters in self.conv_filters:
                count, channels, side = count + conv(channels, filters), filters, -(-side // 2)
            width = side * side * channels
        for units in self.hidden_units:
            count, width = count + dense(width, units), units
        count += 2 * dense(width, self.latent_dim)  # z_mean and z_log_var
        width = self.latent_dim
        for units in reversed(self.hidden_units):
            count, width = count + dense(width, units), units
        if not self.conv:
            return count + dense(width, NUM_PIXELS)
        side = IMAGE_SIDE // 2 ** len(self.conv_filters)
        count += dense(width, side * side * channels)
        for filters in reversed(self.conv_filters):
            count, channels = count + conv(channels, filters), filters
        return count + conv(channels, 1)

    def architecture(self) -> dict[str, Any]:
        """The fields that decide the weights' shapes and meaning: equal ones can share weights."""
        return {name: getattr(self, name) for name in ARCHITECTURE_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VaeConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown VaeConfig fields: {', '.join(sorted(unknown))}")
        return cls(**values)

    @staticmethod
    def parse_overrides(assignments: list[str] | None, flag: str = "--set") -> dict[str, Any]:
        """``FIELD=VALUE`` strings (the CLI's and benchmarks' ``--set`` and ``--bound``) as a dict;
        values are read as JSON (``epochs=3``, ``hidden_units=[512,256]``), else kept as text
        (``activation=elu``)."""
        changes = {}
        for assignment in assignments or []:
            field, equals, value = assignment.partition("=")
            if not equals or not field:
                example = "epochs=3" if flag == "--set" else "neg_elbo=160"
                raise ValueError(f"{flag} takes FIELD=VALUE, e.g. {example}, got {assignment!r}")
            try:
                changes[field] = json.loads(value)
            except json.JSONDecodeError:
                changes[field] = value
        return changes

    def replace(self, **changes: Any) -> VaeConfig:
        return VaeConfig.from_dict({**self.to_dict(), **changes})


# The largest network we train: 50 million weights need 0.8 GB with Adam (weights, gradients and
# two moments, float32: 16 bytes a weight) before activations; a 10-million-unit layer would need
# 117 GB, and TensorFlow would say so only after the data stages. Our largest preset holds 1.7 M.
MAX_PARAMETERS = 50_000_000
TRAINING_BYTES_PER_WEIGHT = 16
# Integer fields' largest allowed values (for tuples: of every item): what memory, int32 shapes
# and numpy's seeds allow.
_MAXIMUM = {
    "hidden_units": 1 << 16,
    "latent_dim": 1 << 12,
    "conv_filters": 1 << 12,
    "batch_size": 1 << 16,
    "epochs": 100_000,
    "steps_per_epoch": 1 << 31,
    "steps_per_execution": 1 << 20,
    "kl_warmup_epochs": 100_000,
    "early_stopping_patience": 100_000,
    "lr_plateau_patience": 100_000,
    "warm_start_epochs": 100_000,
    "seed": 2**32 - 1,  # numpy's seeds are 32-bit
}
# Integer fields' smallest allowed values (for tuples: of every item).
_MINIMUM = {
    "hidden_units": 1,
    "latent_dim": 1,
    "conv_filters": 1,
    "batch_size": 1,
    "epochs": 1,
    "steps_per_epoch": 1,
    "steps_per_execution": 1,
    "kl_warmup_epochs": 0,
    "early_stopping_patience": 0,
    "lr_plateau_patience": 0,
    "warm_start_epochs": 1,
    "seed": 0,
}


def check_types(settings: Any) -> None:
    """Converts and checks a settings dataclass's fields against their annotations, so that
    ``--set epochs=1.5`` or ``VAE_MNIST_MIN_EVAL_IMAGES_PER_DIGIT=abc`` fails at once, naming the field,
    instead of deep inside a run. Integers stay integers (1.5 is refused, not truncated); a tuple
    field also takes a single item (``hidden_units=512``)."""
    owner = type(settings).__name__
    for field in dataclasses.fields(settings):
        kind = str(field.type).replace(" ", "")
        value = getattr(settings, field.name)
        if kind.endswith("|None"):
            if value is None:
                continue
            kind = kind[: -len("|None")]
        where = f"{owner}.{field.name}"
        if kind.startswith("tuple["):
            item_kind = kind[len("tuple[") :].split(",")[0]
            items = value if isinstance(value, (list, tuple)) else [value]
            converted = tuple(_checked(where, item_kind, item, plural=True) for item in items)
        else:
            converted = _checked(where, kind, value)
        object.__setattr__(settings, field.name, converted)


def _checked(where: str, kind: str, value: Any, plural: bool = False) -> Any:
    expected = {"int": "an integer", "float": "a number", "str": "text", "bool": "true or false", "dict": "a mapping"}
    expected_items = {"int": "integers", "float": "numbers", "str": "strings"}
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "dict": isinstance(value, dict),
    }[kind]
    if not ok:
        what = f"a list of {expected_items[kind]}" if plural else expected[kind]
        raise ValueError(f"{where} must be {what}, got {value!r}")
    return float(value) if kind == "float" else value


PRESETS: dict[str, VaeConfig] = {
    # The tutorial's network (784-256-2-256-784 MLP), trained well: larger batches, a higher
    # learning rate halved on plateaus, up to 60 epochs (about three minutes on two CPU cores;
    # epochs 61-80 bought 0.1 nats of validation -ELBO, bench/train_quality.py).
    "tutorial": VaeConfig(
        batch_size=128, learning_rate=3e-3, epochs=60, lr_plateau_patience=3, early_stopping_patience=6
    ),
    # The default: the tutorial's network and schedule with a 20-D latent space. At the same cost,
    # codes that keep the digits apart, so a digit the model never saw lands between the clusters,
    # where the anomaly detector's latent mixture finds it (model/detector.py): with 2-D codes it
    # lands inside the clusters of the digits it resembles (bench/anomaly_auroc.py, BENCHMARKS.md).
    "detector": VaeConfig(
        latent_dim=20, batch_size=128, learning_rate=3e-3, epochs=60, lr_plateau_patience=3, early_stopping_patience=6
    ),
    # The tutorial exactly as written: Adam 1e-3, batch 32, 10 epochs. The reference point.
    "tutorial_as_written": VaeConfig(),
    # The best 2-D latent space for the budget: a conv VAE, KL warm-up, larger batches, more epochs.
    "latent2": VaeConfig(conv=True, hidden_units=(256,), latent_dim=2, batch_size=128, epochs=40, kl_warmup_epochs=5),
    # Reconstruction quality: a 20-D latent space and a wider, deeper MLP.
    "quality": VaeConfig(hidden_units=(512, 256), latent_dim=20, batch_size=128, epochs=40, kl_warmup_epochs=5),
    # Seconds, not minutes: for tests and smoke runs.
    "smoke": VaeConfig(batch_size=64, epochs=2, early_stopping_patience=0),
}


def preset(name: str) -> VaeConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
