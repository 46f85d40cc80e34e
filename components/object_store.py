"""S3-compatible object stores (AWS S3, MinIO, SeaweedFS): ``s3://`` for everything that goes
through TFX's ``fileio``, and the one place that knows how a store is configured.

Why a file system of our own, and not TensorFlow's: neither stack's TensorFlow has ``s3://``.
tensorflow-io's plugin adds it to TF 2.16, but every process that used it aborts at exit
("pure virtual method called", exit code 134, tensorflow/io#2039; the fix, tensorflow/io#2120,
is in no release), and a pod's exit code decides a Kubeflow task; its last release (0.37.1) does
not load into TF 2.21 (``undefined symbol: _ZN3tsl5mutex6unlockEv``). So TensorFlow never touches
S3 here:
- pipeline artifacts (the pipeline root) are staged by Kubeflow's launcher, which downloads each
  input artifact to a local path and uploads each output from one (pipeline/kfp_pod.py);
- what the pipeline reads and writes outside its artifacts (the input directory and its spans,
  the serving root: versions, ``models.config``, pins) goes through TFX's ``fileio``, for which
  this module registers an ``s3://`` file system built on boto3, ahead of TensorFlow's.
A local run's pipeline root must be local or ``gs://`` (pipeline/config.py says so).

Configuration is AWS's standard variables, read by boto3 itself: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``), ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``) for a store that is not AWS, and ``AWS_CA_BUNDLE``. With an endpoint set,
buckets are addressed by path (``http://host/bucket/key``), as SeaweedFS and MinIO serve them.
Nothing else reads S3 here: Beam is never given an ``s3://`` path, so its ``--s3_*`` options are
not needed.

What the store guarantees, and what we rely on: one object is written whole or not at all (a PUT
or a completed multipart upload), so a file written through ``open(..., "w")`` is replaced
atomically, and a write that fails midway leaves the old object; reads and listings are strongly
consistent after a write (AWS S3 since December 2020, MinIO, SeaweedFS's filer). There are no
directories: ``makedirs`` writes nothing (no zero-byte "directory marker" objects, which break
SavedModels staged between Kubeflow steps, kubeflow/pipelines#13476), a directory exists while an
object lies under it, and a directory rename is a copy and a delete (components/serving_layout.py
says how a new version appears). Large files go up in parts (boto3's managed transfer).
"""

from __future__ import annotations

import fnmatch
import io
import os
import posixpath
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

from tfx.dsl.io import filesystem, filesystem_registry

SCHEME = "s3://"
DEFAULT_REGION = "us-east-1"
# Open-source KFP's own store and the secret with its keys, what a pod uses unless told otherwise:
# SeaweedFS since KFP 2.15 (its S3 port; MinIO's service had the same port), manifests/kustomize/
# third-party/seaweedfs/base/seaweedfs/seaweedfs-service.yaml; the secret and its keys,
# backend/src/v2/config/env.go (minioArtifactSecretName, minioArtifactAccessKeyKey/SecretKeyKey).
KFP_ENDPOINT = "http://seaweedfs.kubeflow:9000"
KFP_SECRET = "mlpipeline-minio-artifact"
KFP_SECRET_KEYS = ("accesskey", "secretkey")
# TFX registers TensorFlow's file system at priority 10 for '', gs://, hdfs:// and s3://; lower wins.
_PRIORITY = 0
_SPOOL_BYTES = 64 << 20  # files up to this size stay in memory while they move
_DELETE_BATCH = 1000  # S3's DeleteObjects limit


class ObjectStoreError(OSError):
    """A store refused or could not be reached; the message is one line naming bucket and endpoint."""


def is_s3(path: str) -> bool:
    return str(path).startswith(SCHEME)


def split(path: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key``; the key has no leading or trailing slash."""
    rest = str(path)[len(SCHEME) :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ObjectStoreError(f"{path}: an s3:// path needs a bucket name")
    return bucket, key.strip("/")


def endpoint() -> str:
    """The store's endpoint as configured, for messages: AWS's own when none is set."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3 (no AWS_ENDPOINT_URL)"


_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def client():
    """A boto3 S3 client for this process and configuration (clients are thread-safe; one per
    process, since a forked process must not share a parent's connections)."""
    names = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
    key = (os.getpid(), *(os.environ.get(name) for name in names))
    with _clients_lock:
        if key not in _clients:
            import boto3
            from botocore.config import Config

            custom = bool(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
            config = Config(
                s3={"addressing_style": "path" if custom else "auto"},
                retries={"max_attempts": 4, "mode": "standard"},
                connect_timeout=10,
                read_timeout=120,
            )
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
            _clients[key] = boto3.session.Session().client("s3", region_name=region, config=config)
        return _clients[key]


def _error(error: Exception, path: str) -> OSError:
    """A botocore error as one line naming the bucket and the endpoint."""
    from botocore import exceptions

    bucket = split(path)[0] if is_s3(path) else path
    where = f"s3://{bucket} at {endpoint()}"
    if isinstance(error, exceptions.NoCredentialsError):
        return ObjectStoreError(f"{where}: no credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(error, (exceptions.EndpointConnectionError, exceptions.ConnectionError)):
        return ObjectStoreError(f"{where}: cannot connect to the store (AWS_ENDPOINT_URL): {error}")
    if isinstance(error, exceptions.ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket" or (code == "404" and not split(path)[1]):
            return ObjectStoreError(f"{where}: the bucket '{bucket}' does not exist")
        if code in ("NoSuchKey", "404", "NotFound"):
            return filesystem.NotFoundError(f"{path} does not exist")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403") or status == 403:
            return ObjectStoreError(
                f"{where}: access denied ({code}); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        return ObjectStoreError(f"{where}: {code or status}: {error}")
    return ObjectStoreError(f"{where}: {error}")


def _call(path: str, method: str, **kwargs):
    from botocore import exceptions

    try:
        return getattr(client(), method)(**kwargs)
    except (exceptions.BotoCoreError, exceptions.ClientError) as e:
        raise _error(e, path) from e


def check_access(path: str) -> None:
    """Raises ObjectStoreError, one line, if the bucket of ``path`` is missing or refuses us:
    what a run checks before any work, so a wrong credential never costs a training."""
    bucket, key = split(path)
    _call(f"{SCHEME}{bucket}", "head_bucket", Bucket=bucket)
    _call(path, "list_objects_v2", Bucket=bucket, Prefix=key, MaxKeys=1)


def _keys(path: str, delimiter: str = "") -> Iterator[dict]:
    """Listing pages under ``path/`` (the whole bucket for ``s3://bucket``)."""
    from botocore import exceptions

    bucket, key = split(path)
    prefix = f"{key}/" if key else ""
    paginator = client().get_paginator("list_objects_v2")
    try:
        yield from paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter=delimiter)
    except (exceptions.BotoCoreError, exceptions.ClientError) as e:
        raise _error(e, path) from e


def _files_under(path: str) -> list[str]:
    """Keys of every object under ``path/``, directory markers left out."""
    return [obj["Key"] for page in _keys(path) for obj in page.get("Contents", []) if not obj["Key"].endswith("/")]


def _is_file(path: str) -> bool:
    bucket, key = split(path)
    if not key:
        return False
    try:
        _call(path, "head_object", Bucket=bucket, Key=key)
        return True
    except filesystem.NotFoundError:
        return False


class _Upload(io.RawIOBase):
    """A file opened for writing: buffered, and uploaded as one object when closed without error,
    so readers see the old object or the whole new one, never a part."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path
        self._buffer = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)
        self._discard = False

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._buffer.write(data.encode() if isinstance(data, str) else data)
        return len(data)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._discard:
                from boto3.s3.transfer import TransferConfig
                from botocore import exceptions

                bucket, key = split(self._path)
                self._buffer.seek(0)
                try:
                    client().upload_fileobj(self._buffer, bucket, key, Config=TransferConfig(use_threads=False))
                except (exceptions.BotoCoreError, exceptions.ClientError) as e:
                    raise _error(e, self._path) from e
                except Exception as e:  # s3transfer wraps errors of its parts
                    cause = e.__cause__ or e.__context__
                    if isinstance(cause, (exceptions.BotoCoreError, exceptions.ClientError)):
                        raise _error(cause, self._path) from e
                    raise
        finally:
            self._buffer.close()
            super().close()

    def __exit__(self, kind, value, traceback):
        self._discard = kind is not None  # a failed write uploads nothing
        self.close()


def _download(path: str):
    """The object's bytes in a spooled temporary file, positioned at the start."""
    bucket, key = split(path)
    if not key:
        raise IsADirectoryError(path)
    buffer = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)
    from botocore import exceptions

    try:
        client().download_fileobj(bucket, key, buffer)
    except (exceptions.BotoCoreError, exceptions.ClientError) as e:
        raise _error(e, path) from e
    buffer.seek(0)
    return buffer


def _match(pattern_parts: list[str], path_parts: list[str]) -> bool:
    return len(pattern_parts) == len(path_parts) and all(
        fnmatch.fnmatchcase(name, pattern) for name, pattern in zip(path_parts, pattern_parts, strict=True)
    )


class S3Filesystem(filesystem.Filesystem):
    """``s3://`` for TFX's ``fileio`` (and so for ``tfx.utils.io_utils``), over boto3."""

    SUPPORTED_SCHEMES = [SCHEME]

    @staticmethod
    def open(name, mode: str = "r"):
        name = os.fsdecode(name)
        if "w" in mode:
            upload = _Upload(name)
            return upload if "b" in mode else _TextUpload(upload)
        if "a" in mode or "+" in mode or "x" in mode:
            raise ObjectStoreError(f"{name}: an object can only be read or replaced whole (mode {mode!r})")
        data = _download(name)
        if "b" in mode:
            return data
        with data:  # text files here are small (configs, reports)
            return io.StringIO(data.read().decode("utf-8"))

    @staticmethod
    def copy(src, dst, overwrite: bool = False) -> None:
        """A server-side copy: the bytes never leave the store."""
        src, dst = os.fsdecode(src), os.fsdecode(dst)
        if not overwrite and _is_file(dst):
            raise OSError(f"Destination file {dst!r} already exists and argument `overwrite` is false.")
        (src_bucket, src_key), (dst_bucket, dst_key) = split(src), split(dst)
        from botocore import exceptions

        try:
            client().copy({"Bucket": src_bucket, "Key": src_key}, dst_bucket, dst_key)
        except (exceptions.BotoCoreError, exceptions.ClientError) as e:
            raise _error(e, src) from e

    @staticmethod
    def exists(path) -> bool:
        path = os.fsdecode(path)
        return _is_file(path) or S3Filesystem.isdir(path)

    @staticmethod
    def glob(pattern) -> list[str]:
        pattern = os.fsdecode(pattern)
        bucket, key = split(pattern)
        literal = key.split("*")[0].split("?")[0].split("[")[0]
        base = literal.rsplit("/", 1)[0] if "/" in literal else ""
        if literal == key:  # no wildcard
            return [pattern.rstrip("/")] if S3Filesystem.exists(pattern) else []
        candidates = set()
        for found in _files_under(f"{SCHEME}{bucket}/{base}"):
            parts = found.split("/")
            candidates.update("/".join(parts[:n]) for n in range(1, len(parts) + 1))
        wanted = key.split("/")
        return sorted(f"{SCHEME}{bucket}/{c}" for c in candidates if _match(wanted, c.split("/")))

    @staticmethod
    def isdir(path) -> bool:
        path = os.fsdecode(path)
        bucket, key = split(path)
        if not key:
            _call(path, "head_bucket", Bucket=bucket)
            return True
        listing = _call(path, "list_objects_v2", Bucket=bucket, Prefix=key + "/", MaxKeys=1)
        return listing.get("KeyCount", 0) > 0

    @staticmethod
    def listdir(path) -> list[str]:
        path = os.fsdecode(path).rstrip("/")
        names = set()
        for page in _keys(path, delimiter="/"):
            names.update(posixpath.basename(p["Prefix"].rstrip("/")) for p in page.get("CommonPrefixes", []))
            names.update(posixpath.basename(o["Key"]) for o in page.get("Contents", []) if not o["Key"].endswith("/"))
        if not names and not S3Filesystem.isdir(path):
            raise filesystem.NotFoundError(f"{path} does not exist")
        return sorted(names)

    @staticmethod
    def makedirs(path) -> None:
        """Nothing to make: a directory is the objects under it (no marker objects, see above)."""

    @staticmethod
    def mkdir(path) -> None:
        """As makedirs."""

    @staticmethod
    def remove(path) -> None:
        path = os.fsdecode(path)
        if not _is_file(path):
            raise filesystem.NotFoundError(f"{path} does not exist")
        bucket, key = split(path)
        _call(path, "delete_object", Bucket=bucket, Key=key)

    @staticmethod
    def rename(src, dst, overwrite: bool = False) -> None:
        """A file's copy then delete (S3 has no rename); directories are not renamed here."""
        S3Filesystem.copy(src, dst, overwrite=overwrite)
        S3Filesystem.remove(src)

    @staticmethod
    def rmtree(path) -> None:
        path = os.fsdecode(path).rstrip("/")
        bucket, _ = split(path)
        keys = [obj["Key"] for page in _keys(path) for obj in page.get("Contents", [])]
        if not keys:
            raise filesystem.NotFoundError(f"{path} does not exist")
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": k} for k in keys[start : start + _DELETE_BATCH]]
            answer = _call(path, "delete_objects", Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise ObjectStoreError(f"s3://{bucket}/{first['Key']} at {endpoint()}: not deleted: {first['Code']}")

    @staticmethod
    def stat(path):
        path = os.fsdecode(path)
        bucket, key = split(path)
        head = _call(path, "head_object", Bucket=bucket, Key=key)
        return _Stat(head["ContentLength"], int(head["LastModified"].timestamp() * 1e9))

    @staticmethod
    def walk(top, topdown: bool = True, onerror=None):
        top = os.fsdecode(top).rstrip("/")
        bucket, key = split(top)
        tree: dict[str, tuple[set, list]] = {"": (set(), [])}
        for found in _files_under(top):
            relative = found[len(key) + 1 :] if key else found
            parts = relative.split("/")
            for depth in range(len(parts) - 1):
                parent = "/".join(parts[:depth])
                tree.setdefault(parent, (set(), []))[0].add(parts[depth])
                tree.setdefault("/".join(parts[: depth + 1]), (set(), []))
            tree["/".join(parts[:-1])][1].append(parts[-1])
        if len(tree) == 1 and not tree[""][1]:
            return  # nothing there, as TensorFlow's walk yields nothing for a missing directory

        def visit(relative: str):
            subdirs, files = tree[relative]
            here = posixpath.join(top, relative) if relative else top
            entry = (here, sorted(subdirs), sorted(files))
            if topdown:
                yield entry
            for name in entry[1]:
                yield from visit(posixpath.join(relative, name) if relative else name)
            if not topdown:
                yield entry

        yield from visit("")


class _Stat:
    def __init__(self, length: int, mtime_nsec: int):
        self.length, self.mtime_nsec, self.is_directory = length, mtime_nsec, False


class _TextUpload(io.TextIOWrapper):
    def __init__(self, upload: _Upload):
        super().__init__(io.BufferedWriter(upload), encoding="utf-8")
        self._upload = upload

    def __exit__(self, kind, value, traceback):
        if kind is not None:
            self._upload._discard = True
        self.close()


def write_text_atomically(path: str, text: str) -> None:
    """Replaces a small text file so that a reader sees the old content or the new, never a part:
    one object on a store; on a local disk a temporary file beside it, flushed, then renamed."""
    from tfx.dsl.io import fileio

    if "://" in path:
        with fileio.open(path, "w") as f:  # one object, written whole (gs:// and s3:// alike)
            f.write(text)
        return
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def register() -> None:
    filesystem_registry.DEFAULT_FILESYSTEM_REGISTRY.register(S3Filesystem, priority=_PRIORITY)
