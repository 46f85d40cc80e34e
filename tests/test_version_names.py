"""The serving layout is TF Serving's, exactly: a version directory's name is read as TF Serving
reads it (tensorflow_serving/sources/storage_path/file_system_storage_path_source.cc:
ParseVersionNumber is strings::safe_strto64; IndexChildrenByVersion lets the later of two names
for one number win), and every place that picks or rebuilds a version's path uses that name."""

import os
import shutil

import pytest

from components import serving_layout
from pipeline import cli


@pytest.mark.parametrize(
    ("name", "version"),
    [("123", 123), ("00000123", 123), ("-1", -1), (" 7 ", 7), ("9223372036854775807", 2**63 - 1)],
)
def test_names_tf_serving_reads_as_versions(name, version):
    assert serving_layout.parse_version(name) == version


@pytest.mark.parametrize("name", [".incoming-123", "12a", "1.5", "", "99999999999999999999", "+5x"])
def test_names_tf_serving_ignores(name):
    assert serving_layout.parse_version(name) is None


@pytest.fixture
def zero_padded(small_run, tmp_path):
    """A serving root whose versions are named as TF Serving's own test models are (00000123)."""
    served = serving_layout.version_path(
        small_run.serving_model_dir, serving_layout.served_version(small_run.serving_model_dir)
    )
    model_dir = str(tmp_path / "serving" / "vae-mnist")
    shutil.copytree(served, os.path.join(model_dir, "00000123"))
    shutil.copytree(served, os.path.join(model_dir, "99999999999999999999"))  # no int64: not a version
    return model_dir


def test_a_zero_padded_version_is_served_listed_and_pinned_by_its_own_directory(zero_padded, capsys):
    model_dir = zero_padded
    assert serving_layout.version_dirs(model_dir) == {123: "00000123"}
    assert serving_layout.served_version(model_dir) == 123
    assert serving_layout.version_path(model_dir, 123) == os.path.join(model_dir, "00000123")
    assert serving_layout.leftovers(model_dir) == []  # complete: not an interrupted push
    serving_root = os.path.dirname(model_dir)
    assert cli.main(["serving", "list", "--serving-root", serving_root, "--output-dir", serving_root]) == 0
    listing = capsys.readouterr().out
    assert "SERVED (directory 00000123/)" in listing and "99999999999999999999" not in listing
    assert cli.main(["serving", "pin", "123", "--serving-root", serving_root, "--output-dir", serving_root]) == 0
    assert serving_layout.pinned_version(model_dir) == 123 and serving_layout.served_version(model_dir) == 123


def test_of_two_names_for_one_number_the_later_is_served_as_tf_serving_does(zero_padded):
    model_dir = zero_padded
    shutil.copytree(os.path.join(model_dir, "00000123"), os.path.join(model_dir, "123"))
    # Sorted, "00000123" < "123": TF Serving loads 123/ and ignores 00000123/.
    assert serving_layout.version_dirs(model_dir) == {123: "123"}
    assert serving_layout.version_path(model_dir, 123) == os.path.join(model_dir, "123")
    assert serving_layout.next_version(model_dir) > 123
