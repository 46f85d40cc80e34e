"""Pictures of a trained VAE, as PNG files a person can look at.

- ``reconstructions.png``: rows of eval images (one per digit) above their reconstructions;
- ``samples.png``: images decoded from the prior N(0, I);
- ``manifold.png`` (2-D latent spaces): the decoder over a grid of the latent plane, the grid
  placed at quantiles of N(0, 1) so it covers where the prior puts its mass;
- ``latent_scatter.png``: each eval image's z_mean, coloured by digit (the first two principal
  components when the latent space has more than two dimensions);
- ``most_anomalous.png``, ``least_anomalous.png``: the eval images with the highest and the lowest
  ``anomaly_score``, highest (lowest) first.

Everything here takes arrays and the SavedModel's signatures, so it runs wherever the model does.
"""

from __future__ import annotations

import os
import statistics

import numpy as np
from PIL import Image, ImageDraw

from schema import IMAGE_SIDE

# Ten colours that stay apart for most kinds of colour vision (Okabe-Ito, with two added).
PALETTE = [
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
    (213, 94, 0), (204, 121, 167), (0, 0, 0), (153, 153, 153), (120, 60, 160),
]  # fmt: skip


def grid(images: np.ndarray, columns: int, scale: int = 2, pad: int = 2) -> Image.Image:
    """Tiles [n, 784] (or [n, 28, 28]) images in [0, 1] into one grey-level picture, ink dark."""
    images = np.asarray(images, dtype=np.float32).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    rows = -(-len(images) // columns)
    cell = IMAGE_SIDE * scale + pad
    canvas = np.full((rows * cell + pad, columns * cell + pad), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        tile = np.kron(1.0 - np.clip(image, 0, 1), np.ones((scale, scale)))
        top, left = pad + r * cell, pad + c * cell
        canvas[top : top + IMAGE_SIDE * scale, left : left + IMAGE_SIDE * scale] = np.round(tile * 255).astype(np.uint8)
    return Image.fromarray(canvas, mode="L")


def first_of_each_label(labels: np.ndarray, sets: int, classes: int = 10) -> np.ndarray:
    """Indices of the first ``sets`` examples of every class, class by class within each set."""
    picks = [np.flatnonzero(labels == c)[:sets] for c in range(classes)]
    return np.array([p[s] for s in range(sets) for p in picks if len(p) > s])


def reconstruction_rows(originals: np.ndarray, reconstructions: np.ndarray, columns: int = 10) -> Image.Image:
    """Alternating rows: ``columns`` originals, then their reconstructions."""
    rows = []
    for start in range(0, len(originals), columns):
        rows += [originals[start : start + columns], reconstructions[start : start + columns]]
    return grid(np.concatenate(rows), columns)


def manifold_points(steps: int = 20) -> np.ndarray:
    """A steps x steps grid of the latent plane at evenly spaced quantiles of N(0, 1)."""
    normal = statistics.NormalDist()
    axis = np.array([normal.inv_cdf((i + 0.5) / steps) for i in range(steps)], dtype=np.float32)
    return np.array([(x, y) for y in axis[::-1] for x in axis], dtype=np.float32)


def scatter(points: np.ndarray, labels: np.ndarray, title: str, size: int = 560) -> Image.Image:
    """A latent scatter plot, one colour per label, with a legend and the axes' ranges."""
    margin, legend = 40, 80
    image = Image.new("RGB", (size + legend, size), "white")
    draw = ImageDraw.Draw(image)
    low, high = np.percentile(points, 0.5, axis=0), np.percentile(points, 99.5, axis=0)
    span = np.where(high > low, high - low, 1.0)
    xy = margin + (points - low) / span * (size - 2 * margin)
    xy[:, 1] = size - xy[:, 1]  # y grows upwards
    inside = np.all((xy >= margin) & (xy <= size - margin), axis=1)  # the central 99% on each axis
    if not inside.all():
        title += f" ({(~inside).sum()} outliers not shown)"
    for (x, y), label in zip(xy[inside], labels[inside], strict=True):
        draw.ellipse((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=PALETTE[int(label) % len(PALETTE)])
    draw.rectangle((margin, margin, size - margin, size - margin), outline=(120, 120, 120))
    draw.text((margin, 12), title, fill="black")
    draw.text((margin, size - margin + 6), f"x: {low[0]:.1f} .. {high[0]:.1f}", fill="black")
    draw.text((size - margin - 90, size - margin + 6), f"y: {low[1]:.1f} .. {high[1]:.1f}", fill="black")
    for digit in range(10):
        top = margin + digit * 22
        draw.rectangle((size + 8, top, size + 22, top + 14), fill=PALETTE[digit])
        draw.text((size + 28, top + 1), str(digit), fill="black")
    return image


def save(picture: Image.Image, path: str) -> str:
    """Writes a PNG through TensorFlow's file system layer (gs:// artifact URIs on Kubeflow, where
    the launcher creates no output directory); returns the path."""
    import tensorflow as tf

    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "wb") as f:
        picture.save(f, format="PNG", optimize=True)
    return path


def histogram(values: np.ndarray, title: str, bins: int = 40, size: tuple[int, int] = (640, 320)) -> Image.Image:
    """A histogram of ``values`` (the central 99.8 %; the rest counted in the title), x range labelled."""
    width, height = size
    margin = 40
    low, high = np.percentile(values, [0.1, 99.9])
    high = high if high > low else low + 1.0
    counts, _ = np.histogram(np.clip(values, low, high), bins=bins, range=(low, high))
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    bar = (width - 2 * margin) / bins
    for i, count in enumerate(counts):
        top = height - margin - (height - 2 * margin) * count / max(counts.max(), 1)
        draw.rectangle((margin + i * bar, top, margin + (i + 1) * bar - 1, height - margin), fill=PALETTE[4])
    draw.text((margin, 12), title, fill="black")
    draw.text((margin, height - margin + 6), f"{low:.1f}", fill="black")
    draw.text((width - margin - 60, height - margin + 6), f"{high:.1f}", fill="black")
    return image


def curves(series: dict[str, list[float]], title: str, size: tuple[int, int] = (480, 240)) -> Image.Image:
    """Lines of per-epoch values (e.g. training and validation -ELBO) on one y range, each in its
    palette colour and named in the legend; the y range and epoch count labelled."""
    width, height = size
    margin = 40
    values = np.array([v for line in series.values() for v in line if np.isfinite(v)] or [0.0])
    low, high = float(values.min()), float(values.max())
    high = high if high > low else low + 1.0
    epochs = max((len(line) for line in series.values()), default=1)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)

    def point(epoch: int, value: float) -> tuple[float, float]:
        x = margin + (width - 2 * margin) * (epoch / max(epochs - 1, 1))
        return x, height - margin - (height - 2 * margin) * (value - low) / (high - low)

    for i, (name, line) in enumerate(series.items()):
        colour = PALETTE[(4 + i) % len(PALETTE)]
        points = [point(e, v) for e, v in enumerate(line) if np.isfinite(v)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        draw.text((width - margin - 150, 12 + 14 * i), name, fill=colour)
    draw.text((margin, 12), title, fill="black")
    draw.text((4, margin - 6), f"{high:.1f}", fill="black")
    draw.text((4, height - margin - 6), f"{low:.1f}", fill="black")
    draw.text((margin, height - margin + 6), "epoch 1", fill="black")
    draw.text((width - margin - 50, height - margin + 6), f"epoch {epochs}", fill="black")
    return image


def principal_plane(z: np.ndarray) -> tuple[np.ndarray, str]:
    """z itself when 2-D, else its projection on the first two principal components."""
    if z.shape[1] == 2:
        return z, "z_mean of eval images, by digit"
    centred = z - z.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T, f"z_mean ({z.shape[1]}-D) on its first two principal components, by digit"


MOST_ANOMALOUS_PNG, LEAST_ANOMALOUS_PNG = "most_anomalous.png", "least_anomalous.png"


def save_extremes(images: np.ndarray, scores: np.ndarray, out_dir: str, count: int = 40) -> list[str]:
    """The ``count`` images with the highest and with the lowest score (raw pixels [n, 784]), ten
    to a row, as MOST_ANOMALOUS_PNG and LEAST_ANOMALOUS_PNG."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    return [
        save(grid(images[picked] / 255.0, columns=10), os.path.join(out_dir, name))
        for name, picked in ((MOST_ANOMALOUS_PNG, order[:count]), (LEAST_ANOMALOUS_PNG, order[::-1][:count]))
    ]


def draw_all(model, images: np.ndarray, labels: np.ndarray, out_dir: str, seed: int = 0) -> list[str]:
    """Renders every picture from a loaded serving SavedModel; returns the files written."""
    import tensorflow as tf

    serve, decode, generate = (model.signatures[name] for name in ("serving_default", "decode", "generate"))
    written = []

    def save_as(picture: Image.Image, name: str) -> None:
        written.append(save(picture, os.path.join(out_dir, name)))

    shown = first_of_each_label(labels, sets=3)
    reconstructed = serve(image=tf.constant(images[shown], tf.int64))["reconstruction"].numpy()
    save_as(reconstruction_rows(images[shown] / 255.0, reconstructed), "reconstructions.png")
    samples = generate(count=tf.constant(64), seed=tf.constant(seed, tf.int64))["images"].numpy()
    save_as(grid(samples, columns=8), "samples.png")
    # One pass of serving_default gives every image's code and, for models that have it, its score.
    served = [serve(image=tf.constant(images[i : i + 1000], tf.int64)) for i in range(0, len(images), 1000)]
    z = np.concatenate([outputs["z_mean"].numpy() for outputs in served])
    if z.shape[1] == 2:
        points = manifold_points()
        save_as(grid(decode(z=tf.constant(points))["images"].numpy(), columns=20, scale=1, pad=0), "manifold.png")
    plane, title = principal_plane(z)
    save_as(scatter(plane, labels, title), "latent_scatter.png")
    if all("anomaly_score" in outputs for outputs in served):
        scores = np.concatenate([outputs["anomaly_score"].numpy() for outputs in served])
        written += save_extremes(images, scores, out_dir)
    return written
