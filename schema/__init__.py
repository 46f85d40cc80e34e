"""The curated schema shipped with the project (``schema.pbtxt`` beside this file)."""

from pathlib import Path

SCHEMA_FILE = str(Path(__file__).with_name("schema.pbtxt"))
