"""Bounds: what the Evaluator requires of a model before it is blessed, per preset.

Every bound is an upper bound on a per-image mean over the eval split, scored at the posterior mean
(the ``score_tf_example`` signature): the negative ELBO and the reconstruction error in nats, and
the pixel MSE on the [0, 1] scale. The reconstruction bounds also hold for each digit alone, so one
digit falling apart cannot hide in the mean: a 1 the model never saw costs about 145 nats against
the 60 a trained 1 costs, while the mean over all digits hardly moves.

The presets' bounds are calibrated on MNIST (``bench/train_quality.py`` measures every preset;
``bench/report.py`` puts the bounds its figures give beside the shipped ones in BENCHMARKS.md):
each is the preset's measured value plus ``MARGIN``, rounded up, which leaves room for retraining
noise and refuses a digit the model has not learnt. On other data, set them (``--bound FIELD=VALUE``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from model.config import PRESETS, check_types
from schema import NUM_CLASSES

MARGIN = 0.10  # a preset's bound is its measured value times 1 + MARGIN


@dataclasses.dataclass(frozen=True)
class Bounds:
    neg_elbo: float
    reconstruction_error: float
    pixel_mse: float
    # Index d bounds digit d (label d). A single value bounds every digit.
    reconstruction_error_per_digit: tuple[float, ...]
    pixel_mse_per_digit: tuple[float, ...]

    def __post_init__(self) -> None:
        check_types(self)
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, tuple):
                if len(value) == 1:
                    value = value * NUM_CLASSES
                    object.__setattr__(self, field.name, value)
                if len(value) != NUM_CLASSES:
                    raise ValueError(
                        f"Bounds.{field.name} takes one bound per digit ({NUM_CLASSES}) or one for all, "
                        f"got {len(value)}"
                    )
            if any(item <= 0 for item in (value if isinstance(value, tuple) else [value])):
                raise ValueError(f"Bounds.{field.name} must be positive, got {value!r}")

    def replace(self, **changes: Any) -> Bounds:
        unknown = set(changes) - {field.name for field in dataclasses.fields(self)}
        if unknown:
            raise ValueError(
                f"unknown bounds: {', '.join(sorted(unknown))}; known: "
                f"{', '.join(field.name for field in dataclasses.fields(self))}"
            )
        return dataclasses.replace(self, **changes)

    def per_digit(self, score: str) -> tuple[float, ...] | None:
        """The per-digit bounds on a score, or None if only its mean is bounded."""
        return getattr(self, f"{score}_per_digit", None)

    def overall(self) -> dict[str, float]:
        """{score: bound on its mean over the whole eval split}."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.endswith("_per_digit")}


def calibrated(measured: dict[str, float], per_digit: dict[str, list[float]]) -> Bounds:
    """Bounds from a preset's measured figures: each value plus MARGIN, rounded up (to 0.5 nats,
    to 0.0005 for the pixel MSE). bench/report.py shows them beside the table below."""

    def up(score: str, value: float) -> float:
        step = 0.0005 if score == "pixel_mse" else 0.5
        return round(math.ceil(value * (1 + MARGIN) / step) * step, 4)

    return Bounds(
        **{score: up(score, value) for score, value in measured.items()},
        **{f"{score}_per_digit": tuple(up(score, v) for v in values) for score, values in per_digit.items()},
    )


PRESET_BOUNDS: dict[str, Bounds] = {
    # calibrated() of bench/train_quality.py's figures, 2026-11-25 (BENCHMARKS.md shows both).
    "tutorial": Bounds(
        neg_elbo=163.5,
        reconstruction_error=156.5,
        pixel_mse=0.0445,
        reconstruction_error_per_digit=(177.0, 58.5, 200.0, 177.5, 163.5, 179.5, 160.5, 140.5, 184.5, 139.0),
        pixel_mse_per_digit=(0.049, 0.012, 0.061, 0.0515, 0.048, 0.0535, 0.0455, 0.0395, 0.0545, 0.038),
    ),
    "detector": Bounds(  # calibrated() of bench/train_quality.py's figures, 2026-12-02
        neg_elbo=103.0,
        reconstruction_error=76.0,
        pixel_mse=0.0095,
        reconstruction_error_per_digit=(87.5, 38.0, 89.5, 83.5, 75.5, 85.0, 79.5, 64.0, 93.5, 71.0),
        pixel_mse_per_digit=(0.01, 0.0035, 0.013, 0.0105, 0.01, 0.012, 0.01, 0.0075, 0.0135, 0.008),
    ),
    "tutorial_as_written": Bounds(
        neg_elbo=169.5,
        reconstruction_error=163.0,
        pixel_mse=0.0475,
        reconstruction_error_per_digit=(185.0, 64.5, 214.0, 182.0, 171.0, 184.0, 171.5, 140.5, 186.5, 146.5),
        pixel_mse_per_digit=(0.053, 0.0145, 0.0685, 0.0535, 0.051, 0.0555, 0.049, 0.04, 0.056, 0.041),
    ),
    "latent2": Bounds(
        neg_elbo=157.5,
        reconstruction_error=150.0,
        pixel_mse=0.0415,
        reconstruction_error_per_digit=(165.0, 57.0, 191.5, 171.0, 154.0, 176.0, 147.5, 131.5, 182.0, 138.0),
        pixel_mse_per_digit=(0.043, 0.011, 0.057, 0.0485, 0.043, 0.0515, 0.0395, 0.0355, 0.0525, 0.037),
    ),
    "quality": Bounds(
        neg_elbo=101.0,
        reconstruction_error=75.0,
        pixel_mse=0.0095,
        reconstruction_error_per_digit=(88.0, 38.0, 87.0, 82.5, 74.0, 83.0, 77.5, 64.5, 92.0, 70.5),
        pixel_mse_per_digit=(0.0105, 0.0035, 0.012, 0.0105, 0.0095, 0.011, 0.009, 0.0075, 0.013, 0.008),
    ),
    # Calibrated on the tests' sample (2,000 training and 500 test images, 3 epochs), where a
    # digit's figures move by up to 12 % between retrains, with a margin of 15 %.
    "smoke": Bounds(
        neg_elbo=260.0,
        reconstruction_error=234.0,
        pixel_mse=0.0745,
        reconstruction_error_per_digit=(294.5, 155.5, 262.5, 258.0, 238.5, 247.5, 258.0, 230.0, 233.5, 223.5),
        pixel_mse_per_digit=(0.098, 0.0495, 0.083, 0.083, 0.077, 0.0795, 0.083, 0.0715, 0.075, 0.069),
    ),
}


def preset_bounds(name: str) -> Bounds:
    try:
        return PRESET_BOUNDS[name]
    except KeyError:
        raise ValueError(f"no bounds for preset {name!r}; known: {', '.join(PRESET_BOUNDS)}") from None


assert set(PRESET_BOUNDS) == set(PRESETS), "every preset needs its bounds"
