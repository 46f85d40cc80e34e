"""TF Serving's two front ends over the pushed model, for testing the clients' REST and gRPC
paths (no TF Serving binary here). Test infrastructure, never product: each answers from the
SavedModel on disk, routes a request by model spec the way TF Serving does (a version label, as
models.config names it; else the newest loaded version: pipeline/serving.py:latest_version_dir),
and refuses what TF Serving refuses with its status."""

from __future__ import annotations

import functools
import json
import re

from pipeline import serving
from pipeline.rest_dialect import RequestError


class ModelServer:
    """A gRPC PredictionService: GetModelMetadata answers the SignatureDefs from saved_model.pb,
    Predict runs the signature and answers InvalidArgument as TF Serving does; ``version_label``
    picks the version. ``model_dir``: one SavedModel, or a model directory with versions."""

    def __init__(self, model_dir: str):
        import grpc
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2
        from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

        @functools.lru_cache(maxsize=4)
        def load(version_dir: str):
            with open(f"{version_dir}/saved_model.pb", "rb") as f:
                signature_defs = saved_model_pb2.SavedModel.FromString(f.read()).meta_graphs[0].signature_def
            return signature_defs, tf.saved_model.load(version_dir)

        def resolve(model_spec, context):
            try:
                return load(serving.latest_version_dir(model_dir, model_spec.version_label or None))
            except RequestError as err:  # TF Serving: NOT_FOUND for an unknown label
                context.abort(grpc.StatusCode.NOT_FOUND, str(err))

        class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
            def GetModelMetadata(self, request, context):  # noqa: N802
                signature_defs, _ = resolve(request.model_spec, context)
                defs = get_model_metadata_pb2.SignatureDefMap()
                for key, value in signature_defs.items():
                    defs.signature_def[key].CopyFrom(value)
                response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=request.model_spec)
                response.metadata["signature_def"].Pack(defs)
                return response

            def Predict(self, request, context):  # noqa: N802
                _, model = resolve(request.model_spec, context)
                signature = model.signatures[request.model_spec.signature_name or "serving_default"]
                try:
                    outputs = signature(**{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
                except tf.errors.InvalidArgumentError as err:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, err.message)
                response = predict_pb2.PredictResponse()
                for key, value in outputs.items():
                    response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
                return response

        import concurrent.futures

        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), self.server)
        self.target = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()


class RestServer:
    """TF Serving's REST predict API: ``POST /v1/models/<name>[/labels/<label>]:predict``
    answered by the in-process path, a bad request as TF Serving's ``{"error": ...}`` with
    status 400."""

    def __init__(self, model_dir: str, model_name: str = "vae-mnist"):
        import http.server
        import threading

        path = re.compile(rf"/v1/models/{re.escape(model_name)}(?:/labels/({serving.LABEL_PATTERN}))?:predict")

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                try:
                    route = path.fullmatch(self.path)
                    if not route:
                        raise RequestError(f"Servable not found for request: {self.path}")
                    status, answer = 200, serving.predict_in_process(model_dir, body, label=route.group(1))
                except RequestError as err:
                    status, answer = 400, {"error": str(err)}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
