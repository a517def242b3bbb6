"""Spillover: a provisioned deployment's overflow served by a standard deployment.

Azure sends a request its provisioned deployment would refuse with a 429 to the standard
deployment named by the provisioned deployment's `spilloverDeploymentName` or, when that is
unset, by the request's `x-ms-spillover-deployment` header. The standard deployment must be in
the same resource, run the same model and have the same data-processing level (global with
global, data zone with data zone). The answer then names both deployments in its headers; when
the standard deployment refuses too, the client gets the provisioned deployment's 429 with
`x-ms-spillover-error` holding the standard deployment's status. The Responses API has no
spillover. (Microsoft Learn, "Manage traffic with spillover for provisioned deployments".)

Only asked for a provisioned deployment that is at its limit: nothing here runs on the
common path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .config import Deployment, spillover_unfit

REQUEST_HEADER = "x-ms-spillover-deployment"
ERROR_HEADER = "x-ms-spillover-error"
SERVED_BY_HEADER = "x-ms-deployment-name"
NO_SPILLOVER_OPERATIONS = frozenset({"responses"})  # Azure offers no spillover to the Responses API

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # what an HTTP header name may hold


def target(
    provisioned: Deployment, operation: str, header: str | None, deployments: Mapping[str, Deployment]
) -> Deployment | None:
    """The standard deployment that serves this request instead of the throttled provisioned
    one, or None (no spillover named, the named one unfit, or an operation without spillover).
    The deployment's setting wins over the request's header, as on Azure."""
    if operation in NO_SPILLOVER_OPERATIONS:
        return None
    name = provisioned.spillover or (header or "").strip()
    if not name:
        return None
    standard = deployments.get(name)
    if standard is None or spillover_unfit(provisioned, standard, name) is not None:
        return None  # a deployment removed or changed since start-up, or a header naming nothing usable
    return standard


def served_headers(provisioned: str, standard: str) -> dict[str, str]:
    """The headers of an answer that spilled: which provisioned deployment it spilled from and
    which deployment served it. Azure names the deployments in the header names themselves; a
    name that cannot be a header name only appears in `x-ms-deployment-name`."""
    headers = {SERVED_BY_HEADER: standard}
    if _TOKEN.fullmatch(provisioned):
        headers[f"x-ms-spillover-from-{provisioned}"] = provisioned
    if _TOKEN.fullmatch(standard):
        headers.setdefault(f"x-ms-{standard}", standard)
    return headers
