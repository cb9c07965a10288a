"""The Open Inference Protocol's OpenAPI description holds for model_server, found by fuzzing.

schemathesis generates requests from ``tests/data/oip/open_inference_rest.yaml`` (the protocol's
OpenAPI document, adapted as its header says) — valid ones, invalid ones, and methods the
document does not list — and sends them to real model_server processes on 127.0.0.1: the
random-forest bundle (one array input) and the DataFrame pipeline (one input per column). Every
response must be no 5xx, have a documented status code and content type, match its documented
schema (error bodies included), reject invalid requests with a 4xx, and answer an undocumented
method with 405 and an ``Allow`` header. Bounded: at most 100 generated requests per operation
and phase, each answered within 2 s.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.fixtures.serving import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SPEC = Path(__file__).resolve().parents[1] / "data" / "oip" / "open_inference_rest.yaml"
# Hypothesis keeps a .hypothesis directory where it runs (schemathesis touches it while loading
# the schema); keep it out of the working tree.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "mlshift-tests-hypothesis")
BOUNDS = settings(
    max_examples=100,
    deadline=2000,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# The protocol lets a server refuse a request its model cannot take ("A failed inference request
# must be indicated by an HTTP error status (typically 400)"), and the document cannot say what
# one model takes (input names, shapes), so schema-valid requests may get a 400: that check is
# off; every other default check (no 5xx, status codes, content types, response schemas,
# invalid requests refused, 405 with Allow) runs.
EXCLUDED = [positive_data_acceptance]


def _pinned(name: str, version: str, inputs: list[dict[str, Any]]) -> Any:
    """The OIP document with the model name and version pinned to a served model's.

    Other names and versions still come up, as invalid values, and must get a 404. ``inputs``
    is a request the model takes: the examples phase sends it (asking for both outputs, one
    of them as binary data) and later phases mutate it, so successful responses are checked too.
    """
    raw = yaml.safe_load(SPEC.read_text())
    parameters = raw["components"]["parameters"]
    parameters["model_name"]["schema"]["enum"] = [name]
    parameters["model_version"]["schema"]["enum"] = [version]
    outputs = [{"name": "predict"}, {"name": "predict_proba"}]
    binary = [{"name": "predict", "parameters": {"binary_data": True}}]
    examples = {
        "both": {"value": {"id": "1", "inputs": inputs, "outputs": outputs}},
        "default": {"value": {"inputs": inputs}},
        "binary": {"value": {"inputs": inputs, "outputs": binary}},
        "proba": {"value": {"inputs": inputs, "parameters": {"method": "predict_proba"}}},
    }
    raw["components"]["requestBodies"]["inference"]["content"]["application/json"]["examples"] = (
        examples
    )
    return schemathesis.openapi.from_dict(raw)


# Loaded at import (schemathesis' fixture-based lazy schemas do not run under pytest 9); the
# server's URL is given per call.
rf_schema = _pinned(
    "rf", "v1", [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [0.5] * 8}]
)
churn_schema = _pinned(
    "churn",
    "v2-canary",
    [
        {"name": "tenure", "shape": [1], "datatype": "INT64", "data": [12]},
        {"name": "spend", "shape": [1], "datatype": "FP64", "data": [49.5]},
        {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["pro"]},
    ],
)


@rf_schema.parametrize()
@BOUNDS
def test_array_model_conforms(case: Any, rf_server: ServerProcess) -> None:
    case.call_and_validate(base_url=rf_server.url, timeout=10, excluded_checks=EXCLUDED)


@churn_schema.parametrize()
@BOUNDS
def test_dataframe_model_conforms(case: Any, frame_server: ServerProcess) -> None:
    case.call_and_validate(base_url=frame_server.url, timeout=10, excluded_checks=EXCLUDED)
