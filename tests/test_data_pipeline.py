"""The data stages under the real LocalDagRunner and ML Metadata: ExampleGen output matches the
IDX source exactly, and bad data stops the run at the gate with a message that names it."""

import gzip
import os
import shutil

import numpy as np
import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2

from components import datasets, idx_format
from components.data_gate import DataAnomaliesError
from pipeline import cli
from pipeline.config import PipelineConfig
from pipeline.local_runner import run_locally
from tests.helpers import (
    DATA_ROOT,
    DATA_STAGES,
    LOOSE_BOUNDS,
    expected_splits,
    read_examples,
    read_idx_dataset,
    states,
    store_of,
    write_idx_dataset,
)
from tests.test_idx_format import corrupt_deflate


def test_every_data_stage_succeeds(small_run):
    assert {node: states(small_run)[node] for node in DATA_STAGES} == dict.fromkeys(DATA_STAGES, "ran")


@pytest.mark.parametrize("split", ["train", "valid", "eval"])
def test_examples_match_the_idx_source_exactly_and_in_order(small_run, split):
    source_images, source_labels = expected_splits(small_run)[split]
    images, labels = read_examples(small_run, split)
    assert images.shape == (len(source_images), 784)  # the header's count, 784 pixels each
    np.testing.assert_array_equal(images, source_images.reshape(-1, 784))
    np.testing.assert_array_equal(labels[:, 0], source_labels)


def test_examples_artifact_records_splits_and_format(small_run):
    [examples] = [a for a in store_of(small_run).get_artifacts_by_type("Examples") if "/IdxExampleGen/" in a.uri]
    assert examples.properties["split_names"].string_value == '["train", "valid", "eval"]'
    assert examples.custom_properties["payload_format"].string_value == "FORMAT_TF_EXAMPLE"


def test_validator_found_no_anomalies_on_real_mnist(small_run):
    [anomalies] = store_of(small_run).get_artifacts_by_type("ExampleAnomalies")
    for split in ("train", "valid", "eval"):
        with open(os.path.join(anomalies.uri, f"Split-{split}", "SchemaDiff.pb"), "rb") as f:
            assert not anomalies_pb2.Anomalies.FromString(f.read()).anomaly_info


def test_label_out_of_range_stops_the_run_at_the_gate(tmp_path, small_mnist, capsys):
    (x_train, y_train), (x_test, y_test) = read_idx_dataset(small_mnist).values()
    y_train = y_train.copy()
    y_train[7] = 11
    bad = write_idx_dataset(str(tmp_path / "bad"), {"train": (x_train, y_train), "eval": (x_test, y_test)})
    out = tmp_path / "out"
    argv = ["run", "--input-dir", bad, "--output-dir", str(out)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "run stopped" in err
    assert "split 'train', feature 'label': Out-of-range values: Unexpectedly large value: 11." in err
    config = PipelineConfig(output_dir=str(out))
    # No Transform; the data was still scored and compared (nothing served, no earlier span).
    scored = dict.fromkeys(("ServedModel", "SpanScores", "DriftGate"), "ran")
    assert states(config) == {**dict.fromkeys(DATA_STAGES[:-1], "ran"), **scored, "DataGate": "FAILED"}


def test_pixel_out_of_range_stops_the_run_at_the_gate(tmp_path, small_mnist):
    """IDX can hold 16-bit pixels; a 300 must not reach training."""
    (x_train, y_train), (x_test, y_test) = read_idx_dataset(small_mnist).values()
    x_test = x_test.astype(np.int16)
    x_test[3, 14, 14] = 300
    bad = write_idx_dataset(str(tmp_path / "bad"), {"train": (x_train, y_train), "eval": (x_test, y_test)})
    config = PipelineConfig(input_dir=bad, output_dir=str(tmp_path / "out"))
    with pytest.raises(DataAnomaliesError, match="split 'eval', feature 'image'") as raised:
        run_locally(config, progress=None)
    assert "train" not in str(raised.value).split("feature 'image'")[0].split("\n")[-1]
    assert states(config)["DataGate"] == "FAILED"


def test_truncated_idx_fails_example_gen_and_registers_no_examples(tmp_path, small_mnist):
    bad = tmp_path / "bad"
    shutil.copytree(small_mnist, bad)
    images = bad / "t10k-images-idx3-ubyte.gz"
    with gzip.open(images) as f:
        raw = f.read()
    with gzip.open(images, "wb") as f:  # a download that stopped 1,000 bytes short
        f.write(raw[:-1000])

    config = PipelineConfig(input_dir=str(bad), output_dir=str(tmp_path / "out"))
    with pytest.raises(idx_format.IdxError, match="t10k-images-idx3-ubyte.gz: truncated"):
        run_locally(config, progress=None)
    assert states(config) == {"IdxExampleGen": "FAILED"}
    live = [a for a in store_of(config).get_artifacts_by_type("Examples") if a.state == a.LIVE]
    assert live == []


def test_corrupt_gzip_input_stops_the_run_with_one_line(tmp_path, small_mnist, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(small_mnist, bad)
    corrupt_deflate(str(bad / "train-labels-idx1-ubyte.gz"))
    argv = ["run", "--input-dir", str(bad), "--output-dir", str(tmp_path / "out"), "--beam-profile", "direct"]
    assert cli.main(argv) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(
        f"vae-mnist: error: IdxExampleGen: {bad}/train-labels-idx1-ubyte.gz: cannot be read as gzip: Error -3 while"
    )


def test_an_empty_split_stops_at_the_gate():
    """TFDV validates nothing on a split without examples and reports only ``data_missing``;
    the gate turns that into a stop, before Transform and the Trainer."""
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import statistics_pb2

    from components.data_gate import describe
    from schema import SCHEMA_FILE

    empty = statistics_pb2.DatasetFeatureStatisticsList(datasets=[statistics_pb2.DatasetFeatureStatistics()])
    anomalies = tfdv.validate_statistics(empty, tfdv.load_schema_text(SCHEMA_FILE), environment="TRAINING")
    assert describe({"eval": anomalies}) == ["split 'eval': holds no examples"]


@pytest.mark.full_data
def test_full_mnist_run(tmp_path, mnist_arrays):
    config = PipelineConfig(data_root=DATA_ROOT, output_dir=str(tmp_path), preset="smoke")
    run_locally(config, progress=None)
    assert set(states(config).values()) == {"ran"}
    expected = expected_splits(config)
    for split, count in (("train", 55_000), ("valid", 5_000), ("eval", 10_000)):
        images, labels = read_examples(config, split)
        assert len(labels) == count
        source_images, source_labels = expected[split]
        np.testing.assert_array_equal(images, source_images.reshape(-1, 784))
        np.testing.assert_array_equal(labels[:, 0], source_labels)


@pytest.mark.full_data
@pytest.mark.skipif(not os.path.isdir(datasets.FASHION_MNIST.debian_dir), reason="dataset-fashion-mnist not installed")
def test_full_fashion_mnist_run_through_the_cli(tmp_path, capsys):
    argv = ["run", "--dataset", "fashion_mnist", "--source", "debian", "--data-root", str(tmp_path / "data")]
    # Fashion-MNIST costs more nats per image than digits: the bounds (calibrated on MNIST) are set by hand.
    argv += ["--preset", "smoke", *(f"--bound={field}={bound}" for field, bound in LOOSE_BOUNDS.items())]
    assert cli.main([*argv, "--output-dir", str(tmp_path / "out")]) == 0
    config = PipelineConfig(dataset="fashion_mnist", data_root=str(tmp_path / "data"), output_dir=str(tmp_path / "out"))
    assert set(states(config).values()) == {"ran"}
    assert len(os.listdir(config.serving_model_dir)) == 1  # blessed and pushed
    images, labels = read_examples(config, "eval")
    source_images, source_labels = read_idx_dataset(config.input_base, datasets.FASHION_MNIST)["eval"]
    np.testing.assert_array_equal(images, source_images.reshape(-1, 784))
    np.testing.assert_array_equal(labels[:, 0], source_labels)
