"""The IDX file format of MNIST and its kin: read, write and validate.

An IDX file is a big-endian header (two zero bytes, a type code, the number of dimensions, then
one uint32 per dimension) followed by the raw array. MNIST uses type 0x08 (uint8): images are
magic 2051 (3 dimensions: count, rows, cols), labels magic 2049 (1 dimension: count). The other
integer types of the format (int8, int16, int32) are read too, so data that is not 8-bit can flow
through the pipeline (and be stopped by the schema if out of range). Files may be gzipped; the
``.gz`` suffix decides.

Every problem raises :class:`IdxError` naming the file and what is wrong with it, so a user who
points the pipeline at a bad directory learns which file to fix.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import struct
import zlib
from typing import BinaryIO

import numpy as np

_TYPE_CODES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4")}
_CODE_OF = {(dtype.kind, dtype.itemsize): code for code, dtype in _TYPE_CODES.items()}
UINT8 = 0x08
IMAGES_MAGIC = 0x0803  # 2051: uint8, 3 dimensions
LABELS_MAGIC = 0x0801  # 2049: uint8, 1 dimension
_CHUNK = 1 << 20
GZIP_LEVEL = 6  # level 9 is 15x slower for 2% smaller MNIST files
# What reading a damaged file raises: gzip.BadGzipFile is an OSError, a truncated stream an
# EOFError, a corrupt deflate stream a zlib.error (which is neither).
_READ_ERRORS = (OSError, EOFError, zlib.error)


class IdxError(ValueError):
    """A file is not the IDX file it should be (missing, wrong magic, truncated, mismatched)."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class IdxHeader:
    """What an IDX header says: the element type code and the array's shape."""

    type_code: int
    shape: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype:
        return _TYPE_CODES[self.type_code]

    @property
    def count(self) -> int:
        return self.shape[0]

    @property
    def record_size(self) -> int:
        """Bytes per record."""
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    @property
    def payload_size(self) -> int:
        return self.count * self.record_size

    def to_bytes(self) -> bytes:
        return struct.pack(f">BBBB{len(self.shape)}I", 0, 0, self.type_code, len(self.shape), *self.shape)


def open_binary(path: str) -> BinaryIO:
    """Opens an IDX file for reading, transparently un-gzipping ``*.gz``.

    Local paths use plain files; URIs (gs://, s3://, hdfs://, as on a cluster) go through
    TensorFlow's file systems.
    """
    if "://" in path:
        from tfx.dsl.io import fileio

        if not fileio.exists(path):
            raise IdxError(path, "file not found")
        with fileio.open(path, "rb") as remote:  # IDX files are small: one read, nothing left open
            raw: BinaryIO = io.BytesIO(remote.read())
        return gzip.GzipFile(fileobj=raw, mode="rb") if path.endswith(".gz") else raw
    if not os.path.isfile(path):
        raise IdxError(path, "file not found")
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _read(path: str, stream: BinaryIO, size: int, problem: str = "truncated or corrupt compressed data") -> bytes:
    """``stream.read(size)``, with a damaged file's error (see _READ_ERRORS) as an IdxError naming it."""
    try:
        return stream.read(size)
    except _READ_ERRORS as err:
        raise IdxError(path, f"{problem}: {err}") from None


def read_header(path: str, stream: BinaryIO, expected_magic: int) -> IdxHeader:
    """Reads and checks the header at the start of ``stream``.

    ``expected_magic`` is the uint8 magic (2051 images, 2049 labels); its low byte, the number of
    dimensions, must match, and its type byte may be any integer type.
    """
    head = _read(path, stream, 4, f"cannot be read as {'gzip' if path.endswith('.gz') else 'IDX'}")
    if len(head) < 4:
        raise IdxError(path, f"truncated: {len(head)} bytes, shorter than an IDX header")
    magic = struct.unpack(">I", head)[0]
    if head[:2] != b"\0\0" or head[3] != expected_magic & 0xFF:
        kind = {IMAGES_MAGIC: "an images", LABELS_MAGIC: "a labels"}.get(expected_magic, "an IDX")
        raise IdxError(path, f"wrong IDX magic number {magic} (0x{magic:08x}); {kind} file has {expected_magic}")
    if head[2] not in _TYPE_CODES:
        raise IdxError(path, f"IDX data type 0x{head[2]:02x} is not an integer type (0x08, 0x09, 0x0b, 0x0c)")
    ndim = head[3]
    dims = _read(path, stream, 4 * ndim)
    if len(dims) < 4 * ndim:
        raise IdxError(path, "truncated inside the header's dimensions")
    return IdxHeader(head[2], struct.unpack(f">{ndim}I", dims))


def inspect(path: str, expected_magic: int) -> tuple[IdxHeader, str]:
    """Reads the whole file once: returns its header and the SHA-256 of its uncompressed bytes.

    Raises IdxError if the payload is shorter or longer than the header promises, so a truncated
    download or a concatenated file is caught before any record is used.
    """
    digest = hashlib.sha256()
    with open_binary(path) as stream:
        header = read_header(path, stream, expected_magic)
        digest.update(header.to_bytes())
        remaining = header.payload_size
        while remaining > 0:
            chunk = _read(path, stream, min(_CHUNK, remaining))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
        trailing = _read(path, stream, 1)
    if remaining > 0:
        got = header.payload_size - remaining
        raise IdxError(
            path,
            f"truncated: the header promises {header.count} records "
            f"({header.payload_size} bytes of data) but only {got} bytes follow",
        )
    if trailing:
        raise IdxError(path, f"has bytes after the {header.count} records its header promises")
    return header, digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class CheckedPair:
    count: int
    images_sha256: str
    labels_sha256: str


def check_pair(images_path: str, labels_path: str, image_shape: tuple[int, int]) -> CheckedPair:
    """Validates an images/labels pair completely: headers, sizes, lengths, matching counts."""
    images, images_sha256 = inspect(images_path, IMAGES_MAGIC)
    labels, labels_sha256 = inspect(labels_path, LABELS_MAGIC)
    for path, header in ((images_path, images), (labels_path, labels)):
        if header.count == 0:
            raise IdxError(path, "holds no records: there is nothing to train or evaluate on")
    if images.shape[1:] != tuple(image_shape):
        raise IdxError(
            images_path,
            f"images are {'x'.join(map(str, images.shape[1:]))}, expected {'x'.join(map(str, image_shape))} "
            "(the schema and the model fix the image size)",
        )
    if images.count != labels.count:
        raise IdxError(
            images_path,
            f"holds {images.count} images but {os.path.basename(labels_path)} holds {labels.count} labels",
        )
    return CheckedPair(images.count, images_sha256, labels_sha256)


def read_records(path: str, expected_magic: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Returns records [start, stop) as an array of shape (n, *record_shape) in the file's type.

    Reads sequentially (gzip is not seekable), so a reader of a late shard decompresses what comes
    before it; for MNIST-sized files that costs well under a second.
    """
    with open_binary(path) as stream:
        header = read_header(path, stream, expected_magic)
        stop = header.count if stop is None else min(stop, header.count)
        size = header.record_size
        skip = start * size
        while skip > 0:
            skipped = len(_read(path, stream, min(_CHUNK, skip)))
            if skipped == 0:
                raise IdxError(path, f"truncated before record {start}")
            skip -= skipped
        want = (stop - start) * size
        data = _read(path, stream, want)
    if len(data) != want:
        raise IdxError(path, f"truncated: records {start}..{stop} need {want} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=header.dtype).reshape((stop - start, *header.shape[1:]))


def read_array(path: str, expected_magic: int) -> np.ndarray:
    """Reads a whole IDX file into memory."""
    return read_records(path, expected_magic)


def write_array(path: str, array: np.ndarray) -> None:
    """Writes an integer array as IDX, gzipped (deterministically: no name, mtime 0) for ``*.gz``."""
    array = np.asarray(array)
    code = _CODE_OF.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise ValueError(f"IDX holds uint8, int8, int16 or int32 here, not {array.dtype}")
    header = IdxHeader(code, tuple(int(d) for d in array.shape))
    payload = header.to_bytes() + array.astype(header.dtype).tobytes()
    if path.endswith(".gz"):
        with (
            open(path, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL) as gz,
        ):
            gz.write(payload)
    else:
        with open(path, "wb") as raw:
            raw.write(payload)


def sha256_file(path: str) -> str:
    """SHA-256 of a file's bytes as stored (for downloads such as a wheel)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
