"""ModelPictures: PNG grids of the trained model on eval images, beside the Evaluator.

Reads up to ``max_images`` of ExampleGen's raw ``eval`` split and the Trainer's serving model, and
writes the pictures of ``model/pictures.py`` into its output artifact, so each model version
comes with pictures of what it does.
"""

import glob
import os

import numpy as np
import tensorflow as tf
from tfx.types import artifact_utils, standard_artifacts

from components.artifacts import Pictures
from components.tfx_dsl import InputArtifact, OutputArtifact, Parameter, component
from model import pictures
from schema import IMAGE_KEY, LABEL_KEY, NUM_PIXELS


def read_eval_examples(examples: standard_artifacts.Examples, limit: int) -> tuple[np.ndarray, np.ndarray]:
    files = sorted(glob.glob(os.path.join(artifact_utils.get_split_uri([examples], "eval"), "*")))
    spec = {
        IMAGE_KEY: tf.io.FixedLenFeature([NUM_PIXELS], tf.int64),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    }
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit).batch(1000)
    images, labels = [], []
    for batch in dataset.map(lambda records: tf.io.parse_example(records, spec)):
        images.append(batch[IMAGE_KEY].numpy())
        labels.append(batch[LABEL_KEY].numpy())
    return np.concatenate(images), np.concatenate(labels)


@component
def ModelPictures(  # noqa: N802
    model: InputArtifact[standard_artifacts.Model],
    examples: InputArtifact[standard_artifacts.Examples],
    pictures_dir: OutputArtifact[Pictures],
    max_images: Parameter[int] = 5000,
) -> None:
    """Draws reconstructions, prior samples, the latent manifold and a latent scatter."""
    images, labels = read_eval_examples(examples, max_images)
    serving_model = tf.saved_model.load(os.path.join(model.uri, "Format-Serving"))
    pictures.draw_all(serving_model, images, labels, pictures_dir.uri)
