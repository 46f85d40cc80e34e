"""Serving the pushed model with TF Serving: its config, the docker line, and a client.

The client sends TF Serving's own request formats, over REST (``{"signature_name": ...,
"instances": [...]}`` or ``{"inputs": {...}}``) or gRPC (tensorflow-serving-api's
PredictionService), or answers the same REST request in-process from the pushed SavedModel
(``--model-dir``), so what works against the files works against the server.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import numpy as np

REST_PORT, GRPC_PORT = 8501, 8500


def models_config(model_name: str) -> str:
    """tensorflow_model_server's --model_config_file, for the serving root mounted at /models."""
    return (
        "model_config_list {\n"
        "  config {\n"
        f'    name: "{model_name}"\n'
        f'    base_path: "/models/{model_name}"\n'
        '    model_platform: "tensorflow"\n'
        "  }\n"
        "}\n"
    )


def write_models_config(serving_root: str, model_name: str) -> str:
    path = os.path.join(serving_root, "models.config")
    os.makedirs(serving_root, exist_ok=True)
    with open(path, "w") as f:
        f.write(models_config(model_name))
    return path


def docker_command(serving_root: str) -> str:
    return (
        f"docker run --rm -p {GRPC_PORT}:{GRPC_PORT} -p {REST_PORT}:{REST_PORT} "
        f"-v {serving_root}:/models tensorflow/serving --model_config_file=/models/models.config"
    )


def latest_version_dir(model_dir: str) -> str:
    """A SavedModel directory as given, or the version TF Serving serves from below it."""
    from components.serving_layout import SAVED_MODEL_FILE, served_version  # TFX's fileio: heavy

    if os.path.exists(os.path.join(model_dir, SAVED_MODEL_FILE)):
        return model_dir
    version = served_version(model_dir)
    if version is None:
        raise FileNotFoundError(f"{model_dir} holds no SavedModel and no numeric version directories")
    return os.path.join(model_dir, str(version))


def rest_request(images: np.ndarray, signature: str = "serving_default") -> dict:
    return {"signature_name": signature, "instances": [{"image": row.tolist()} for row in images]}


def predict_rest(server: str, model_name: str, request: dict, timeout: float = 30.0) -> dict:
    url = f"{server.rstrip('/')}/v1/models/{model_name}:predict"
    body = json.dumps(request).encode()
    http_request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(http_request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:  # TF Serving explains itself in the body: {"error": ...}
        raise ValueError(f"TF Serving at {url} answered {err.code}: {err.read().decode(errors='replace')}") from err
    except urllib.error.URLError as err:
        raise ConnectionError(
            f"cannot reach TF Serving at {server} ({err.reason}); start it (see README) or use --model-dir"
        ) from err


def predict_grpc(target: str, model_name: str, request: dict, timeout: float = 30.0) -> dict:
    """Sends the REST-shaped request over gRPC and returns a REST-shaped ("outputs") answer."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    grpc_request = predict_pb2.PredictRequest()
    grpc_request.model_spec.name = model_name
    grpc_request.model_spec.signature_name = request.get("signature_name", "serving_default")
    for name, value in _columns(request).items():
        grpc_request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    with grpc.insecure_channel(target) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(grpc_request, timeout)
    return {"outputs": {name: tf.make_ndarray(proto).tolist() for name, proto in response.outputs.items()}}


def _columns(request: dict) -> dict[str, np.ndarray]:
    """TF Serving's row ("instances") or columnar ("inputs") request as named arrays."""
    if "instances" in request:
        rows = request["instances"]
        if not rows or not isinstance(rows[0], dict):
            raise ValueError('"instances" must be a non-empty list of objects naming the inputs, e.g. {"image": [...]}')
        return {name: np.asarray([row[name] for row in rows]) for name in rows[0]}
    if "inputs" in request:
        return {name: np.asarray(value) for name, value in request["inputs"].items()}
    raise ValueError('a TF Serving request has "instances" (row format) or "inputs" (columnar format)')


def predict_in_process(model_dir: str, request: dict) -> dict:
    """Answers a TF Serving REST request from the SavedModel on disk, in TF Serving's response format."""
    import tensorflow as tf

    model = tf.saved_model.load(latest_version_dir(model_dir))
    name = request.get("signature_name", "serving_default")
    if name not in model.signatures:
        raise ValueError(f"no signature {name!r}; the model has {', '.join(sorted(model.signatures))}")
    signature = model.signatures[name]
    specs = signature.structured_input_signature[1]
    columns = _columns(request)
    if set(columns) != set(specs):
        raise ValueError(f"signature {name!r} takes inputs {sorted(specs)}, the request has {sorted(columns)}")
    outputs = signature(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in columns.items()})
    outputs = {k: v.numpy() for k, v in outputs.items()}
    if "inputs" in request:
        return {"outputs": {k: v.tolist() for k, v in outputs.items()}}
    count = len(next(iter(columns.values())))
    return {"predictions": [{k: v[i].tolist() for k, v in outputs.items()} for i in range(count)]}
