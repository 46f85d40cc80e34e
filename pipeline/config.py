"""PipelineConfig: every setting of a vae-mnist run, in one place.

The local runner, the CLI, the tests and the Kubeflow compiler all build a PipelineConfig and
hand it to ``create_pipeline``; nothing else holds paths, names or Beam arguments.
"""

from __future__ import annotations

import dataclasses
import os

from components import datasets
from model.config import VaeConfig, preset
from schema import SCHEMA_FILE

# DirectRunner with one worker process per core: the data stages are Beam pipelines.
DEFAULT_BEAM_ARGS = ("--direct_running_mode=multi_processing", "--direct_num_workers=0")


@dataclasses.dataclass
class PipelineConfig:
    pipeline_name: str = "vae-mnist"
    dataset: str = "mnist"
    # Where `vae-mnist data fetch` puts datasets: <data_root>/<dataset>/*.gz.
    data_root: str = "data"
    # IDX files to read; defaults to the fetched dataset. Set it to run on your own IDX files.
    input_dir: str | None = None
    # Pipeline artifacts, ML Metadata and pushed models all live under here.
    output_dir: str = "outputs"
    schema_file: str = SCHEMA_FILE
    records_per_shard: int = 10_000
    # The model: a preset from model/config.py, or any VaeConfig.
    vae: VaeConfig = dataclasses.field(default_factory=lambda: preset("tutorial"))
    beam_args: tuple[str, ...] = DEFAULT_BEAM_ARGS
    enable_cache: bool = True

    def __post_init__(self) -> None:
        datasets.get(self.dataset)  # fail early on an unknown name
        self.data_root = os.path.abspath(self.data_root)
        self.output_dir = os.path.abspath(self.output_dir)
        if self.input_dir:
            self.input_dir = os.path.abspath(self.input_dir)

    @property
    def dataset_spec(self) -> datasets.DatasetSpec:
        return datasets.get(self.dataset)

    @property
    def input_base(self) -> str:
        return self.input_dir or os.path.join(self.data_root, self.dataset)

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_dir, "pipeline_root", self.pipeline_name)

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_dir, "metadata", self.pipeline_name, "metadata.db")
