"""VaeConfig: the model's every knob, and the named presets.

The pipeline passes a VaeConfig to the Trainer as ``custom_config`` (a JSON-able dict), so one
typed object decides the architecture, the optimiser and the training schedule.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

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
    # KL warm-up: the KL term's weight rises linearly from 0 to 1 over this many epochs (0: off).
    kl_warmup_epochs: int = 0
    early_stopping_patience: int = 5  # epochs without a better validation loss; 0: off
    # Halve the learning rate after this many epochs without a better validation loss; 0: off.
    lr_plateau_patience: int = 0
    # Input: "memory" loads the transformed split once into RAM (the fastest path for MNIST-sized
    # data); "stream" reads it from disk every epoch (for data larger than RAM).
    input_mode: str = "memory"
    mixed_precision: bool = False  # float16 compute on GPUs
    seed: int = 42

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_units", tuple(int(u) for u in self.hidden_units))
        object.__setattr__(self, "conv_filters", tuple(int(f) for f in self.conv_filters))
        if self.latent_dim < 1 or not self.hidden_units or min(self.hidden_units) < 1:
            raise ValueError(f"latent_dim, hidden_units must be positive: {self.latent_dim}, {self.hidden_units}")
        if min(self.early_stopping_patience, self.lr_plateau_patience, self.kl_warmup_epochs) < 0:
            raise ValueError("patiences and warm-up epochs must not be negative")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError(f"batch_size and epochs must be positive, got {self.batch_size}, {self.epochs}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.input_mode not in ("memory", "stream"):
            raise ValueError(f"input_mode must be 'memory' or 'stream', got {self.input_mode!r}")

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
    def parse_overrides(assignments: list[str] | None) -> dict[str, Any]:
        """``FIELD=VALUE`` strings (the CLI's and benchmarks' ``--set``) as a dict; values are read
        as JSON (``epochs=3``, ``hidden_units=[512,256]``), else kept as text (``activation=elu``)."""
        changes = {}
        for assignment in assignments or []:
            field, _, value = assignment.partition("=")
            try:
                changes[field] = json.loads(value)
            except json.JSONDecodeError:
                changes[field] = value
        return changes

    def replace(self, **changes: Any) -> VaeConfig:
        return VaeConfig.from_dict({**self.to_dict(), **changes})


PRESETS: dict[str, VaeConfig] = {
    # The tutorial's network (784-256-2-256-784 MLP), trained well: larger batches, a higher
    # learning rate halved on plateaus, up to 80 epochs (about two minutes on two CPU cores).
    "tutorial": VaeConfig(
        batch_size=128, learning_rate=3e-3, epochs=80, lr_plateau_patience=3, early_stopping_patience=6
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


# The Evaluator's absolute bound on the eval split's mean negative ELBO (nats per image, at the
# posterior mean) for a model trained with each preset: clearly above what the preset reaches on
# MNIST, clearly below a broken model (predicting 1/2 everywhere costs 543 nats).
MAX_NEG_ELBO = {"tutorial": 165.0, "tutorial_as_written": 170.0, "latent2": 160.0, "quality": 115.0, "smoke": 260.0}


def preset(name: str) -> VaeConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
