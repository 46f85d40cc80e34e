"""`vae-mnist data spans`: a dataset cut into span-N directories, some of them drifted."""

import os

import numpy as np
import pytest

from components import datasets, spans
from pipeline import cli
from tests.helpers import read_idx_dataset, write_idx_dataset


@pytest.fixture(scope="module")
def source(tmp_path_factory, mnist_arrays) -> str:
    """3,000 training and 600 test images of real MNIST."""
    (x_train, y_train), (x_test, y_test) = mnist_arrays["train"], mnist_arrays["eval"]
    arrays = {"train": (x_train[:3000], y_train[:3000]), "eval": (x_test[:600], y_test[:600])}
    return write_idx_dataset(str(tmp_path_factory.mktemp("source")), arrays)


def test_spans_cut_every_split_in_source_order(tmp_path, source):
    written = spans.write_spans(source, str(tmp_path), 3)
    assert written == spans.find_spans(str(tmp_path)) == {n: str(tmp_path / f"span-{n}") for n in (1, 2, 3)}
    original = read_idx_dataset(source)
    cut = [read_idx_dataset(directory) for directory in written.values()]
    for split in ("train", "eval"):
        for i in (0, 1):  # images, labels
            np.testing.assert_array_equal(np.concatenate([span[split][i] for span in cut]), original[split][i])
    assert [len(span["eval"][1]) for span in cut] == [200, 200, 200]  # every span keeps its own eval images


def test_drifts_change_only_their_span(tmp_path, source):
    drifts = [spans.Drift.parse(text) for text in ("2:invert", "3:rotate=90", "3:without=4")]
    written = spans.write_spans(source, str(tmp_path), 3, drifts)
    clean, inverted, turned = (read_idx_dataset(written[n]) for n in (1, 2, 3))
    original = read_idx_dataset(source)
    np.testing.assert_array_equal(clean["train"][0], original["train"][0][:1000])
    np.testing.assert_array_equal(inverted["train"][0], 255 - original["train"][0][1000:2000])
    for split, (images, labels) in original.items():
        part = slice(2 * len(labels) // 3, len(labels))
        keep = labels[part] != 4
        np.testing.assert_array_equal(turned[split][1], labels[part][keep])
        np.testing.assert_array_equal(turned[split][0], np.rot90(images[part][keep], axes=(1, 2)))


@pytest.mark.skipif(not os.path.isdir(datasets.FASHION_MNIST.debian_dir), reason="dataset-fashion-mnist not installed")
def test_a_fashion_drift_mixes_in_the_other_dataset(tmp_path, source):
    fashion = datasets.FASHION_MNIST.debian_dir
    written = spans.write_spans(source, str(tmp_path), 2, [spans.Drift.parse("2:fashion=0.5")], fashion_dir=fashion)
    mixed, original = read_idx_dataset(written[2])["train"][0], read_idx_dataset(source)["train"][0][1500:]
    changed = (mixed != original).any(axis=(1, 2)).mean()
    assert 0.45 <= changed <= 0.5  # half replaced (a replacement may equal the original only by chance)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rotate=90", "--drift takes SPAN:KIND"),
        ("3:blur", "--drift takes SPAN:KIND"),
        ("3:rotate=45", "--drift rotate takes a multiple of 90 degrees"),
        ("3:fashion=2", "--drift fashion takes a fraction in \\(0, 1\\]"),
        ("3:without=12", "--drift without takes a digit 0-9"),
        ("3:invert=1", "invert takes no value"),
        ("0:invert", "--drift takes SPAN:KIND"),
    ],
)
def test_bad_drifts_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        spans.Drift.parse(text)


def test_the_cli_writes_spans_and_refuses_to_overwrite_them(tmp_path, capsys, mnist_dir):
    output = tmp_path / "spans"
    argv = ["data", "spans", "--data-root", os.path.dirname(mnist_dir), "--spans", "2", "--output", str(output)]
    assert cli.main([*argv, "--drift", "3:invert"]) == 2
    assert capsys.readouterr().err.strip() == "vae-mnist: error: --drift 3:invert: there are only 2 spans"
    assert not output.exists()

    assert cli.main([*argv, "--drift", "2:rotate=180"]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        f"span 1: {output}/span-1",
        f"span 2: {output}/span-2 (drift: rotate=180)",
    ]
    assert [len(read_idx_dataset(str(output / f"span-{n}"))["train"][1]) for n in (1, 2)] == [30_000, 30_000]
    before = sorted(os.listdir(output / "span-1"))
    assert cli.main(argv) == 2
    assert "already holds spans" in capsys.readouterr().err
    assert sorted(os.listdir(output / "span-1")) == before


def split_labels(examples_uri: str, split: str) -> np.ndarray:
    import glob

    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    records = tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator()
    return np.array([tf.train.Example.FromString(r).features.feature["label"].int64_list.value[0] for r in records])


def test_the_newest_spans_are_ingested_and_recorded(tmp_path, source):
    """span_window=2 over spans 1-3 reads spans 2 and 3 (training and validation from both, each
    span's last twelfth validating), judges on span 3's eval images, and records span 3; a new
    span 4 is noticed on the next run."""
    from tfx import v1 as tfx
    from tfx.orchestration.pipeline import RunOptions

    from components.idx_example_gen import SPANS_KEY
    from pipeline import local_runner
    from pipeline.config import PipelineConfig
    from tests.helpers import store_of

    input_dir = tmp_path / "spans"
    spans.write_spans(source, str(input_dir), 3)
    config = PipelineConfig(input_dir=str(input_dir), output_dir=str(tmp_path / "out"), span_window=2)
    assert config.reads_spans

    def ingest():
        pipeline = local_runner.local_pipeline(config)
        tfx.orchestration.LocalDagRunner().run(pipeline, run_options=RunOptions(to_nodes=["IdxExampleGen"]))
        return max(store_of(config).get_artifacts_by_type("Examples"), key=lambda a: a.id)

    examples = ingest()
    assert examples.properties["span"].int_value == 3
    assert examples.custom_properties[SPANS_KEY].string_value == "2,3"
    span_labels = {n: read_idx_dataset(spans.span_dir(str(input_dir), n)) for n in (2, 3)}
    cut = 1000 - round(1000 / 12)
    np.testing.assert_array_equal(
        split_labels(examples.uri, "train"), np.concatenate([span_labels[n]["train"][1][:cut] for n in (2, 3)])
    )
    np.testing.assert_array_equal(
        split_labels(examples.uri, "valid"), np.concatenate([span_labels[n]["train"][1][cut:] for n in (2, 3)])
    )
    np.testing.assert_array_equal(split_labels(examples.uri, "eval"), span_labels[3]["eval"][1])

    spans.write_spans(source, str(tmp_path / "more"), 1)
    os.rename(tmp_path / "more" / "span-1", input_dir / "span-4")
    newer = ingest()
    assert newer.id != examples.id and newer.properties["span"].int_value == 4
    assert newer.custom_properties[SPANS_KEY].string_value == "3,4"


def test_the_executor_picks_the_newest_span_where_no_driver_ran(tmp_path, source):
    """Open-source Kubeflow runs no ExampleGen driver: the pattern arrives with {SPAN} unresolved."""
    from tfx.proto import example_gen_pb2
    from tfx.utils import proto_utils

    from components.idx_example_gen import SPAN_PATTERN, output_splits

    spans.write_spans(source, str(tmp_path), 3)
    patterns = {"train": "train-*-idx?-ubyte.gz", "eval": "t10k-*-idx?-ubyte.gz"}
    input_config = example_gen_pb2.Input(
        splits=[example_gen_pb2.Input.Split(name=n, pattern=f"{SPAN_PATTERN}/{p}") for n, p in patterns.items()]
    )
    exec_properties = {"input_base": str(tmp_path), "input_config": proto_utils.proto_to_json(input_config)}
    parts = output_splits(exec_properties)
    assert [(p.name, os.path.basename(os.path.dirname(p.images))) for p in parts] == [
        ("train", "span-3"),
        ("eval", "span-3"),
    ]
