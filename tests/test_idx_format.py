"""The IDX reader/writer, and that every kind of bad file gets an error naming it."""

import gzip
import os

import numpy as np
import pytest

from components import idx_format
from components.idx_format import IMAGES_MAGIC, LABELS_MAGIC, IdxError


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=10, dtype=np.uint8)
    images_path, labels_path = str(tmp_path / "x-images.gz"), str(tmp_path / "x-labels.gz")
    idx_format.write_array(images_path, images)
    idx_format.write_array(labels_path, labels)
    return images, labels, images_path, labels_path


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4"])
def test_round_trip_every_integer_type(tmp_path, suffix, dtype):
    array = (np.arange(2 * 3 * 4).reshape(2, 3, 4) * 7 % 120).astype(dtype)
    path = str(tmp_path / f"a{suffix}")
    idx_format.write_array(path, array)
    back = idx_format.read_array(path, IMAGES_MAGIC)
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_mnist_header_bytes_are_the_standard_ones(tmp_path):
    path = str(tmp_path / "labels")
    idx_format.write_array(path, np.zeros(3, np.uint8))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x00\x00\x08\x01\x00\x00\x00\x03"  # magic 2049, count 3


def test_read_records_returns_the_requested_slice(pair):
    images, labels, images_path, labels_path = pair
    np.testing.assert_array_equal(idx_format.read_records(images_path, IMAGES_MAGIC, 3, 7), images[3:7])
    np.testing.assert_array_equal(idx_format.read_records(labels_path, LABELS_MAGIC, 8), labels[8:])


def test_check_pair_returns_the_count(pair):
    _, _, images_path, labels_path = pair
    assert idx_format.check_pair(images_path, labels_path, (28, 28)).count == 10


def test_missing_file(tmp_path):
    with pytest.raises(IdxError, match="nope.gz: file not found"):
        idx_format.inspect(str(tmp_path / "nope.gz"), IMAGES_MAGIC)


def test_wrong_magic_names_the_file(pair):
    _, _, images_path, labels_path = pair
    with pytest.raises(IdxError, match=r"x-labels.gz: wrong IDX magic number 2049 .*images file has 2051"):
        idx_format.check_pair(labels_path, labels_path, (28, 28))


def test_non_integer_type_is_refused(tmp_path):
    path = str(tmp_path / "floats")
    with open(path, "wb") as f:
        f.write(b"\x00\x00\x0d\x01\x00\x00\x00\x01" + b"\x00" * 4)  # float32, one value
    with pytest.raises(IdxError, match="data type 0x0d is not an integer type"):
        idx_format.inspect(path, LABELS_MAGIC)


@pytest.mark.parametrize("keep", [2, 6, 16 + 28 * 28 * 4 + 5])
def test_truncated_file(tmp_path, pair, keep):
    _, _, images_path, _ = pair
    with gzip.open(images_path) as f:
        data = f.read()
    cut = str(tmp_path / "cut-images")
    with open(cut, "wb") as f:
        f.write(data[:keep])
    with pytest.raises(IdxError, match="cut-images: truncated"):
        idx_format.inspect(cut, IMAGES_MAGIC)


def test_truncated_gzip_stream(tmp_path, pair):
    _, _, images_path, _ = pair
    cut = str(tmp_path / "cut-images.gz")
    with open(images_path, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read()[: os.path.getsize(images_path) // 2])
    with pytest.raises(IdxError, match="cut-images.gz: truncated"):
        idx_format.inspect(cut, IMAGES_MAGIC)


def test_not_gzip_at_all(tmp_path):
    path = str(tmp_path / "plain-images.gz")
    with open(path, "wb") as f:
        f.write(b"this is not gzip")
    with pytest.raises(IdxError, match="plain-images.gz: cannot be read as gzip"):
        idx_format.inspect(path, IMAGES_MAGIC)


def test_trailing_bytes(tmp_path):
    path = str(tmp_path / "long-labels")
    idx_format.write_array(path, np.zeros(4, np.uint8))
    with open(path, "ab") as f:
        f.write(b"\x01")
    with pytest.raises(IdxError, match="long-labels: has bytes after the 4 records"):
        idx_format.inspect(path, LABELS_MAGIC)


def test_image_and_label_counts_disagree(tmp_path, pair):
    _, _, images_path, _ = pair
    labels_path = str(tmp_path / "few-labels.gz")
    idx_format.write_array(labels_path, np.zeros(9, np.uint8))
    with pytest.raises(IdxError, match="x-images.gz: holds 10 images but few-labels.gz holds 9 labels"):
        idx_format.check_pair(images_path, labels_path, (28, 28))


def test_image_size_must_match_unless_configured(tmp_path):
    images_path, labels_path = str(tmp_path / "big-images"), str(tmp_path / "big-labels")
    idx_format.write_array(images_path, np.zeros((2, 32, 32), np.uint8))
    idx_format.write_array(labels_path, np.zeros(2, np.uint8))
    with pytest.raises(IdxError, match="big-images: images are 32x32, expected 28x28"):
        idx_format.check_pair(images_path, labels_path, (28, 28))
    assert idx_format.check_pair(images_path, labels_path, (32, 32)).count == 2


def test_uris_are_read_through_tensorflow_file_systems(tmp_path):
    """On a cluster the files live at gs:// or s3:// URIs; ram:// exercises the same path here."""
    import tensorflow as tf

    local = str(tmp_path / "remote-images.gz")
    array = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    idx_format.write_array(local, array)
    tf.io.gfile.copy(local, "ram://remote-images.gz", overwrite=True)
    np.testing.assert_array_equal(idx_format.read_array("ram://remote-images.gz", IMAGES_MAGIC), array)
    with pytest.raises(IdxError, match="ram://absent.gz: file not found"):
        idx_format.inspect("ram://absent.gz", IMAGES_MAGIC)


def corrupt_deflate(path: str) -> None:
    """Damages the first deflate block header: gzip then raises zlib.error, not an OSError."""
    with open(path, "r+b") as f:
        f.seek(10)  # just after the 10-byte gzip header
        byte = f.read(1)
        f.seek(10)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_corrupt_deflate_stream_names_the_file(tmp_path, pair):
    _, _, images_path, labels_path = pair
    corrupt_deflate(images_path)
    for read in (
        lambda: idx_format.inspect(images_path, IMAGES_MAGIC),
        lambda: idx_format.read_records(images_path, IMAGES_MAGIC, 2, 4),
        lambda: idx_format.check_pair(images_path, labels_path, (28, 28)),
    ):
        with pytest.raises(IdxError, match=r"x-images.gz: cannot be read as gzip: .*invalid block type"):
            read()


def test_zero_record_files_are_refused(tmp_path):
    images, labels = str(tmp_path / "e-images.gz"), str(tmp_path / "e-labels.gz")
    idx_format.write_array(images, np.zeros((0, 28, 28), np.uint8))
    idx_format.write_array(labels, np.zeros(0, np.uint8))
    with pytest.raises(IdxError, match="e-images.gz: holds no records"):
        idx_format.check_pair(images, labels, (28, 28))


def test_wrong_magic_message_reads_well(pair):
    _, _, images_path, labels_path = pair
    with pytest.raises(IdxError, match="; a labels file has 2049"):
        idx_format.inspect(images_path, LABELS_MAGIC)
    with pytest.raises(IdxError, match="; an images file has 2051"):
        idx_format.inspect(labels_path, IMAGES_MAGIC)
