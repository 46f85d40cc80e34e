"""The command of every Kubeflow pod: TFX's Kubeflow entrypoint, reading and writing artifacts at
the local paths where KFP's launcher stages them.

KFP's launcher (kubeflow/pipelines ``backend/src/v2/component/launcher_v2.go``) downloads every
input artifact whose URI is ``gs://``, ``minio://`` or ``s3://`` to a local path
(``LocalPathForURI``: ``/s3/<bucket>/<key>`` and so on) before the command runs, creates the
parent of each output artifact's local path (``prepareOutputFolders``), and afterwards uploads
each output artifact from its local path, to the URI the ExecutorOutput names
(``uploadOutputArtifacts``, ``mergeRuntimeArtifacts``; a missing path is skipped). TFX's entrypoint
uses artifact URIs as they are: right for ``gs://``, which TensorFlow writes itself, and
impossible for ``s3://`` and ``minio://``, which no TensorFlow here writes
(components/object_store.py). So, for those schemes only, this swaps each artifact's URI for the
launcher's local path before TFX's entrypoint runs, and swaps the URIs back in the ExecutorOutput
it writes: TensorFlow reads and writes local files, and the launcher moves them.

``VAE_MNIST_KFP_LOCAL_ROOT`` moves the launcher's ``/`` elsewhere; only the test harness sets it
(tests/kfp_harness.py), to give each "pod" a root of its own.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app

# isort: off
import pipeline  # noqa: F401  (the stack's environment, before TensorFlow loads)
import components  # noqa: F401  (registers s3:// for what pods read outside artifacts)

# isort: on
from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor as tfx_entrypoint

TFX_ENTRYPOINT = tfx_entrypoint.__name__
STAGED_SCHEMES = {"s3://": "s3", "minio://": "minio"}  # launcher_v2.go, LocalPathForURI
LOCAL_ROOT_VARIABLE = "VAE_MNIST_KFP_LOCAL_ROOT"
INVOCATION_FLAG = "--json_serialized_invocation_args"


def local_path(uri: str, root: str = "/") -> str | None:
    """Where KFP's launcher stages an artifact with this URI; None for URIs used as they are."""
    for scheme, directory in STAGED_SCHEMES.items():
        if uri.startswith(scheme):
            return os.path.join(root, directory, uri[len(scheme) :])
    return None


def _artifacts(section: dict):
    for artifact_list in section.get("artifacts", {}).values():
        yield from artifact_list.get("artifacts", [])


def stage_uris(executor_input: dict, root: str) -> dict[str, str]:
    """Rewrites staged artifacts' URIs to local paths, in place; returns {local path: URI}."""
    originals = {}
    for section in (executor_input.get("inputs", {}), executor_input.get("outputs", {})):
        for artifact in _artifacts(section):
            path = local_path(artifact.get("uri", ""), root)
            if path:
                originals[path.rstrip("/")] = artifact["uri"]
                artifact["uri"] = path
    return originals


def restore_uris(output_file: str, originals: dict[str, str]) -> None:
    """Puts the artifacts' URIs back into the ExecutorOutput TFX wrote, for the launcher."""
    if not originals or not os.path.exists(output_file):
        return
    with open(output_file) as f:
        executor_output = json.load(f)
    for artifact in _artifacts(executor_output):
        uri = artifact.get("uri", "").rstrip("/")
        if uri in originals:
            artifact["uri"] = originals[uri]
    temporary = output_file + ".tmp"
    with open(temporary, "w") as f:
        json.dump(executor_output, f)
    os.replace(temporary, output_file)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if INVOCATION_FLAG not in argv[:-1]:
        raise SystemExit(f"{__name__}: expected {INVOCATION_FLAG} <ExecutorInput JSON> (TFX's entrypoint flags)")
    at = argv.index(INVOCATION_FLAG) + 1
    executor_input = json.loads(argv[at])
    originals = stage_uris(executor_input, os.environ.get(LOCAL_ROOT_VARIABLE, "/"))
    argv[at] = json.dumps(executor_input)
    output_file = executor_input["outputs"]["outputFile"]

    def run(parsed) -> None:
        tfx_entrypoint.main(parsed)
        restore_uris(output_file, originals)

    # As TFX's own `python -m ...kubeflow_v2_run_executor` does.
    app.run(run, argv=[sys.argv[0], *argv], flags_parser=tfx_entrypoint._parse_flags)


if __name__ == "__main__":
    main()
