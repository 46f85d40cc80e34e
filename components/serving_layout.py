"""TF Serving's directory layout: ``<serving_root>/<model_name>/<version>/saved_model.pb``.

The one place that knows which pushed version is "the model served now", and how a new version
appears there without TF Serving ever loading half of it. ServedModel (the Evaluator's
baseline), our Pusher, the run summary and the ``predict`` client all ask here, through TFX's
``fileio`` so that ``gs://`` and ``s3://`` serving roots (components/object_store.py) work as
well as local ones.

How a version appears (``stage`` then ``publish``):
- It is first copied to ``<model_dir>/.incoming-<version>/``. TF Serving serves only directories
  whose names are numbers (tensorflow_serving/sources/storage_path/
  file_system_storage_path_source.cc), so it never looks at a staging directory.
- On a local or POSIX file system the staging directory is then renamed to ``<version>``: one
  atomic step, so the version is either absent or complete.
- Object stores (``gs://``, ``s3://``) have no directory rename. There the staged files are copied to
  ``<version>/`` inside the bucket (a server-side copy: seconds, not the upload) with
  ``saved_model.pb`` last, then the staging directory is deleted. An object appears whole or not
  at all, so while ``saved_model.pb`` is missing TF Serving cannot load the version: a load it
  tries in those seconds fails and is retried (5 times, a minute apart, by default:
  tensorflow_serving/core/aspired_versions_manager.h), and the version it serves stays served.
- What a crash leaves behind (a staging directory; on object stores a version without
  ``saved_model.pb``) is never loadable and is removed by the next push (``remove_leftovers``).
One pusher writes to a model directory at a time (a local run holds its output directory; on
Kubeflow, do not run two pipelines that push to one serving root at once).

Pinning: ``<serving_root>/models.config`` is TF Serving's ``--model_config_file``. A pin is its
``model_version_policy { specific { versions: N } }`` (tensorflow_serving/config/
model_server_config.proto): TF Serving then serves version N whatever is newer, and
``served_version`` answers N too, so the Evaluator's baseline, the warm start and the span scores
follow the pin. Release labels (``stable``, ``canary``) are the same policy listing the labelled
versions, with ``version_labels`` naming them; there ``stable`` is the served version
(components/releases.py). Every write keeps what the file already says about other models and
the policy, and replaces the file whole (a reader sees the old file or the new one).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import time

from tfx.dsl.io import fileio
from tfx.utils import io_utils

SAVED_MODEL_FILE = "saved_model.pb"
MODELS_CONFIG = "models.config"  # in the serving root, beside the model directories
DOCKER_MOUNT = "/models"  # where the docker line mounts a local serving root
STAGING_PREFIX = ".incoming-"  # not a number: TF Serving ignores it
STABLE_LABEL, CANARY_LABEL = "stable", "canary"  # release labels in models.config (components/releases.py)


_INT64 = 2**63


def parse_version(name: str) -> int | None:
    """A directory name as TF Serving reads it (file_system_storage_path_source.cc,
    ParseVersionNumber: ``strings::safe_strto64``): a decimal int64, leading zeros, a minus sign
    and surrounding spaces allowed; anything else (``.incoming-1``, a 20-digit name) is no version."""
    match = re.fullmatch(r"\s*(-?\d+)\s*", name.rstrip("/"))
    if not match or not -_INT64 <= int(match.group(1)) < _INT64:
        return None
    return int(match.group(1))


def version_dirs(model_dir: str) -> dict[int, str]:
    """{version: directory name} under a model's base path, oldest first, as TF Serving indexes
    them (IndexChildrenByVersion): names in sorted order, and where two names give one number
    (``123`` and ``00123``), the later name wins and the other is ignored."""
    if not fileio.isdir(model_dir):
        return {}
    found = {}
    for name in sorted(name.rstrip("/") for name in fileio.listdir(model_dir)):
        version = parse_version(name)
        if version is not None:
            found[version] = name
    return dict(sorted(found.items()))


def versions(model_dir: str) -> list[int]:
    """The version numbers under a model's base path, oldest first. TF Serving ignores every other
    name, so a directory named otherwise is never served."""
    return list(version_dirs(model_dir))


def version_path(model_dir: str, version: int, dirs: dict[int, str] | None = None) -> str:
    """The directory TF Serving loads ``version`` from (its name as it is, ``00123`` for 123), or
    where a new version goes (``<version>``)."""
    dirs = version_dirs(model_dir) if dirs is None else dirs
    return os.path.join(model_dir, dirs.get(version, str(version)))


def is_complete(model_dir: str, version: int, dirs: dict[int, str] | None = None) -> bool:
    return fileio.exists(os.path.join(version_path(model_dir, version, dirs), SAVED_MODEL_FILE))


def unreadable(version_dir: str) -> str | None:
    """Why TF Serving could not load this version's graph (a ``saved_model.pb`` that does not
    parse as a SavedModel: cut short, overwritten), or None."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    try:
        with fileio.open(os.path.join(version_dir, SAVED_MODEL_FILE), "rb") as f:
            saved_model = saved_model_pb2.SavedModel.FromString(f.read())
    except DecodeError as err:
        return f"its {SAVED_MODEL_FILE} does not parse ({err})"
    if not saved_model.meta_graphs:
        return f"its {SAVED_MODEL_FILE} holds no graph"
    return None


def served_version(model_dir: str, skipped: list[tuple[int, str]] | None = None) -> int | None:
    """The version TF Serving serves from ``model_dir``: the one labelled ``stable``, or the pinned
    version (if it is loadable), else the highest numeric version that holds a SavedModel TF
    Serving can read (its default ``latest`` policy: a version missing ``saved_model.pb`` or with
    a corrupt one fails to load, and the one served before stays served). None: nothing served.
    ``skipped`` collects the (version, reason) of complete versions passed over as unreadable."""
    dirs = version_dirs(model_dir)
    pinned = _chosen(*policy(model_dir))
    candidates = [pinned] if pinned is not None else list(reversed(dirs))
    for version in candidates:
        if not is_complete(model_dir, version, dirs):
            continue
        reason = unreadable(version_path(model_dir, version, dirs))
        if reason is None:
            return version
        if skipped is not None:
            skipped.append((version, reason))
    return None


def next_version(model_dir: str) -> int:
    """A new version number: the time in seconds, as TFX's Pusher numbers versions, but always
    above every version directory already there (complete or not), so pushes never collide."""
    highest = max(versions(model_dir), default=0)
    return max(int(time.time()), highest + 1)


def leftovers(model_dir: str) -> list[str]:
    """What an interrupted push left: staging directories, and version directories without
    ``saved_model.pb`` (which TF Serving cannot load)."""
    if not fileio.isdir(model_dir):
        return []
    names = [name.rstrip("/") for name in fileio.listdir(model_dir)]
    found = [os.path.join(model_dir, name) for name in names if name.startswith(STAGING_PREFIX)]
    dirs = version_dirs(model_dir)
    found += [version_path(model_dir, v, dirs) for v in dirs if not is_complete(model_dir, v, dirs)]
    return found


def remove_leftovers(model_dir: str) -> list[str]:
    removed = leftovers(model_dir)
    for path in removed:
        fileio.rmtree(path)
    return removed


def copy_saved_model(source: str, destination: str) -> None:
    """Copies a SavedModel directory with ``saved_model.pb`` last: whoever sees that file sees
    every other file complete (the rule TFX's Pusher and TF Serving rely on)."""
    io_utils.copy_dir(source, destination, deny_regex_patterns=[r"saved_model\.pb$"])
    io_utils.copy_file(os.path.join(source, SAVED_MODEL_FILE), os.path.join(destination, SAVED_MODEL_FILE))


def stage(saved_model_dir: str, model_dir: str, version: int) -> str:
    """Copies a model beside its future version directory, where TF Serving does not look."""
    staging = os.path.join(model_dir, f"{STAGING_PREFIX}{version}")
    copy_saved_model(saved_model_dir, staging)
    return staging


def publish(staging: str, model_dir: str, version: int) -> str:
    """Makes a staged model the version TF Serving loads next; returns the version directory."""
    final = os.path.join(model_dir, str(version))
    if "://" in model_dir:
        copy_saved_model(staging, final)
        fileio.rmtree(staging)
    else:
        os.rename(staging, final)  # atomic on one POSIX file system
    return final


def fingerprint(saved_model_dir: str, ignore: tuple[str, ...] = ()) -> str:
    """SHA-256 over every file's relative path and bytes, but the relative paths in ``ignore``
    (a pushed version's model card): equal for byte-identical models, so a model that is already
    served is recognised whatever version directory it sits in."""
    digest = hashlib.sha256()
    files = []
    for root, _, names in fileio.walk(saved_model_dir):
        files += [os.path.join(root, name) for name in names]
    for path in sorted(files):
        relative = os.path.relpath(path, saved_model_dir)
        if relative in ignore:
            continue
        digest.update(relative.encode() + b"\0")
        with fileio.open(path, "rb") as f:
            digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


def _split(model_dir: str) -> tuple[str, str]:
    """(serving root, model name) of ``<serving_root>/<model_name>``."""
    model_dir = model_dir.rstrip("/")
    return os.path.dirname(model_dir), os.path.basename(model_dir)


def read_models_config(serving_root: str):
    """The serving root's ModelServerConfig, empty if there is no models.config yet."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    path = os.path.join(serving_root, MODELS_CONFIG)
    if fileio.exists(path):
        with fileio.open(path, "r") as f:
            text = f.read()
        try:
            text_format.Parse(text, config)
        except text_format.ParseError as err:  # its message starts "<line>:<column> : "
            raise ModelsConfigError(
                f"{path}: not a TF Serving model config (line {err.GetLine()}: {str(err).split(' : ', 1)[-1]}); "
                "fix it, or `vae-mnist serving unpin --force` to write it afresh"
            ) from None
    return config


class ModelsConfigError(ValueError):
    """models.config cannot be read: which file, which line, and how to repair it."""


def _model_entry(config, model_name: str):
    for entry in config.model_config_list.config:
        if entry.name == model_name:
            return entry
    return None


def policy(model_dir: str) -> tuple[list[int], dict[str, int]]:
    """(the ``specific`` versions, oldest first, and the release labels) of this model's entry in
    models.config, read once; ([], {}) when TF Serving follows the newest version."""
    serving_root, model_name = _split(model_dir)
    entry = _model_entry(read_models_config(serving_root), model_name)
    if entry is None:
        return [], {}
    return sorted(entry.model_version_policy.specific.versions), dict(entry.version_labels)


def loaded_versions(model_dir: str) -> list[int]:
    """The versions models.config names for loading (``specific``: a pin, or the versions under
    release labels), oldest first; [] when TF Serving follows the newest version."""
    return policy(model_dir)[0]


def release_labels(model_dir: str) -> dict[str, int]:
    """{label: version} of this model in models.config (components/releases.py), {} if none."""
    return policy(model_dir)[1]


def _chosen(versions: list[int], labels: dict[str, int]) -> int | None:
    """The version a policy serves whatever is newer: ``stable`` under labels, else the pin."""
    if labels:
        return labels.get(STABLE_LABEL)
    return max(versions) if versions else None


def pinned_version(model_dir: str) -> int | None:
    """The pin: a ``specific`` policy without release labels (with labels, ``stable`` decides)."""
    versions, labels = policy(model_dir)
    return None if labels else _chosen(versions, labels)


def require_complete(model_dir: str, version: int, error: type[ValueError] = ValueError) -> None:
    """Raises ``error`` unless ``version`` is a complete pushed version, naming the ones there are."""
    if not is_complete(model_dir, version):
        known = ", ".join(map(str, versions(model_dir))) or "none"
        raise error(f"{model_dir} has no complete version {version} (versions: {known})")


def models_config_path(model_dir: str) -> str:
    """``<serving_root>/models.config`` of ``<serving_root>/<model_name>``."""
    return os.path.join(_split(model_dir)[0], MODELS_CONFIG)


_KEEP = object()


def write_models_config(model_dir: str, pinned=_KEEP, afresh: bool = False, labels=_KEEP) -> str:
    """Writes (or updates) ``models.config`` for this model; ``pinned``: a version or a list of
    versions to load (``specific``), None to follow the newest again, or left out to keep the
    policy as it is; ``labels``: {label: version} replacing the release labels, or left out to
    keep them; ``afresh``: ignore what the file holds (a corrupt file is replaced by this model's
    entry alone). The base path is the docker mount for a local serving root and the URI itself
    for a bucket (what a cluster's TF Serving reads). Comments and other models' entries in the
    file are kept (``_edited``)."""
    from tensorflow_serving.config import model_server_config_pb2

    serving_root, model_name = _split(model_dir)
    config = model_server_config_pb2.ModelServerConfig() if afresh else read_models_config(serving_root)
    entry = _model_entry(config, model_name)
    if entry is None:
        entry = config.model_config_list.config.add(name=model_name, model_platform="tensorflow")
        entry.base_path = model_dir if "://" in model_dir else f"{DOCKER_MOUNT}/{model_name}"
    if pinned is not _KEEP:
        entry.ClearField("model_version_policy")
        if pinned is not None:
            versions = [pinned] if isinstance(pinned, int) else sorted(pinned)
            entry.model_version_policy.specific.versions.extend(int(v) for v in versions)
    if labels is not _KEEP:
        entry.ClearField("version_labels")
        entry.version_labels.update({label: int(version) for label, version in labels.items()})
    from components import object_store

    path = models_config_path(model_dir)
    old_text = "" if afresh or not fileio.exists(path) else _read_text(path)
    object_store.write_text_atomically(path, _edited(old_text, config, model_name))
    return path


def _read_text(path: str) -> str:
    with fileio.open(path, "r") as f:
        return f.read()


def _edited(old_text: str, config, model_name: str) -> str:
    """``config`` as text that keeps a hand-edited file's comments and layout: only this model's
    ``config { ... }`` entry is rewritten (or added). Why by hand: protobuf's text format drops
    comments. If the edit would not read back as ``config`` exactly, the plain text is written."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    plain = text_format.MessageToString(config)
    entry_text = text_format.MessageToString(_model_entry(config, model_name))
    block = "  config {\n" + "".join(f"    {line}\n" for line in entry_text.splitlines()) + "  }"
    spans = _blocks(old_text)
    ours = [(a, b) for name, a, b in spans if name == "config" and _names(old_text[a:b], model_name)]
    lists = [(a, b) for name, a, b in spans if name == "model_config_list"]
    if len(ours) == 1:
        start, end = ours[0]
        text = old_text[:start] + block.strip() + old_text[end:]
    elif len(lists) == 1:
        end = lists[0][1] - 1  # the list's closing brace
        text = old_text[:end].rstrip() + "\n" + block + "\n" + old_text[end:]
    else:
        return plain
    check = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, check)
    except text_format.ParseError:
        return plain
    return text if check == config else plain


def _blocks(text: str) -> list[tuple[str, int, int]]:
    """(field name, start, end) of every ``name { ... }`` block in protobuf text, end after its
    closing brace; braces inside strings and ``#`` comments are skipped."""
    found, stack, i = [], [], 0
    while i < len(text):
        char = text[i]
        if char == "#":
            newline = text.find("\n", i)
            i = len(text) if newline < 0 else newline
            continue
        if char in "\"'":
            close = i + 1
            while close < len(text) and text[close] != char:
                close += 2 if text[close] == "\\" else 1
            i = close + 1
            continue
        if char == "{":
            name = re.search(r"(\w+)\s*:?\s*$", text[:i])
            stack.append((name.group(1) if name else "", name.start(1) if name else i))
        elif char == "}" and stack:
            name, start = stack.pop()
            found.append((name, start, i + 1))
        i += 1
    return found


def _names(block: str, model_name: str) -> bool:
    return re.search(r'\bname\s*:\s*["\']' + re.escape(model_name) + r'["\']', block) is not None


def pin(model_dir: str, version: int) -> str:
    """Pins TF Serving to ``version``, which must be a complete pushed version. Not while release
    labels exist: ``serving rollback`` moves ``stable`` (components/releases.py)."""
    labels = release_labels(model_dir)
    if labels:
        named = ", ".join(f"{label} {v}" for label, v in sorted(labels.items()))
        raise ValueError(
            f"{model_dir} is released under labels ({named}): use `vae-mnist serving rollback --to {version}`, "
            "or `vae-mnist serving unpin` to drop the labels first"
        )
    require_complete(model_dir, version)
    return write_models_config(model_dir, pinned=version)


def mirror(serving_root: str, local_root: str) -> list[str]:
    """One pass copying a serving root in a bucket to a local directory TF Serving reads; returns
    what changed, a line each.

    Why: TF Serving reads ``gs://`` itself but has had no ``s3://`` since 2.7 (its builds dropped
    TensorFlow's S3 file system: tensorflow/serving#1963), so on an S3 store it serves a local
    copy that this keeps current (kubeflow/serving/tf-serving-s3.yaml runs it beside TF Serving).
    A version is copied only once complete (``saved_model.pb`` is written last), into a staging
    directory, then renamed into place: TF Serving sees it whole or not at all. A version gone
    from the bucket is removed (TF Serving unloads it). ``models.config`` is copied with each base
    path inside the bucket pointed at ``/models/<name>`` (the mount TF Serving sees,
    ``DOCKER_MOUNT``), written atomically; without one, an entry per model is written.
    """
    from tfx.dsl.io import fileio

    from components import object_store

    serving_root = serving_root.rstrip("/")
    changes = []
    names = fileio.listdir(serving_root) if fileio.isdir(serving_root) else []
    models = [name.rstrip("/") for name in names if fileio.isdir(os.path.join(serving_root, name.rstrip("/")))]
    for model in models:
        remote_dir, local_dir = os.path.join(serving_root, model), os.path.join(local_root, model)
        remote, local = version_dirs(remote_dir), version_dirs(local_dir)
        complete = {v for v in remote if is_complete(remote_dir, v, remote)}
        for version in sorted(complete - set(local)):
            staging = os.path.join(local_dir, f"{STAGING_PREFIX}{version}")
            copy_saved_model(version_path(remote_dir, version, remote), staging)
            os.rename(staging, os.path.join(local_dir, remote[version]))  # the bucket's name for it
            changes.append(f"copied {model} version {version}")
        for version in sorted(set(local) - complete):
            fileio.rmtree(version_path(local_dir, version, local))
            changes.append(f"removed {model} version {version} (gone from {serving_root})")
    config = read_models_config(serving_root)
    if not config.model_config_list.config:
        for model in models:
            config.model_config_list.config.add(name=model, model_platform="tensorflow")
    for entry in config.model_config_list.config:
        if not entry.base_path or entry.base_path.rstrip("/").startswith(serving_root + "/"):
            entry.base_path = f"{DOCKER_MOUNT}/{entry.name}"
    from google.protobuf import text_format

    text = text_format.MessageToString(config)
    local_config = os.path.join(local_root, MODELS_CONFIG)
    if not os.path.exists(local_config) or pathlib.Path(local_config).read_text() != text:
        object_store.write_text_atomically(local_config, text)
        changes.append(f"wrote {local_config}")
    return changes
