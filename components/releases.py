"""Release labels in TF Serving's models.config: a ``canary`` beside the ``stable`` version,
promote and roll back, each written in the order TF Serving accepts.

Why our own: TFX has no release flow (its Pusher only adds versions), and TF Serving's labels
(``version_labels``, tensorflow_serving/g3doc/serving_config.md) are the mechanism a TF Serving
fleet already has: clients address ``/v1/models/<name>/labels/stable`` or ``canary`` and the
labels move under them. A labelled entry lists the versions to keep loaded in a ``specific``
policy, and ``stable`` is the version the pipeline treats as served (the Evaluator's baseline,
the warm start, the span scores: components/serving_layout.py).

TF Serving's rules, from tensorflow_serving/model_servers/server_core.cc (ReloadConfig,
UpdateModelVersionLabelMap, ServableRequestFromModelSpec):
1. On every read of the file the labels are checked *before* the new policy is applied. A label
   on a version that is not loaded and available fails the whole reload: nothing of the new file
   is applied, and the server retries on its next read. So a label may move onto a version the
   server is already loading (it succeeds once the load ends), but a label on a version that only
   the same new file asks to load never succeeds.
2. ``--allow_version_labels_for_unavailable_models`` lets a *new* label (or one keeping its
   version) name a version that is not loaded yet; at start-up nothing is loaded, so a labelled
   models.config needs it. Our docker line and manifests pass it. Moving an existing label still
   needs the version loaded.
3. A request without a label gets the newest loaded version: with a canary loaded, the canary.

So a move onto a version not loaded yet takes two writes (``plan_*`` make the steps): first the
policy that loads it, labels as they were; then, once the server has read that (one poll of the
file, ``CONFIG_POLL_SECONDS``), the move (``apply`` waits). Every write goes through
serving_layout.write_models_config: atomic, other models and comments kept.

The stable versions are also recorded in ``<model_dir>/releases.json`` (a name TF Serving never
reads as a version): rollback returns to the stable version before the current one.

Pins and labels: a pin (``serving pin``) is a ``specific`` policy without labels. ``pin`` refuses
while labels exist (``rollback`` is the labelled way back); ``unpin`` removes labels and pin, and
TF Serving follows the newest version again. A canary push onto a pinned model makes the pinned
version ``stable``. A ``direct`` push onto a labelled model adds the version on disk and moves no
label: like a pin, the labels hold until promote, rollback or unpin.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time

from tfx.dsl.io import fileio

from components import object_store, serving_layout
from components.serving_layout import CANARY_LABEL, STABLE_LABEL

CONFIG_POLL_SECONDS = 30  # TF Serving re-reads models.config this often (our docker line, manifests)
SETTLE_SECONDS = CONFIG_POLL_SECONDS + 5  # between a write that loads a version and a label move onto it
HISTORY_FILE = "releases.json"


class ReleaseError(ValueError):
    """A release step that cannot be taken; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Step:
    """One write of this model's entry in models.config."""

    versions: tuple[int, ...]  # the ``specific`` policy: what TF Serving keeps loaded
    labels: tuple[tuple[str, int], ...]  # sorted (label, version) pairs

    @classmethod
    def of(cls, versions, labels: dict[str, int]) -> Step:
        return cls(tuple(sorted(set(versions))), tuple(sorted(labels.items())))

    def label(self, name: str) -> int | None:
        return dict(self.labels).get(name)


def current(model_dir: str) -> Step:
    return Step.of(*serving_layout.policy(model_dir))


def _moved(before: Step, labels: dict[str, int]) -> Step | None:
    """The step that loads every newly labelled version beside what ``before`` loads, when some
    existing label moves onto a version ``before`` does not load (rule 1); else None."""
    old = dict(before.labels)
    fresh = {v for name, v in labels.items() if name in old and old[name] != v and v not in before.versions}
    return Step.of((*before.versions, *fresh), old) if fresh else None


def _steps(before: Step, versions, labels: dict[str, int]) -> list[Step]:
    loading = _moved(before, labels)
    return [s for s in (loading, Step.of(versions, labels)) if s is not None and s != before]


def plan_canary(model_dir: str, version: int, served_before: int | None) -> list[Step]:
    """``version`` labelled canary beside stable (``served_before``, the version served before it
    was published, becomes stable if nothing is labelled yet); the first release of a model is
    stable at once (nothing to compare with)."""
    before = current(model_dir)
    stable = before.label(STABLE_LABEL)
    if stable is None:
        stable = served_before
    if stable is None or stable == version:
        return _steps(before, [version], {STABLE_LABEL: version})
    return _steps(before, [stable, version], {STABLE_LABEL: stable, CANARY_LABEL: version})


def plan_promote(model_dir: str) -> list[Step]:
    """The canary becomes stable; the old stable is unloaded by the same write, after the label
    moved (rule 1: labels first, then the policy)."""
    before = current(model_dir)
    canary = before.label(CANARY_LABEL)
    if canary is None:
        raise ReleaseError(f"{model_dir} has no canary to promote (labels: {_labels_text(before)})")
    serving_layout.require_complete(model_dir, canary, ReleaseError)
    return _steps(before, [canary], {STABLE_LABEL: canary})


def plan_rollback(model_dir: str, to: int | None = None) -> list[Step]:
    """Stable goes back to the stable version before it (or ``to``), reloaded from disk; a canary
    stays as it is."""
    before = current(model_dir)
    stable = before.label(STABLE_LABEL)
    if stable is None:
        raise ReleaseError(f"{model_dir} has no stable label to roll back (`vae-mnist serving pin` pins a version)")
    if to is None:
        stack = stable_history(model_dir)
        # What was stable before the current one (a hand-edited label may be off the stack).
        earlier = stack[: len(stack) - 1 - stack[::-1].index(stable)] if stable in stack else stack
        if not earlier:
            raise ReleaseError(f"no stable version before {stable} is recorded in {_history_path(model_dir)}")
        to = earlier[-1]
    if to == stable:
        raise ReleaseError(f"version {to} is stable already")
    serving_layout.require_complete(model_dir, to, ReleaseError)
    canary = before.label(CANARY_LABEL)
    labels = {STABLE_LABEL: to} | ({CANARY_LABEL: canary} if canary is not None else {})
    return _steps(before, [to, *([canary] if canary is not None else [])], labels)


def plan_unpin(model_dir: str) -> list[Step]:
    """No pin, no labels: TF Serving serves the newest version again."""
    return _steps(current(model_dir), [], {})


def apply(model_dir: str, steps: list[Step], action: str, settle_seconds: float = SETTLE_SECONDS) -> Step:
    """Writes the steps in order. Before a step that moves an existing label, waits until
    ``settle_seconds`` have passed since the previous write of this model's entry, so that TF
    Serving has read the write that loads the version (rule 1). Returns the last state."""
    state = current(model_dir)
    for step in steps:
        if any(dict(state.labels).get(name, version) != version for name, version in step.labels):
            wait = _last_write(model_dir) + settle_seconds - time.time()
            if wait > 0:
                logging.info("Waiting %.0f s for TF Serving to read models.config before a label moves", wait)
                time.sleep(wait)
        serving_layout.write_models_config(model_dir, pinned=list(step.versions) or None, labels=dict(step.labels))
        _record(model_dir, action, step)
        state = step
    return state


def _history_path(model_dir: str) -> str:
    return os.path.join(model_dir, HISTORY_FILE)


def history(model_dir: str) -> list[dict]:
    path = _history_path(model_dir)
    if not fileio.exists(path):
        return []
    with fileio.open(path, "r") as f:
        return json.load(f)


def _record(model_dir: str, action: str, step: Step) -> None:
    entries = history(model_dir)
    entries.append({"time": time.time(), "action": action, "loaded": list(step.versions), "labels": dict(step.labels)})
    object_store.write_text_atomically(_history_path(model_dir), json.dumps(entries, indent=1) + "\n")


def _last_write(model_dir: str) -> float:
    entries = history(model_dir)
    return entries[-1]["time"] if entries else 0.0


def stable_history(model_dir: str) -> list[int]:
    """The stable versions as releases set them, a stack: a rollback to a version on it pops
    back to that version, any other new stable version is pushed, and unpin (no labels) starts
    afresh."""
    stack: list[int] = []
    for entry in history(model_dir):
        stable = entry["labels"].get(STABLE_LABEL)
        if stable is None:
            stack = []
        elif entry["action"] == "rollback" and stable in stack:
            del stack[stack.index(stable) + 1 :]
        elif not stack or stack[-1] != stable:
            stack.append(stable)
    return stack


def _labels_text(state: Step) -> str:
    return ", ".join(f"{name} {version}" for name, version in state.labels) or "none"


def describe(model_dir: str) -> str:
    """One line: which label points where, and where unlabelled requests go."""
    state = current(model_dir)
    if not state.labels:
        return ""
    newest = max(state.versions) if state.versions else None
    return f"labels: {_labels_text(state)}; requests without a label get version {newest} (the newest loaded)"
