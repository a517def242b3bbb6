"""Spillover of a provisioned deployment's server-side failures, through the whole stack in
process: Azure spills any non-200 answer of the provisioned deployment, so a declared 503 or
500 on it is answered by its spillover deployment, with the spillover headers; without a
spillover deployment the failure stands."""

from __future__ import annotations

import json

import pytest
from helpers import HELLO, assert_azure_error, deployment_path, only

PTU = {"model": "gpt-4o", "sku": "ProvisionedManaged", "ptu": 1}
DEPLOYMENTS = {
    "ptu-failing": {**PTU, "spillover": "paygo", "faults": only(kind="503", retryAfter=1)},
    "ptu-broken": {**PTU, "faults": only(kind="500")},
    "ptu-too-long": {**PTU, "spillover": "paygo", "faults": only(kind="contextLength")},
    "paygo": {"model": "gpt-4o", "tokensPerMinute": 1_000_000},
}


@pytest.fixture
def stack(stack_factory, tmp_path):
    path = tmp_path / "deployments.json"
    path.write_text(json.dumps(DEPLOYMENTS))
    return stack_factory({"OPENAI_DEPLOYMENT_CONFIG_PATH": str(path)})


def test_a_failing_provisioned_deployment_spills_to_its_standard_one(stack):
    r = stack.post(deployment_path("ptu-failing"), json={"messages": HELLO, "max_tokens": 5})
    assert r.status_code == 200, r.text
    assert r.headers["x-ms-deployment-name"] == "paygo"
    assert r.headers["x-ms-spillover-from-ptu-failing"] == "ptu-failing"
    assert "x-ms-spillover-error" not in r.headers
    assert '"spilledOver": {"ptu-failing": {"paygo": 1}}' in json.dumps(stack.get("/++/limits").json())


def test_the_header_names_a_spillover_deployment_for_a_failure_too(stack):
    r = stack.post(
        deployment_path("ptu-broken"),
        json={"messages": HELLO, "max_tokens": 5},
        headers={"x-ms-spillover-deployment": "paygo"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-ms-deployment-name"] == "paygo"


def test_without_a_spillover_deployment_the_failure_stands(stack):
    assert_azure_error(stack.post(deployment_path("ptu-broken"), json={"messages": HELLO, "max_tokens": 5}), 500)


def test_a_request_too_long_for_the_model_does_not_spill(stack):
    r = stack.post(deployment_path("ptu-too-long"), json={"messages": HELLO, "max_tokens": 5})
    assert r.status_code == 400 and "x-ms-deployment-name" not in r.headers
