"""Our Kubernetes manifests checked against Kubernetes' own schemas, as ``kubectl apply
--validate=strict`` would: an unknown field, a wrong type or a missing required field is an error.

- Core kinds (Deployment, Service): the kubernetes client's models (kubernetes==26.1.0, in both
  locks through kfp) are generated from Kubernetes' OpenAPI spec; their ``openapi_types`` give
  every field's type, and constructing one checks the required fields.
- KServe's InferenceService: the ``openAPIV3Schema`` of its CRD (kserve/kserve
  config/crd/full/serving.kserve.io_inferenceservices.yaml at aaac4e294dae, v1beta1), kept in
  tests/schemas/ without its descriptions (636 kB of JSON, 22 kB gzipped), checked by the subset
  of OpenAPI v3 a structural CRD schema uses.
"""

from __future__ import annotations

import gzip
import json
import os
import re

SCHEMAS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemas")
INFERENCE_SERVICE_SCHEMA = os.path.join(SCHEMAS, "kserve-inferenceservice-v1beta1.json.gz")
_QUANTITIES = ("limits", "requests")  # int-or-string values (resource.Quantity)


def check_core(document: dict, partial: bool = False) -> None:
    """Raises ValueError naming the path of the first field Kubernetes would refuse. ``partial``:
    a strategic merge patch, whose required fields may be left out."""
    from kubernetes import client

    kind = f"V1{document['kind']}" if document.get("apiVersion") in ("v1", "apps/v1") else None
    if kind is None or not hasattr(client.models, kind):
        raise ValueError(f"{document.get('apiVersion')}/{document.get('kind')}: not a core kind")
    configuration = client.Configuration()
    configuration.client_side_validation = not partial
    _model(document, getattr(client.models, kind), document["kind"], configuration)


def _model(value, cls, path: str, configuration):
    if not isinstance(value, dict):
        raise ValueError(f"{path}: must be an object, not {type(value).__name__}")
    fields = {json_name: name for name, json_name in cls.attribute_map.items()}
    kwargs = {}
    for key, item in value.items():
        if key not in fields:
            raise ValueError(f"{path}.{key}: unknown field (the {cls.__name__[2:]} schema has no such field)")
        name = fields[key]
        kwargs[name] = _typed(item, cls.openapi_types[name], f"{path}.{key}", configuration, key)
    try:
        return cls(**kwargs, local_vars_configuration=configuration)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def _typed(value, kind: str, path: str, configuration, key: str):
    from kubernetes import client

    if kind.startswith("list["):
        if not isinstance(value, list):
            raise ValueError(f"{path}: must be a list")
        return [_typed(v, kind[5:-1], f"{path}[{i}]", configuration, key) for i, v in enumerate(value)]
    if kind.startswith("dict("):
        if not isinstance(value, dict):
            raise ValueError(f"{path}: must be a mapping")
        inner = kind[kind.index(",") + 1 : -1].strip()
        return {k: _typed(v, inner, f"{path}.{k}", configuration, key) for k, v in value.items()}
    if kind == "str":
        if isinstance(value, str) or (key in _QUANTITIES and isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise ValueError(f"{path}: must be a string, not {value!r}")
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{path}: must be an integer, not {value!r}")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError(f"{path}: must be true or false, not {value!r}")
    if kind == "object":  # int-or-string (a port) or free-form
        return value
    return _model(value, getattr(client.models, kind), path, configuration)


def inference_service_schema() -> dict:
    with gzip.open(INFERENCE_SERVICE_SCHEMA, "rt") as f:
        return json.load(f)


def check_openapi(value, schema: dict, path: str = "") -> None:
    """Raises ValueError at the first part of ``value`` the structural schema refuses."""
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            raise ValueError(f"{path}: must be an integer or a string")
        return
    kind = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int, "number": (int, float)}
    if kind and (not isinstance(value, types[kind]) or (kind in ("integer", "number") and isinstance(value, bool))):
        raise ValueError(f"{path}: must be of type {kind}, not {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise ValueError(f"{path}: must be one of {schema['enum']}")
    if kind == "string":
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise ValueError(f"{path}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", len(value)):
            raise ValueError(f"{path}: length {len(value)} is out of bounds")
    if kind == "array":
        if len(value) < schema.get("minItems", 0):
            raise ValueError(f"{path}: needs at least {schema['minItems']} items")
        for i, item in enumerate(value):
            check_openapi(item, schema.get("items", {}), f"{path}[{i}]")
    if kind == "object":
        for name in schema.get("required", []):
            if name not in value:
                raise ValueError(f"{path}.{name}: required")
        properties = schema.get("properties")
        for key, item in value.items():
            if properties is not None and key in properties:
                check_openapi(item, properties[key], f"{path}.{key}")
            elif "additionalProperties" in schema:
                check_openapi(item, schema["additionalProperties"], f"{path}.{key}")
            elif properties is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                raise ValueError(f"{path}.{key}: unknown field")
