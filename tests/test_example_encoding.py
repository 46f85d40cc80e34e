"""IdxExampleGen's fast tf.Example encoder writes exactly what the protobuf library writes."""

import numpy as np
import pytest
import tensorflow as tf

from components.idx_example_gen import serialize_examples, to_example


def reference(images, labels):
    return [to_example(i, y).SerializeToString(deterministic=True) for i, y in zip(images, labels, strict=True)]


@pytest.mark.parametrize("dtype", [np.uint8, np.int16])
def test_bytes_equal_the_protobuf_serialization(dtype):
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, size=(300, 28, 28)).astype(dtype)
    images[0], images[1], images[2], images[3] = 0, 127, 128, 255  # varint edges: one and two bytes
    labels = rng.integers(0, 10, size=300).astype(np.uint8)
    labels[4] = 11
    assert serialize_examples(images, labels) == reference(images, labels)


def test_values_beyond_two_varint_bytes_take_the_protobuf_path():
    images = np.zeros((3, 28, 28), np.int32)
    images[0, 0, 0], images[1, 5, 5], images[2, 27, 27] = 300, -1, 70_000
    labels = np.array([1, 2, 3])
    records = serialize_examples(images, labels)
    assert records == reference(images, labels)
    parsed = tf.train.Example.FromString(records[1]).features.feature
    assert parsed["image"].int64_list.value[5 * 28 + 5] == -1 and parsed["label"].int64_list.value == [2]
