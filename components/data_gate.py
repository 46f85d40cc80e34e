"""DataGate: stops the run when ExampleValidator found anomalies.

ExampleValidator only *records* anomalies; a pipeline that goes on to train on bad data is worse
than one that stops. This component fails when any split has an anomaly, with a message that
names the split, the feature and the problem, and the stages after it (Transform, Trainer) are
wired to run only after it succeeds.
"""

import os

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.components.example_validator.executor import DEFAULT_FILE_NAME
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import io_utils

from components.tfx_dsl import InputArtifact, component


class DataAnomaliesError(RuntimeError):
    """The data does not match the curated schema."""


def load_anomalies(anomalies: standard_artifacts.ExampleAnomalies) -> dict[str, anomalies_pb2.Anomalies]:
    """Reads ExampleValidator's per-split SchemaDiff.pb files."""
    result = {}
    for split in artifact_utils.decode_split_names(anomalies.split_names):
        path = os.path.join(artifact_utils.get_split_uri([anomalies], split), DEFAULT_FILE_NAME)
        result[split] = anomalies_pb2.Anomalies.FromString(io_utils.read_bytes_file(path))
    return result


def describe(anomalies_by_split: dict[str, anomalies_pb2.Anomalies]) -> list[str]:
    """One readable line per anomaly: split, feature, short and long description; and a line for
    a split without examples, which TFDV marks ``data_missing`` but reports no anomaly for."""
    lines = []
    for split, anomalies in sorted(anomalies_by_split.items()):
        if anomalies.data_missing:  # TFDV validates nothing on an empty split and says only this
            lines.append(f"split '{split}': holds no examples")
        for feature, info in sorted(anomalies.anomaly_info.items()):
            lines.append(f"split '{split}', feature '{feature}': {info.short_description}: {info.description}")
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            lines.append(f"split '{split}', dataset: {info.short_description}: {info.description}")
    return lines


@component
def DataGate(anomalies: InputArtifact[standard_artifacts.ExampleAnomalies]) -> None:  # noqa: N802
    """Raises DataAnomaliesError, failing the run, if any split has an anomaly."""
    problems = describe(load_anomalies(anomalies))
    if problems:
        raise DataAnomaliesError(
            "the data does not match the schema; the run stops before training.\n  "
            + "\n  ".join(problems)
            + f"\n(ExampleValidator's report: {anomalies.uri})"
        )
