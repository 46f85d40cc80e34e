"""The predict client speaks TF Serving's REST dialect exactly (tensorflow_serving/util/
json_tensor.cc), in-process from the pushed model: the request shapes TF Serving accepts, the
ones it refuses, and one line, never a traceback, for a bad request."""

import base64
import json

import numpy as np
import pytest

from pipeline import cli, serving
from pipeline.rest_dialect import RequestError
from tests.helpers import DATA_ROOT, read_idx_dataset
from tests.serving_harness import ModelServer, RestServer


@pytest.fixture(scope="module")
def images(small_mnist) -> np.ndarray:
    return read_idx_dataset(small_mnist)["eval"][0][:3].reshape(3, 784).astype(np.int64)


def example_bytes(image: np.ndarray) -> bytes:
    import tensorflow as tf

    feature = {"image": tf.train.Feature(int64_list=tf.train.Int64List(value=image))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_every_request_shape_tf_serving_accepts(small_run, images):
    model = small_run.serving_model_dir
    named = serving.predict_in_process(model, {"instances": [{"image": row.tolist()} for row in images]})
    bare = serving.predict_in_process(model, {"instances": images.tolist()})  # one input: bare rows
    assert bare == named and len(named["predictions"]) == 3
    columnar = serving.predict_in_process(model, {"inputs": images.tolist()})["outputs"]
    np.testing.assert_allclose(columnar["neg_elbo"], [p["neg_elbo"] for p in named["predictions"]], rtol=1e-6)
    # Binary strings travel as {"b64": ...}.
    examples = [{"b64": base64.b64encode(example_bytes(row)).decode()} for row in images]
    scored = serving.predict_in_process(model, {"signature_name": "score_tf_example", "instances": examples})
    np.testing.assert_allclose([p["neg_elbo"] for p in scored["predictions"]], columnar["neg_elbo"], rtol=1e-5)
    # One output: TF Serving answers with the bare value, not an object.
    generated = serving.predict_in_process(model, {"signature_name": "generate", "inputs": {"count": 2, "seed": 1}})
    assert np.asarray(generated["outputs"]).shape == (2, 784)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ([{"image": [0] * 784}], "the request must be a JSON object, not a list"),
        ({"instances": [[0] * 784], "inputs": [[0] * 784]}, "has both 'instances' and 'inputs'"),
        ({"instances": [[12.5] * 784]}, r"JSON value 12.5 \(number\) is not of the expected type int64"),
        ({"instances": [{"pixels": [0] * 784}]}, "the signature has no input named 'pixels'; its inputs: image"),
        ({"signature_name": "generate", "inputs": {"count": 3}}, "'inputs' lacks the input 'seed'"),
        ({"signature_name": "generate", "inputs": {"count": 0, "seed": 1}}, "^count must be positive$"),
        ({"signature_name": "generate", "inputs": {"count": 10**8, "seed": 1}}, "^count must be at most 10000$"),
        ({"signature_name": "nope", "instances": [1]}, "the model has no signature 'nope'"),
        ({"signature_name": "serving_tf_example", "instances": ["garbage"]}, "Could not parse example input"),
        (
            {
                "signature_name": "serving_tf_example",
                "instances": [{"b64": base64.b64encode(b"\xff\xfe\x80").decode()}],
            },
            "could not parse the input as tf.Examples",
        ),
        ({"instances": [{"b64": "!!"}]}, "is not valid base64|not of the expected type"),
    ],
)
def test_requests_tf_serving_refuses_are_refused_in_one_line(small_run, request_, message):
    with pytest.raises(RequestError, match=message) as refused:
        serving.predict_in_process(small_run.serving_model_dir, request_)
    assert "\n" not in str(refused.value)


def test_the_cli_prints_one_line_for_bad_requests(small_run, tmp_path, capsys):
    broken = tmp_path / "request.json"
    broken.write_text('{"instances": [')
    assert cli.main(["predict", "--model-dir", small_run.serving_model_dir, "--request", str(broken)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"vae-mnist: error: {broken} is not a JSON request:")
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps({"signature_name": "generate", "inputs": {"count": 100_000_000, "seed": -1}}))
    assert cli.main(["predict", "--model-dir", small_run.serving_model_dir, "--request", str(huge)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["vae-mnist: error: count must be at most 10000"]
    with pytest.raises(SystemExit) as stopped:
        cli.main(["predict", "--model-dir", small_run.serving_model_dir, "--count", "0"])
    assert stopped.value.code == 2 and "--count: must be at least 1, got 0" in capsys.readouterr().err


def test_the_docker_line_survives_spaces_in_paths():
    import shlex

    line = serving.docker_command("/data/my models/serving")
    assert "/data/my models/serving:/models" in shlex.split(line)
    # TF Serving re-reads models.config, so a pin (vae-mnist serving pin) takes effect without a restart.
    assert {"--model_config_file=/models/models.config", "--model_config_file_poll_wait_seconds=30"} <= set(
        shlex.split(line)
    )


def test_grpc_requests_follow_the_same_rules(small_run, images):
    from components import serving_layout

    model_dir = small_run.serving_model_dir
    server = ModelServer(f"{model_dir}/{serving_layout.served_version(model_dir)}")
    try:
        examples = [{"b64": base64.b64encode(example_bytes(row)).decode()} for row in images]
        request = {"signature_name": "score_tf_example", "instances": examples}
        over_grpc = serving.predict_grpc(server.target, "vae-mnist", request)["predictions"]
        in_process = serving.predict_in_process(model_dir, request)["predictions"]
        assert len(over_grpc) == 3 and set(over_grpc[0]) == {
            "neg_elbo",
            "reconstruction_error",
            "kl",
            "pixel_mse",
            "anomaly_score",
            "anomaly_p_value",
            "is_anomaly",
        }
        for key in over_grpc[0]:
            np.testing.assert_allclose([p[key] for p in over_grpc], [p[key] for p in in_process], rtol=1e-6)
        generated = serving.predict_grpc(
            server.target, "vae-mnist", {"signature_name": "generate", "inputs": {"count": 2, "seed": 3}}
        )
        assert np.asarray(generated["outputs"]).shape == (2, 784)
        with pytest.raises(RequestError, match="answered INVALID_ARGUMENT: count must be at most 10000$"):
            serving.predict_grpc(
                server.target, "vae-mnist", {"signature_name": "generate", "inputs": {"count": 10**8, "seed": 3}}
            )
        with pytest.raises(RequestError, match=r"JSON value 0.5 \(number\) is not of the expected type int64"):
            serving.predict_grpc(server.target, "vae-mnist", {"instances": [[0.5] * 784]})
    finally:
        server.server.stop(None)


@pytest.fixture(scope="module")
def predict_targets(small_run):
    """How `vae-mnist predict` reaches the model, in each of its three modes."""
    from components import serving_layout

    model_dir = small_run.serving_model_dir
    grpc_server = ModelServer(f"{model_dir}/{serving_layout.served_version(model_dir)}")
    rest_server = RestServer(model_dir)
    yield {
        "in-process": ["--model-dir", model_dir],
        "REST": ["--server", rest_server.url],
        "gRPC": ["--grpc", grpc_server.target],
    }
    grpc_server.server.stop(None)
    rest_server.server.shutdown()


@pytest.mark.parametrize("signature", ["serving_default", "serving_tf_example", "score_tf_example"])
def test_predict_prints_the_answer_in_every_mode(predict_targets, signature, capsys):
    """The README's `vae-mnist predict`, brief and --full, in-process, over REST and over gRPC."""
    scores = {"neg_elbo", "reconstruction_error", "kl", "pixel_mse", "anomaly_score", "anomaly_p_value", "is_anomaly"}
    expected = scores if signature == "score_tf_example" else scores | {"z_mean", "z_log_var", "reconstruction"}
    answers = {}
    for mode, target in predict_targets.items():
        command = ["predict", *target, "--signature", signature, "--count", "2", "--data-root", DATA_ROOT]
        assert cli.main(command) == 0, mode
        brief = capsys.readouterr().out.strip().splitlines()
        rows = [json.loads(line) for line in brief]
        assert len(rows) == 2 and set(rows[0]) == expected, mode
        assert isinstance(rows[0]["is_anomaly"], bool) and isinstance(rows[0]["neg_elbo"], float)
        if "reconstruction" in expected:
            assert rows[0]["reconstruction"] == "<784 values>"
        assert cli.main([*command, "--full"]) == 0, mode
        full = json.loads(capsys.readouterr().out)
        assert len(full["predictions"]) == 2 and set(full["predictions"][0]) == expected
        answers[mode] = brief
    assert answers["REST"] == answers["in-process"] == answers["gRPC"]  # one model, one answer


@pytest.mark.parametrize(
    ("signature", "request_", "expected"),
    [
        ("encode", lambda images, examples: {"instances": images[:2].tolist()}, {"z_mean", "z_log_var"}),
        ("decode", lambda images, examples: {"instances": [[0.5, -0.5], [0.0, 1.0]]}, None),  # one output: bare
        ("generate", lambda images, examples: {"inputs": {"count": 2, "seed": 7}}, None),
        ("transform_features", lambda images, examples: {"instances": examples[:2]}, {"pixels", "label"}),
    ],
)
def test_predict_answers_every_other_signature_in_every_mode(
    predict_targets, images, tmp_path, signature, request_, expected, capsys
):
    """The signatures that take no test images, through --request: brief and --full, each mode."""
    from components.idx_example_gen import serialize_examples  # the pipeline's records, labels too

    records = serialize_examples(images, np.zeros(len(images), np.int64))
    examples = [{"b64": base64.b64encode(record).decode()} for record in records]
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"signature_name": signature, **request_(images, examples)}))
    answers = {}
    for mode, target in predict_targets.items():
        assert cli.main(["predict", *target, "--request", str(request)]) == 0, mode
        brief = capsys.readouterr().out.strip().splitlines()
        rows = [json.loads(line) for line in brief]
        assert rows and (set(rows[0]) == expected if expected else isinstance(rows[0], str | list)), (mode, rows)
        assert cli.main(["predict", *target, "--request", str(request), "--full"]) == 0, mode
        full = json.loads(capsys.readouterr().out)
        assert set(full) & {"predictions", "outputs"}, (mode, full)
        answers[mode] = brief
    assert answers["REST"] == answers["in-process"] == answers["gRPC"]
