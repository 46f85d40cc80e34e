"""TF Serving's REST dialect: JSON requests to named arrays, named arrays to JSON responses.

The rules are tensorflow_serving/util/json_tensor.cc's (FillPredictRequestFromJson,
MakeJsonFromTensors), so that a request the in-process and gRPC clients accept is one TF Serving
accepts, and an answer looks like TF Serving's:

- a request is a JSON object with either ``instances`` (row format: a non-empty list, one item
  per example) or ``inputs`` (columnar format), never both;
- an item is an object naming every input, or, for a signature with one input, the bare value;
- binary strings are ``{"b64": "<base64>"}``; an integer input takes only integers (1.5 is
  refused, not truncated), a float input any number;
- the answer is ``{"predictions": [...]}`` (row) or ``{"outputs": ...}`` (columnar), each item
  an object of outputs, or the bare value when the signature has one output.

Pure Python and numpy: the CLI imports it without TensorFlow.
"""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np

_INTEGER = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
_FLOAT = {"float16", "half", "bfloat16", "float32", "float64", "double"}


class RequestError(ValueError):
    """A request TF Serving would refuse with 400 Bad Request; the message says why."""


def parse_request(request, inputs: dict[str, str]) -> tuple[dict[str, np.ndarray], bool]:
    """The named input arrays of a predict request, and whether it is in row format.

    ``inputs`` maps each of the signature's input names to its dtype name ("int64", "string"...).
    """
    if not isinstance(request, dict):
        raise RequestError(f"the request must be a JSON object, not a {_json_type(request)}")
    if "instances" in request and "inputs" in request:
        raise RequestError("the request has both 'instances' and 'inputs'; TF Serving takes exactly one of them")
    if "instances" in request:
        return _parse_rows(request["instances"], inputs), True
    if "inputs" in request:
        return _parse_columns(request["inputs"], inputs), False
    raise RequestError("the request has neither 'instances' (row format) nor 'inputs' (columnar format)")


def row_count(request) -> int:
    """How many examples a request carries (the first dimension), before any array is built."""
    if not isinstance(request, dict):
        return 0
    if isinstance(request.get("instances"), list):
        return len(request["instances"])
    columns = request.get("inputs")
    values = columns.values() if isinstance(columns, dict) else [columns]
    return max((len(v) for v in values if isinstance(v, list)), default=0)


def signature_name(request: dict) -> str:
    name = request.get("signature_name", "serving_default") if isinstance(request, dict) else "serving_default"
    if not isinstance(name, str):
        raise RequestError("'signature_name' must be a string")
    return name


def _parse_rows(rows, inputs: dict[str, str]) -> dict[str, np.ndarray]:
    if not isinstance(rows, list) or not rows:
        raise RequestError("'instances' must be a non-empty list")
    if not _is_named(rows[0]):
        if len(inputs) > 1:
            raise RequestError(f"'instances' is a plain list, but the signature takes {len(inputs)} named inputs")
        if any(_is_named(row) for row in rows):
            raise RequestError("'instances' mixes objects and plain values")
        [(name, dtype)] = inputs.items()
        return {name: _array(rows, dtype, name)}
    columns: dict[str, list] = {name: [] for name in inputs}
    for index, row in enumerate(rows):
        if not _is_named(row):
            raise RequestError(f"'instances' item {index} is not an object like the first one")
        unknown = sorted(set(row) - set(inputs))
        if unknown:
            raise RequestError(f"the signature has no input named {unknown[0]!r}; its inputs: {', '.join(inputs)}")
        missing = sorted(set(inputs) - set(row))
        if missing:
            raise RequestError(f"'instances' item {index} lacks the input {missing[0]!r}")
        for name in inputs:
            columns[name].append(row[name])
    return {name: _array(values, inputs[name], name) for name, values in columns.items()}


def _parse_columns(value, inputs: dict[str, str]) -> dict[str, np.ndarray]:
    if not _is_named(value):
        if len(inputs) > 1:
            raise RequestError(f"'inputs' is a plain value, but the signature takes {len(inputs)} named inputs")
        [(name, dtype)] = inputs.items()
        return {name: _array(value, dtype, name)}
    missing = [name for name in inputs if name not in value]
    if missing:
        raise RequestError(f"'inputs' lacks the input {missing[0]!r}; the signature takes {', '.join(inputs)}")
    return {name: _array(value[name], dtype, name) for name, dtype in inputs.items()}


def _is_named(value) -> bool:
    """An object of named inputs, as opposed to a value (a base64 object is a value)."""
    return isinstance(value, dict) and not _is_base64(value)


def _is_base64(value) -> bool:
    return isinstance(value, dict) and list(value) == ["b64"] and isinstance(value["b64"], str)


def _array(value, dtype: str, name: str) -> np.ndarray:
    """A nested JSON list as a dense array of ``dtype``, every leaf of the right JSON type."""
    if dtype == "string":
        try:
            cells = np.asarray(value, dtype=object)  # stops at objects, so {"b64": ...} stays one cell
        except ValueError:
            raise RequestError(f"input {name!r}: lists of different lengths at the same level") from None
        strings = np.empty(cells.shape, dtype=object)
        strings.reshape(-1)[:] = [_string(cell, name) for cell in cells.reshape(-1)]
        return strings
    family = "iu" if dtype in _INTEGER else "iuf" if dtype in _FLOAT else "b" if dtype == "bool" else None
    if family is None:
        raise RequestError(f"input {name!r}: this client does not send {dtype} tensors")
    try:
        array = np.asarray(value)
    except OverflowError:
        raise RequestError(f"input {name!r}: a value is out of range for {dtype}") from None
    except ValueError:  # numpy refuses ragged lists
        raise RequestError(f"input {name!r}: lists of different lengths at the same level") from None
    if array.size and array.dtype.kind not in family:
        leaves = _leaves(value)
        wrong = [leaf for leaf in leaves if not _fits(leaf, family)]
        if not wrong:  # integers past int64 make numpy fall back to objects, as ragged lists do
            huge = [leaf for leaf in leaves if isinstance(leaf, int) and not -(2**63) <= leaf < 2**64]
            if huge:
                raise RequestError(f"input {name!r}: JSON value {huge[0]} is out of range for {dtype}")
            raise RequestError(f"input {name!r}: lists of different lengths at the same level")
        raise RequestError(
            f"input {name!r}: JSON value {json.dumps(wrong[0])} ({_json_type(wrong[0])}) "
            f"is not of the expected type {dtype}"
        )
    if dtype in _INTEGER and array.size:
        limits = np.iinfo(dtype)
        if array.min() < limits.min or array.max() > limits.max:
            raise RequestError(f"input {name!r}: a value is out of range for {dtype}")
    return array.astype(dtype)


def _fits(leaf, family: str) -> bool:
    if isinstance(leaf, bool):
        return family == "b"
    return isinstance(leaf, int) and "i" in family or isinstance(leaf, float) and "f" in family


def _leaves(value) -> list:
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def _string(leaf, name: str) -> bytes:
    if isinstance(leaf, str):
        return leaf.encode()
    if _is_base64(leaf):
        try:
            return base64.b64decode(leaf["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(f"input {name!r}: {leaf['b64'][:40]!r} is not valid base64") from None
    raise RequestError(f'input {name!r}: JSON value {json.dumps(leaf)} is neither a string nor {{"b64": ...}}')


def _json_type(value) -> str:
    for kind, name in ((bool, "boolean"), (dict, "object"), (list, "list"), (str, "string"), (type(None), "null")):
        if isinstance(value, kind):
            return name
    return "number"


def response(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
    """TF Serving's answer: strings as text, or as {"b64": ...} for outputs named ``*_bytes``."""
    values = {name: _json_values(name, np.asarray(array)) for name, array in outputs.items()}
    single = len(values) == 1
    if not row_format:
        return {"outputs": next(iter(values.values())) if single else values}
    sizes = {len(v) for v in values.values()}
    if len(sizes) != 1:
        raise RequestError(f"the outputs have different batch sizes {sorted(sizes)}; use the 'inputs' format")
    [count] = sizes
    if single:
        return {"predictions": next(iter(values.values()))}
    return {"predictions": [{name: v[i] for name, v in values.items()} for i in range(count)]}


def _json_values(name: str, array: np.ndarray):
    if array.dtype.kind in "OSU":
        as_bytes = name.endswith("_bytes")
        encode = (
            (lambda b: {"b64": base64.b64encode(b).decode()}) if as_bytes else (lambda b: b.decode(errors="replace"))
        )
        return np.vectorize(encode, otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()
