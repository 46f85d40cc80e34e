"""Feature names and the Transform step (``preprocessing_fn``).

Transform's graph is saved with the model and applied first in every serving signature, so a
client sends raw 0-255 pixels and never rescales.
"""

import tensorflow as tf

IMAGE_KEY = "image"  # raw: 784 int64 in [0, 255]
LABEL_KEY = "label"  # raw: int64 class id; passed through for slicing, never seen by the model
PIXELS_KEY = "pixels"  # transformed: 784 float32 in [0, 1]
NUM_PIXELS = 784


def preprocessing_fn(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Scales pixels to [0, 1] and passes the label through."""
    outputs = {PIXELS_KEY: tf.cast(inputs[IMAGE_KEY], tf.float32) / 255.0}
    if LABEL_KEY in inputs:
        outputs[LABEL_KEY] = inputs[LABEL_KEY]
    return outputs
