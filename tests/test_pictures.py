"""The picture helpers, and the pictures a pipeline run leaves behind."""

import os

import numpy as np
from PIL import Image

from model import pictures
from tests.helpers import states

# What ModelPictures writes for a model with a 2-D latent space, sorted.
MODEL_PICTURES = [
    "latent_scatter.png",
    "least_anomalous.png",
    "manifold.png",
    "most_anomalous.png",
    "reconstructions.png",
    "samples.png",
]


def test_grid_tiles_images_with_ink_dark():
    images = np.zeros((3, 784), np.float32)
    images[1] = 1.0  # all ink
    picture = np.asarray(pictures.grid(images, columns=2, scale=1, pad=2))
    assert picture.shape == (2 * 30 + 2, 2 * 30 + 2)
    assert picture[2:30, 2:30].min() == 255  # blank image: white
    assert picture[2:30, 32:60].max() == 0  # full ink: black
    assert picture[32:60, 32:60].min() == 255  # the unused fourth cell stays white


def test_extremes_put_the_highest_scores_first_and_the_lowest_first(tmp_path):
    grey = np.arange(50)[:, None] * 5 * np.ones((50, 784))  # image i: grey level 5 i (raw pixels)
    scores = np.random.default_rng(0).permutation(50).astype(float)
    most, least = pictures.save_extremes(grey, scores, str(tmp_path), count=3)

    def first_tiles(path):  # the grey level of the first three tiles, back in raw pixels
        picture = np.asarray(Image.open(path), dtype=float)
        return [round((255 - picture[3, 3 + 58 * i]) / 5) for i in range(3)]

    assert first_tiles(most) == list(np.argsort(-scores)[:3])
    assert first_tiles(least) == list(np.argsort(scores)[:3])


def test_first_of_each_label_takes_digits_in_order():
    labels = np.array([3, 1, 0, 1, 2, 3, 0])
    assert pictures.first_of_each_label(labels, sets=1, classes=4).tolist() == [2, 1, 4, 0]
    assert pictures.first_of_each_label(labels, sets=2, classes=4).tolist() == [2, 1, 4, 0, 6, 3, 5]


def test_manifold_covers_the_prior_symmetrically():
    points = pictures.manifold_points(steps=4)
    assert points.shape == (16, 2)
    np.testing.assert_allclose(sorted(set(points[:, 0].round(4))), [-1.1503, -0.3186, 0.3186, 1.1503], atol=1e-4)


def test_principal_plane_keeps_2d_and_projects_more():
    z = np.random.default_rng(0).normal(size=(50, 5)) * [10, 3, 1, 0.1, 0.1]
    plane, title = pictures.principal_plane(z)
    assert plane.shape == (50, 2) and "principal components" in title
    assert np.var(plane[:, 0]) > np.var(plane[:, 1])  # the widest direction first
    same, _ = pictures.principal_plane(z[:, :2])
    np.testing.assert_array_equal(same, z[:, :2])


def test_a_run_draws_every_picture(small_run):
    assert states(small_run)["ModelPictures"] == "ran"
    [directory] = [
        os.path.join(root, d)
        for root, dirs, _ in os.walk(os.path.join(small_run.pipeline_root, "ModelPictures", "pictures_dir"))
        for d in dirs
    ]
    names = sorted(os.listdir(directory))
    assert names == MODEL_PICTURES
    for extreme in ("least_anomalous.png", "most_anomalous.png"):
        with Image.open(os.path.join(directory, extreme)) as image:
            assert image.size == (10 * 58 + 2, 4 * 58 + 2)  # the 40 highest (lowest) scores, ten to a row
    with Image.open(os.path.join(directory, "reconstructions.png")) as image:
        assert image.size == (10 * 58 + 2, 6 * 58 + 2)  # 10 digits, 3 sets of original + reconstruction rows
    with Image.open(os.path.join(directory, "manifold.png")) as image:
        assert image.size == (20 * 28, 20 * 28)
