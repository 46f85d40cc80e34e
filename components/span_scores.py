"""SpanScores: the new span's images, scored by the model served now, right after ingestion.

Each image of the newest span (or of an unspanned input directory) becomes one row of
``scores.parquet``: where it came from (``span``, ``split``: the IDX file's split, ``index`` in
that file, ``label``), the per-image summaries the drift gate compares (``SUMMARIES``) and every
per-image score the served model's ``score_tf_example`` signature returns (``neg_elbo``,
``reconstruction_error``, ``kl``, ``pixel_mse``, and ``anomaly_score``, ``anomaly_p_value`` and
``is_anomaly`` where the model has them). ``previous.parquet`` holds the same rows for the span before it, the drift
gate's reference; only its eval images are scored (the gate compares scores on those alone).
Beside them: ``report.json`` and three PNGs: the score histogram, the most and the least anomalous
images (ranked by ``anomaly_score``, or ``neg_elbo`` for a served model exported without it).

Why not TFX's BulkInferrer: it infers with the run's own candidate and only once it is blessed,
so it cannot score a span the drift gate stops, and it writes PredictionLog protos, which pandas
cannot load. This runs before training, with the served model (ServedModel's output), so every
span is scored, stopped or not. With nothing served yet, the rows hold the summaries alone.

The images are read from the span's IDX files (the same files ExampleGen ingested): with a
rolling window the Examples hold older spans too, and the previous span is not in them at all.
"""

import io
import json
import logging
import os

import numpy as np
import pandas as pd
from tfx.dsl.io import fileio
from tfx.types import standard_artifacts

from components import datasets, spans
from components.artifacts import ImageScores
from components.idx_example_gen import SPANS_KEY, serialize_examples
from components.served_model import SERVED_VERSION_KEY, is_nothing_served
from components.tfx_dsl import InputArtifact, OutputArtifact, Parameter, component
from schema import NUM_PIXELS

SCORES_FILE, PREVIOUS_FILE, REPORT_FILE = "scores.parquet", "previous.parquet", "report.json"
HISTOGRAM_PNG = "score_histogram.png"
SUMMARIES = ("ink", "row_spread", "col_spread", "slant")  # per-image, model-free: see summarize()
RANKING_SCORES = ("anomaly_score", "neg_elbo")  # the first the served model outputs ranks the images
_BATCH = 2000


def summarize(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image summaries that see drift the pooled pixel histogram of StatisticsGen cannot:

    - ``ink``: mean grey level in [0, 1] (inverted scans, other datasets: more ink);
    - ``row_spread``, ``col_spread``: the ink's standard deviation in pixels along rows and
      columns (digits are taller than wide: a quarter turn swaps them);
    - ``slant``: the correlation of row and column under the ink (handwriting leans one way).

    Half turns keep all four (they are symmetric under (r, c) -> (-r, -c)); the served model's
    score sees those. Measured on MNIST: tests/test_drift.py."""
    images = images.reshape(len(images), 28, 28)
    parts = [_summarize(images[start : start + _BATCH]) for start in range(0, len(images), _BATCH)]
    return {name: np.concatenate([part[name] for part in parts]) for name in SUMMARIES}


def _summarize(images: np.ndarray) -> dict[str, np.ndarray]:
    ink = images.astype(np.float64)
    mass = ink.sum(axis=(1, 2)) + 1e-9
    rows, cols = np.arange(28.0)[None, :, None], np.arange(28.0)[None, None, :]
    row_mean = (ink * rows).sum(axis=(1, 2)) / mass
    col_mean = (ink * cols).sum(axis=(1, 2)) / mass
    d_row, d_col = rows - row_mean[:, None, None], cols - col_mean[:, None, None]
    row_var = (ink * d_row**2).sum(axis=(1, 2)) / mass
    col_var = (ink * d_col**2).sum(axis=(1, 2)) / mass
    covariance = (ink * d_row * d_col).sum(axis=(1, 2)) / mass
    return {
        "ink": mass / (255.0 * NUM_PIXELS),
        "row_spread": np.sqrt(row_var),
        "col_spread": np.sqrt(col_var),
        "slant": covariance / np.sqrt(row_var * col_var + 1e-12),
    }


def read_span(input_base: str, spec: datasets.DatasetSpec, span: int | None) -> tuple[pd.DataFrame, np.ndarray]:
    """(rows, images [n, 784]) of one span's IDX files (``span`` None: the unspanned directory)."""
    directory = input_base if span is None else spans.span_dir(input_base, span)
    frames, images = [], []
    for split in spec.splits:
        split_images, labels = spec.read_split(directory, split)
        frames.append(
            pd.DataFrame(
                {
                    "span": np.full(len(labels), span or 0, dtype=np.int64),
                    "split": split,
                    "index": np.arange(len(labels), dtype=np.int64),
                    "label": labels.astype(np.int64),
                }
            )
        )
        images.append(split_images.reshape(len(split_images), -1))
    images = np.concatenate(images)
    rows = pd.concat(frames, ignore_index=True)
    for name, values in summarize(images).items():
        rows[name] = values
    return rows, images


def scorer(model_dir: str):
    """Loads the model once; returns images [n, 784] -> every per-image output ([n]) of its
    ``score_tf_example`` signature (the scores alone, without 784 reconstructed pixels per
    image), or of ``serving_default`` for a model without it; {} for a model with neither."""
    import tensorflow as tf

    signatures = tf.saved_model.load(model_dir).signatures
    if "score_tf_example" in signatures:

        def call(batch):
            # The label is not read: the serving signatures parse the image alone.
            examples = serialize_examples(batch, np.zeros(len(batch), np.int64))
            return signatures["score_tf_example"](examples=tf.constant(examples))

    elif "serving_default" in signatures:

        def call(batch):
            return signatures["serving_default"](image=tf.constant(batch, tf.int64))

    else:
        logging.warning("The served model has neither score_tf_example nor serving_default: not scored")
        return lambda images: {}

    def score(images: np.ndarray) -> dict[str, np.ndarray]:
        columns: dict[str, list] = {}
        for start in range(0, len(images), _BATCH):
            for name, value in call(images[start : start + _BATCH]).items():
                if value.shape.rank == 1:
                    columns.setdefault(name, []).append(value.numpy())
        return {name: np.concatenate(parts) for name, parts in sorted(columns.items())}

    return score


def write_file(path: str, data: bytes) -> None:
    """Writes through TFX's fileio: artifact URIs are gs:// paths on Kubeflow, and KFP's launcher
    does not create an output artifact's directory."""
    fileio.makedirs(os.path.dirname(path))
    with fileio.open(path, "wb") as f:
        f.write(data)


def read_rows(scores_uri: str, file_name: str = SCORES_FILE) -> pd.DataFrame:
    with fileio.open(os.path.join(scores_uri, file_name), "rb") as f:
        return pd.read_parquet(io.BytesIO(f.read()))


def ranking_score(rows: pd.DataFrame) -> str | None:
    return next((name for name in RANKING_SCORES if name in rows), None)


def report(rows: pd.DataFrame, images: np.ndarray, output_dir: str) -> dict:
    """The figures a person reads first, and the two pictures; returns what report.json holds."""
    from model import pictures

    name = ranking_score(rows)
    figures = {"images": len(rows), "span": int(rows["span"].iloc[0]) if len(rows) else 0, "score": name}
    if name is None:
        return figures
    values = rows[name].to_numpy()
    figures.update(
        {
            "median": float(np.median(values)),
            "p99": float(np.quantile(values, 0.99)),
            "max": float(values.max()),
            # None: the served model has no threshold of its own (exported before anomaly scores)
            "above_threshold": int(rows["is_anomaly"].sum()) if "is_anomaly" in rows else None,
        }
    )
    pictures.save_extremes(images, values, output_dir)
    title = f"{name} of span {figures['span']} ({len(values):,} images)"
    pictures.save(pictures.histogram(values, title), os.path.join(output_dir, HISTOGRAM_PNG))
    return figures


@component
def SpanScores(  # noqa: N802
    examples: InputArtifact[standard_artifacts.Examples],
    served_model: InputArtifact[standard_artifacts.Model],
    scores: OutputArtifact[ImageScores],
    input_base: Parameter[str],
    dataset: Parameter[str],
) -> None:
    """Scores the span ExampleGen ingested (and its predecessor, as the drift reference) with the
    served model, and writes the rows, the report and the pictures into ``scores``."""
    span = examples.span if examples.has_custom_property(SPANS_KEY) else None
    spec = datasets.get(dataset)
    nothing_served = is_nothing_served(served_model)
    score = (lambda images: {}) if nothing_served else scorer(os.path.join(served_model.uri, "Format-Serving"))

    rows, images = read_span(input_base, spec, span)
    rows = rows.assign(**score(images))
    write_file(os.path.join(scores.uri, SCORES_FILE), rows.to_parquet(index=False))
    figures = report(rows, images, scores.uri)

    earlier = [s for s in spans.find_spans(input_base) if s < span] if span else []
    if earlier:  # the drift gate's reference; the first span (or no spans) has none
        previous, images = read_span(input_base, spec, max(earlier))
        held_out = (previous["split"] == "eval").to_numpy()
        for name, values in score(images[held_out]).items():
            previous.loc[held_out, name] = values
        write_file(os.path.join(scores.uri, PREVIOUS_FILE), previous.to_parquet(index=False))
    figures["scored_by"] = served_model.get_int_custom_property(SERVED_VERSION_KEY)  # 0: nothing served
    write_file(os.path.join(scores.uri, REPORT_FILE), json.dumps(figures, indent=1).encode())
    scores.set_int_custom_property("images", figures["images"])
    logging.info("Scored %d images of span %s: %s", figures["images"], span, figures)
