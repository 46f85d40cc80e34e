"""The curated schema shipped with the project (``schema.pbtxt`` beside this file), and the
constants it fixes: every module takes feature names and image sizes from here
(tests/test_model.py checks them against schema.pbtxt)."""

from pathlib import Path

SCHEMA_FILE = str(Path(__file__).with_name("schema.pbtxt"))

IMAGE_KEY = "image"  # IMAGE_SIDE x IMAGE_SIDE int64 pixels in [0, 255], row-major
LABEL_KEY = "label"  # an int64 class id; used for slicing, never seen by the model
IMAGE_SIDE = 28
NUM_PIXELS = IMAGE_SIDE * IMAGE_SIDE  # 784: the schema's image shape, the model's input and output
# Labels are 0..9 (schema.pbtxt's int_domain): the Evaluator's per-digit slices and bounds.
NUM_CLASSES = 10
