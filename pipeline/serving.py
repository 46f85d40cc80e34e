"""Serving the pushed model with TF Serving: its config, the docker line, and a client.

The client sends TF Serving's own request formats (pipeline/rest_dialect.py), over REST or gRPC
(tensorflow-serving-api's PredictionService), or answers the same REST request in-process from
the pushed SavedModel (``--model-dir``), so what works against the files works against the server.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import urllib.error
import urllib.request

import numpy as np

from pipeline import rest_dialect

REST_PORT, GRPC_PORT = 8501, 8500


MAX_RESPONSE_BYTES = 256 << 20  # a REST answer larger than this is not TF Serving's to our requests
LABEL_PATTERN = r"[a-zA-Z0-9_]+"  # TF Serving's rule for a version label (g3doc/serving_config.md)


def docker_command(serving_root: str) -> str:
    """The line to paste into a shell: the mount is quoted, so a path with spaces stays one
    argument; TF Serving re-reads models.config, so ``vae-mnist serving pin`` and ``promote``
    need no restart; a labelled models.config needs the unavailable-labels flag at start-up
    (components/releases.py, rule 2)."""
    from components.releases import CONFIG_POLL_SECONDS
    from components.serving_layout import DOCKER_MOUNT, MODELS_CONFIG

    return (
        f"docker run --rm -p {GRPC_PORT}:{GRPC_PORT} -p {REST_PORT}:{REST_PORT} "
        f"-v {shlex.quote(f'{serving_root}:{DOCKER_MOUNT}')} tensorflow/serving "
        f"--model_config_file={DOCKER_MOUNT}/{MODELS_CONFIG} "
        f"--model_config_file_poll_wait_seconds={CONFIG_POLL_SECONDS} "
        "--allow_version_labels_for_unavailable_models"
    )


def latest_version_dir(model_dir: str, label: str | None = None) -> str:
    """A SavedModel directory as given, or the version TF Serving answers from below it: the
    labelled one, or without a label the newest loaded (ServableRequest::Latest; with a canary
    loaded, the canary)."""
    from components import serving_layout  # TFX's fileio: heavy

    if os.path.exists(os.path.join(model_dir, serving_layout.SAVED_MODEL_FILE)):
        if label:
            raise rest_dialect.RequestError(
                f"--label needs a model directory with versions, not one SavedModel ({model_dir})"
            )
        return model_dir
    labels = serving_layout.release_labels(model_dir)
    if label:
        if label not in labels:  # TF Serving's words for it (server_core.cc, GetModelVersionForLabel)
            known = ", ".join(sorted(labels)) or "none"
            raise rest_dialect.RequestError(f"Unrecognized servable version label: {label} (labels: {known})")
        version = labels[label]
    elif labels:
        version = max(serving_layout.loaded_versions(model_dir))
    else:
        version = serving_layout.served_version(model_dir)
    if version is None:
        raise FileNotFoundError(f"{model_dir} holds no SavedModel and no numeric version directories")
    return serving_layout.version_path(model_dir, version)


# The signatures whose input is serialized tf.Examples (``examples``; model/export.py); the others
# that take images take raw pixels (``image``).
TF_EXAMPLE_SIGNATURES = ("serving_tf_example", "score_tf_example")


def rest_request(images: np.ndarray, signature: str = "serving_default", labels: np.ndarray | None = None) -> dict:
    """A REST request of images for ``signature``: pixel rows, or for the tf.Example signatures
    the records IdxExampleGen writes (with ``labels``, else 0), base64-encoded as TF Serving's
    JSON carries bytes."""
    if signature in TF_EXAMPLE_SIGNATURES:
        import base64

        from components.idx_example_gen import serialize_examples  # the pipeline's own encoding

        labels = np.zeros(len(images), np.int64) if labels is None else labels
        records = serialize_examples(np.asarray(images), labels)
        return {"signature_name": signature, "instances": [{"b64": base64.b64encode(r).decode()} for r in records]}
    return {"signature_name": signature, "instances": [{"image": row.tolist()} for row in images]}


def check_label(label: str | None) -> str | None:
    if label is not None and not re.fullmatch(LABEL_PATTERN, label):
        raise rest_dialect.RequestError(f"a version label is letters, digits and '_' ({LABEL_PATTERN}), not {label!r}")
    return label


def predict_rest(server: str, model_name: str, request: dict, timeout: float = 30.0, label: str | None = None) -> dict:
    """TF Serving's REST predict, of the version ``label`` names if given. Whatever the server
    does (an error, HTML, another JSON shape, silence) ends in one line that names the URL."""
    where = f"/labels/{check_label(label)}" if label else ""
    url = f"{server.rstrip('/')}/v1/models/{model_name}{where}:predict"
    body = json.dumps(request).encode()
    http_request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(http_request, timeout=timeout) as response:
            text = response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as err:  # TF Serving explains itself in the body: {"error": ...}
        detail = err.read(2000).decode(errors="replace")
        try:
            detail = json.loads(detail).get("error", detail)
        except (ValueError, AttributeError):
            pass
        raise ValueError(f"TF Serving at {url} answered {err.code}: {' '.join(str(detail).split())[:300]}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            raise ConnectionError(f"TF Serving at {url} did not answer within {timeout:g} s") from None
        raise ConnectionError(
            f"cannot reach TF Serving at {server} ({reason}); start it (see README) or use --model-dir"
        ) from None
    if len(text) > MAX_RESPONSE_BYTES:
        raise ValueError(f"TF Serving at {url} answered more than {MAX_RESPONSE_BYTES >> 20} MB")
    try:
        answer = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError(f"TF Serving at {url} answered something that is not JSON: {text[:80]!r}") from None
    if not isinstance(answer, dict) or not ({"predictions", "outputs"} & set(answer)):
        shape = sorted(answer) if isinstance(answer, dict) else type(answer).__name__
        raise ValueError(f"TF Serving at {url} answered JSON without 'predictions' or 'outputs': {shape}")
    return answer


def predict_grpc(target: str, model_name: str, request: dict, timeout: float = 30.0, label: str | None = None) -> dict:
    """Sends a REST-format request over gRPC (to the version ``label`` names: ModelSpec's
    ``version_label``) and answers in REST format.

    The input dtypes come from the server (GetModelMetadata), as TF Serving's REST front end
    takes them from the model, so the request is converted by the same rules.
    """
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

    name = rest_dialect.signature_name(request)
    try:
        with grpc.insecure_channel(target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            metadata_request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            metadata_request.model_spec.name = model_name
            if check_label(label):
                metadata_request.model_spec.version_label = label
            signatures = get_model_metadata_pb2.SignatureDefMap()
            stub.GetModelMetadata(metadata_request, timeout).metadata["signature_def"].Unpack(signatures)
            if name not in signatures.signature_def:
                raise rest_dialect.RequestError(_no_signature(name, signatures.signature_def))
            inputs = {k: tf.dtypes.as_dtype(v.dtype).name for k, v in signatures.signature_def[name].inputs.items()}
            tensors, row_format = rest_dialect.parse_request(request, inputs)
            grpc_request = predict_pb2.PredictRequest()
            grpc_request.model_spec.name = model_name
            grpc_request.model_spec.signature_name = name
            if label:
                grpc_request.model_spec.version_label = label
            for key, value in tensors.items():
                grpc_request.inputs[key].CopyFrom(tf.make_tensor_proto(value, dtype=inputs[key]))
            answer = stub.Predict(grpc_request, timeout)
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.UNAVAILABLE:
            raise ConnectionError(f"cannot reach TF Serving at {target} ({err.details()})") from None
        answer = model_error(err.details() or "")
        raise rest_dialect.RequestError(f"TF Serving at {target} answered {err.code().name}: {answer}") from None
    outputs = {key: tf.make_ndarray(proto) for key, proto in answer.outputs.items()}
    return rest_dialect.response(outputs, row_format)


def _no_signature(name: str, signatures) -> str:
    return f"the model has no signature {name!r}; it has {', '.join(sorted(signatures))}"


def predict_in_process(model_dir: str, request: dict, label: str | None = None) -> dict:
    """Answers a TF Serving REST request from the SavedModel on disk, as TF Serving would: the
    same request rules, the same response format, the version a label names (models.config),
    and a model error as one line."""
    import tensorflow as tf

    name = rest_dialect.signature_name(request)
    model = _loaded(latest_version_dir(model_dir, check_label(label)))
    if name not in model.signatures:
        raise rest_dialect.RequestError(_no_signature(name, model.signatures))
    signature = model.signatures[name]
    specs = signature.structured_input_signature[1]
    tensors, row_format = rest_dialect.parse_request(request, {k: spec.dtype.name for k, spec in specs.items()})
    for key, value in tensors.items():  # a loaded signature checks no shapes; TF Serving's feed does
        wanted = specs[key].shape
        if wanted.rank is not None and value.ndim != wanted.rank:
            dims = ", ".join("N" if d is None else str(d) for d in wanted.as_list())
            raise rest_dialect.RequestError(f"{key} must be [{dims}], got [{', '.join(map(str, value.shape))}]")
    try:
        outputs = signature(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in tensors.items()})
    except (tf.errors.InvalidArgumentError, tf.errors.ResourceExhaustedError) as err:
        raise rest_dialect.RequestError(model_error(err.message)) from None
    except UnicodeDecodeError:  # TF's parse error quotes the input, and Python cannot decode binary bytes
        raise rest_dialect.RequestError(f"signature {name!r}: could not parse the input as tf.Examples") from None
    return rest_dialect.response({k: v.numpy() for k, v in outputs.items()}, row_format)


@functools.lru_cache(maxsize=2)
def _loaded(version_dir: str):
    """A SavedModel loaded once per process: a version directory never changes once published
    (components/serving_layout.py), so a server answering many requests loads it once."""
    import tensorflow as tf

    return tf.saved_model.load(version_dir)


def model_error(message: str) -> str:
    """The one line of a TensorFlow error that says what was wrong with the request: the text of
    a failed assertion, or the op's own message, without graph and node details."""
    for line in message.splitlines():
        line = line.strip()
        if not line or line.startswith(("Graph execution error", "Detected at node", "<stack traces", "[[")):
            continue
        if line.startswith("assertion failed: ["):
            return line[len("assertion failed: [") :].split("]", 1)[0].rstrip(". ")
        return line.split(" [Op:", 1)[0].split("\t [[", 1)[0][:300]
    return message[:300]
