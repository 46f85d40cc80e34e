"""The curated schema shipped with the project (``schema.pbtxt`` beside this file)."""

from pathlib import Path

SCHEMA_FILE = str(Path(__file__).with_name("schema.pbtxt"))

# Labels are 0..9 (schema.pbtxt's int_domain): the Evaluator's per-digit slices and bounds.
NUM_CLASSES = 10
