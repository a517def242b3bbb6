"""Routing: which API a request is for, resolved once against the route table.

Every flow leaves this stage with its `RequestContext` (runtime/state.py): the route (or
None for a path no route has: an extension may serve it), the path's parameters, and the
methods the path takes when this one was wrong. Nothing is answered here: auth comes next,
and Azure refuses a request without a key before it looks at anything else. Key-like query
parameters (`?api-key=`, `sig`, …) are taken off the request here (runtime/redaction.py).
"""

from __future__ import annotations

from mitmproxy import http

from ..runtime import redaction
from ..runtime.config import SimulatorConfig
from ..runtime.routes import TABLE, RouteTable
from ..runtime.services import Services
from ..runtime.state import METADATA_KEY, RequestContext


def resolve(
    flow: http.HTTPFlow, config: SimulatorConfig, table: RouteTable = TABLE, services: Services | None = None
) -> RequestContext:
    context = RequestContext(flow, config, services=services)
    found = table.resolve(flow.request.method, flow.request.path)
    if found is not None:
        context.route, context.params, context.allowed_methods = found.route, found.params, found.allowed
    flow.metadata[METADATA_KEY] = context
    return context


class Routing:
    def __init__(self, config: SimulatorConfig, services: Services | None = None, table: RouteTable = TABLE):
        self.config = config
        self.services = services  # every request's context carries them, for the generators
        self.table = table

    def request(self, flow: http.HTTPFlow) -> None:
        # Keys in the query leave the request first: nothing after this stage (logs,
        # recordings, mitmproxy's own flow lines) sees them.
        secrets = redaction.take_query_secrets(flow.request)
        context = resolve(flow, self.config, self.table, self.services)
        if secrets:
            context.query_secrets = secrets
