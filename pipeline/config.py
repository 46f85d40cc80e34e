"""PipelineConfig: every setting of a vae-mnist run, in one place.

The local runner, the CLI, the tests and the Kubeflow compiler all build a PipelineConfig and
hand it to ``create_pipeline``; nothing else holds paths, names, thresholds or Beam arguments.
Runners without arguments read it from the environment (``PipelineConfig.from_env``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from components import datasets
from model.bounds import Bounds, preset_bounds
from model.config import VaeConfig, check_types, preset
from pipeline.beam import DEFAULT_PROFILE, beam_args
from schema import SCHEMA_FILE

ENV_PREFIX = "VAE_MNIST_"
# Names that become one path component (<serving_root>/<model_name>/, <output_dir>/metadata/<pipeline_name>/).
_PATH_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# The data stages are Beam pipelines; locally the DirectRunner in-process (see pipeline/beam.py).
DEFAULT_BEAM_ARGS = beam_args(DEFAULT_PROFILE)
RELEASE_POLICIES = ("direct", "canary")  # PipelineConfig.release_policy


def _absolute(path: str) -> str:
    """Local paths made absolute (runners change directories); URIs (gs://, s3://) as they are."""
    return path if "://" in path else os.path.abspath(path)


@dataclasses.dataclass
class PipelineConfig:
    pipeline_name: str = "vae-mnist"
    dataset: str = "mnist"
    # Where `vae-mnist data fetch` puts datasets: <data_root>/<dataset>/*.gz.
    data_root: str = "data"
    # IDX files to read; defaults to the fetched dataset. Set it to run on your own IDX files.
    input_dir: str | None = None
    # Pipeline artifacts, ML Metadata and pushed models all live under here...
    output_dir: str = "outputs"
    # ...unless placed elsewhere, e.g. gs://bucket/vae-mnist on Kubeflow. Default: <output_dir>/pipeline_root/<name>.
    pipeline_root: str | None = None
    schema_file: str = SCHEMA_FILE
    records_per_shard: int = 10_000
    # The Trainer chooses its model (early stopping, learning-rate schedule) on the last twelfth of
    # the training images (MNIST: 5,000 of 60,000); the eval split (MNIST's test images) only judges.
    validation_fraction: float = 1 / 12
    # An input directory of span-<N>/ directories (components/spans.py): each run ingests the
    # newest span and trains on the newest span_window spans. spans=None looks at a local
    # input directory when the pipeline is built; say True for spans in a bucket.
    spans: bool | None = None
    span_window: int = 1
    # The drift gate (components/drift_gate.py) stops a span that differs from the one before;
    # thresholds here override its defaults, e.g. {"ink": 0.2}. accept_drift lets one run through.
    drift_thresholds: dict = dataclasses.field(default_factory=dict)
    accept_drift: bool = False
    # Retrain from the served model's weights (same architecture; VaeConfig.warm_start_epochs).
    warm_start: bool = False
    # The model: a preset from model/config.py, with any of its fields overridden.
    preset: str = "detector"
    vae_overrides: dict = dataclasses.field(default_factory=dict)
    # Blessing: the preset's bounds (model/bounds.py) with any of them overridden, e.g.
    # {"neg_elbo": 160, "reconstruction_error_per_digit": [...10 values]}...
    bounds: dict = dataclasses.field(default_factory=dict)
    # ...each digit's bounds apply when the eval split holds at least this many of its images...
    min_eval_images_per_digit: int = 30
    # ...and no regression against the served model: the overall -ELBO and reconstruction error
    # may grow by this many nats, the pixel MSE and every digit's figures by this fraction.
    regression_tolerance_nats: float = 1.0
    regression_tolerance_fraction: float = 0.05
    # Pushed models: <serving_root>/<model_name>/<version>/, the layout TF Serving reads.
    model_name: str = "vae-mnist"
    serving_root: str | None = None  # default: <output_dir>/serving
    # What a push of a blessed model does (components/releases.py): "direct" serves it (TF Serving
    # follows the newest version, unless pinned); "canary" labels it canary beside the stable one.
    release_policy: str = "direct"
    # Seconds between a models.config write that loads a version and one that moves a label onto
    # it (TF Serving must have read the first); None: releases.SETTLE_SECONDS (its poll + 5 s).
    release_settle_seconds: float | None = None
    beam_args: tuple[str, ...] = DEFAULT_BEAM_ARGS
    enable_cache: bool = True

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> PipelineConfig:
        """The defaults, overridden by VAE_MNIST_<FIELD> variables (values read as JSON, else as text).

        For runners that take no arguments, such as ``tfx run create``:
        VAE_MNIST_PRESET=quality VAE_MNIST_VAE_OVERRIDES='{"epochs": 5}' VAE_MNIST_OUTPUT_DIR=/tmp/out.
        """
        environ = os.environ if environ is None else environ
        values = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is None:
                continue
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            values[field.name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)

    def __post_init__(self) -> None:
        """Checks every setting before any work starts: a bad value is one line naming the field."""
        check_types(self)
        for name in ("pipeline_name", "model_name"):
            if not _PATH_COMPONENT.fullmatch(getattr(self, name)) or ".." in getattr(self, name):
                raise ValueError(
                    f"PipelineConfig.{name} must be one plain directory name (letters, digits, '.', '_', '-'), "
                    f"got {getattr(self, name)!r}"
                )
        for name in ("regression_tolerance_nats", "regression_tolerance_fraction"):
            if getattr(self, name) < 0:
                raise ValueError(f"PipelineConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.min_eval_images_per_digit < 1:
            raise ValueError(
                f"PipelineConfig.min_eval_images_per_digit must be positive, got {self.min_eval_images_per_digit}"
            )
        if not 0 < self.validation_fraction < 0.5:
            raise ValueError(f"PipelineConfig.validation_fraction must be in (0, 0.5), got {self.validation_fraction}")
        if self.release_policy not in RELEASE_POLICIES:
            raise ValueError(
                f"PipelineConfig.release_policy must be {' or '.join(RELEASE_POLICIES)}, got {self.release_policy!r}"
            )
        if self.span_window < 1:
            raise ValueError(f"PipelineConfig.span_window must be positive, got {self.span_window}")
        if self.records_per_shard < 1:
            raise ValueError(f"PipelineConfig.records_per_shard must be positive, got {self.records_per_shard}")
        for name in ("output_dir", "data_root"):
            if not getattr(self, name):
                raise ValueError(f"PipelineConfig.{name} must name a directory, got an empty path")
        datasets.get(self.dataset)  # fail early on unknown names and fields
        _ = self.vae, self.evaluation_bounds
        self.data_root = _absolute(self.data_root)
        self.output_dir = _absolute(self.output_dir)
        if self.input_dir:
            self.input_dir = _absolute(self.input_dir)
        self.serving_root = _absolute(self.serving_root or os.path.join(self.output_dir, "serving"))
        self.pipeline_root = _absolute(
            self.pipeline_root or os.path.join(self.output_dir, "pipeline_root", self.pipeline_name)
        )

    def check_local_run_paths(self) -> None:
        """Where a local run writes, checked before it writes anything (one line each): ML
        Metadata's SQLite file needs a local output directory; artifacts need a pipeline root
        TensorFlow writes (local or gs://; no TensorFlow here writes S3:
        components/object_store.py); a directory must not be a file or a dangling link."""
        if "://" in self.output_dir:
            raise ValueError(
                f"--output-dir must be a local directory (ML Metadata's SQLite file lives there), got "
                f"{self.output_dir}; the input dir and the serving root may be in a bucket"
            )
        if self.pipeline_root.startswith(("s3://", "minio://")):
            raise ValueError(
                f"a local run's pipeline root must be local or gs:// (no TensorFlow here writes S3), got "
                f"{self.pipeline_root}; on Kubeflow an s3:// pipeline root works (kubeflow/README.md)"
            )
        for path in (self.output_dir, self.pipeline_root, self.serving_root):
            if "://" in path:
                continue
            if os.path.islink(path) and not os.path.exists(path):
                raise ValueError(f"{path} is a symbolic link to {os.readlink(path)}, which does not exist")
            if os.path.exists(path) and not os.path.isdir(path):
                raise ValueError(f"{path} is a file; a directory is needed there")

    @property
    def vae(self) -> VaeConfig:
        return preset(self.preset).replace(**self.vae_overrides)

    @property
    def evaluation_bounds(self) -> Bounds:
        return preset_bounds(self.preset).replace(**self.bounds)

    @property
    def drift_gate_thresholds(self) -> dict[str, float]:
        from components.drift_gate import DEFAULT_THRESHOLDS  # TFX: heavy

        unknown = set(self.drift_thresholds) - set(DEFAULT_THRESHOLDS)
        if unknown:
            known = ", ".join(sorted(DEFAULT_THRESHOLDS))
            raise ValueError(f"PipelineConfig.drift_thresholds: unknown features {sorted(unknown)}; known: {known}")
        thresholds = {**DEFAULT_THRESHOLDS, **self.drift_thresholds}
        for name, value in thresholds.items():
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
            if not ok:
                raise ValueError(f"PipelineConfig.drift_thresholds[{name!r}] must be a number >= 0, got {value!r}")
        return {name: float(value) for name, value in thresholds.items()}

    @property
    def serving_model_dir(self) -> str:
        """Where Pusher writes versions and TF Serving's base_path points."""
        return os.path.join(self.serving_root, self.model_name)

    @property
    def dataset_spec(self) -> datasets.DatasetSpec:
        return datasets.get(self.dataset)

    @property
    def input_base(self) -> str:
        return self.input_dir or os.path.join(self.data_root, self.dataset)

    @property
    def reads_spans(self) -> bool:
        """Whether the input directory holds span-<N>/ directories."""
        from components.spans import find_spans

        if self.spans is not None:
            return self.spans
        return "://" not in self.input_base and bool(find_spans(self.input_base))

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_dir, "metadata", self.pipeline_name, "metadata.db")
