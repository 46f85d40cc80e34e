"""Feature names and the Transform step (``preprocessing_fn``).

Transform's graph is saved with the model and applied first in every serving signature, so a
client sends raw 0-255 pixels and never rescales.
"""

import tensorflow as tf

from schema import IMAGE_KEY, LABEL_KEY

PIXELS_KEY = "pixels"  # transformed: NUM_PIXELS float32 in [0, 1]


def preprocessing_fn(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Scales pixels to [0, 1] and passes the label through."""
    outputs = {PIXELS_KEY: tf.cast(inputs[IMAGE_KEY], tf.float32) / 255.0}
    if LABEL_KEY in inputs:
        outputs[LABEL_KEY] = inputs[LABEL_KEY]
    return outputs
