"""Contract tests from Azure's published OpenAPI files (a copy beside the project, see
../shared/reference/openapi/README.md): schemathesis generates requests for every operation the
simulator implements, and each answer must not be a 5xx, must have a documented status and
content type, and must fit the documented schema.

Where Azure's real behaviour differs from its spec, the spec is adjusted below, each change
with its reason (Azure's answers as they arrive, not the spec, are what clients meet). The
number of examples is bounded and fixed (derandomized) so the suite stays fast and repeatable;
`make fuzz` raises the number.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# What every answer must do. Not the negative-data checks: Azure, as OpenAI, takes null for an
# optional field as if it were absent, where the spec's types would refuse it.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

SPECS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "openapi"
SPEC_2024_10_21 = SPECS / "azure-openai-2024-10-21.json"
SPEC_V1 = SPECS / "azure-openai-v1.json"
EXAMPLES = int(os.environ.get("CONTRACT_EXAMPLES", "8"))
IMPLEMENTED = r"/deployments/\{deployment-id\}/(chat/completions|completions|embeddings)$"
IMPLEMENTED_V1 = r"^/(chat/completions|embeddings|responses|models)$"
FILTERED = r"/deployments/\{deployment-id\}/(chat/completions|completions)$"  # what the content filter judges
FILTERED_V1 = r"^/(chat/completions|responses)$"
# Verdicts the content filter is forced to (a blocked prompt: 400; a blocked answer: cut, 200).
# Checked by `make fuzz` (CONTRACT_FILTERED=1; the e2e tests check these bodies in `make test`):
# building the chat schema's strategies costs ~6 s a run, whatever the number of examples.
FILTERED_RUNS = os.environ.get("CONTRACT_FILTERED") == "1"
VERDICTS = {"prompt": "prompt=violence:high", "answer": "completion=hate"}


def azure_as_it_answers(spec: dict) -> dict:
    """The spec, changed where Azure's real answers differ (one reason each)."""
    spec = copy.deepcopy(spec)
    error = spec["components"]["schemas"]["error"]["properties"]
    # Azure's validation errors carry "param": null and "code": null (azure-wire.md).
    error["param"] = {"type": "string", "nullable": True}
    # Its content-filter 400 says "type": null (azure-wire.md, section 11).
    error["type"] = {"type": "string", "nullable": True}
    spec["components"]["schemas"]["errorBase"]["properties"]["code"] = {"type": "string", "nullable": True}
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            if isinstance(operation, dict) and "responses" in operation:
                # Every operation refuses with Azure's error body (400, 401, 404, 413, 429), though
                # the embeddings operation documents only its 200.
                operation["responses"].setdefault(
                    "default",
                    {
                        "description": "Azure's error",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/errorResponse"}}},
                    },
                )
                # With "stream": true, Azure answers server-sent events (the spec lists JSON only):
                # each event a `data:` line (its JSON is checked by the streaming tests).
                if not path.endswith("completions"):
                    continue
                event = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}
                operation["responses"]["200"]["content"]["text/event-stream"] = {"schema": event}
    return spec


def v1_as_it_answers(spec: dict) -> dict:
    """The v1 spec, changed where Azure's real answers differ."""
    spec = copy.deepcopy(spec)
    # Validation errors say "type": "invalid_request_error", as OpenAI's do (the spec allows
    # only "error").
    error = spec["components"]["schemas"]["AzureErrorResponse"]["properties"]["error"]["properties"]
    error["type"] = {"type": "string", "nullable": True}  # null in the content-filter 400
    # And carry "param": null and "code": null, as in the 2024-10-21 API.
    error["param"] = {"type": "string", "nullable": True}
    error["code"] = {"type": "string", "nullable": True}
    return spec


if SPEC_2024_10_21.is_file():
    spec = azure_as_it_answers(json.loads(SPEC_2024_10_21.read_text()))
    # Each its own schema: include() on an included schema widens it rather than narrowing it.
    schema = schemathesis.openapi.from_dict(spec).include(path_regex=IMPLEMENTED)
    filtered = schemathesis.openapi.from_dict(spec).include(path_regex=FILTERED)

    @schema.parametrize()
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def test_every_answer_fits_azures_contract(case, simulator):
        case.headers = {**(case.headers or {}), "api-key": simulator.key}
        case.query = {**(case.query or {}), "api-version": "2024-10-21"}
        case.call_and_validate(base_url=simulator.url + "/openai", checks=CHECKS)

    @filtered.parametrize()
    @settings(
        max_examples=max(1, EXAMPLES // 15), deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    @pytest.mark.parametrize("verdict", VERDICTS)
    def test_filtered_answers_fit_azures_contract(case, simulator, verdict):
        if not FILTERED_RUNS:
            pytest.skip("content-filter contract runs are part of make fuzz")
        case.headers = {
            **(case.headers or {}),
            "api-key": simulator.key,
            "x-ms-simulator-content-filter": VERDICTS[verdict],
        }
        case.query = {**(case.query or {}), "api-version": "2024-10-21"}
        case.call_and_validate(base_url=simulator.url + "/openai", checks=CHECKS)
else:

    def test_every_answer_fits_azures_contract():
        pytest.skip(f"Azure's OpenAPI files are not beside the project ({SPECS})")


if SPEC_V1.is_file():
    spec_v1 = v1_as_it_answers(json.loads(SPEC_V1.read_text()))
    schema_v1 = schemathesis.openapi.from_dict(spec_v1).include(path_regex=IMPLEMENTED_V1)
    filtered_v1 = schemathesis.openapi.from_dict(spec_v1).include(path_regex=FILTERED_V1)

    @schema_v1.parametrize()
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def test_every_v1_answer_fits_azures_contract(case, simulator):
        case.headers = {**(case.headers or {}), "api-key": simulator.key}
        case.call_and_validate(base_url=simulator.url + "/openai/v1", checks=CHECKS)

    @filtered_v1.parametrize()
    @settings(
        max_examples=max(1, EXAMPLES // 15), deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    @pytest.mark.parametrize("verdict", VERDICTS)
    def test_filtered_v1_answers_fit_azures_contract(case, simulator, verdict):
        if not FILTERED_RUNS:
            pytest.skip("content-filter contract runs are part of make fuzz")
        case.headers = {
            **(case.headers or {}),
            "api-key": simulator.key,
            "x-ms-simulator-content-filter": VERDICTS[verdict],
        }
        case.call_and_validate(base_url=simulator.url + "/openai/v1", checks=CHECKS)
else:

    def test_every_v1_answer_fits_azures_contract():
        pytest.skip(f"Azure's OpenAPI files are not beside the project ({SPECS})")
