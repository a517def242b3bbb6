"""FlowCap: under mitmweb, keep only the newest flows.

mitmweb keeps every flow in memory, so a long load test under it grows without bound. This
stage drops the oldest finished flows beyond SIMULATOR_WEB_MAX_FLOWS. mitmdump keeps no flows
and is unaffected.
"""

from __future__ import annotations

import os

from mitmproxy import ctx, exceptions, http

from ..runtime import internals


class FlowCap:
    def load(self, loader):
        default = os.environ.get("SIMULATOR_WEB_MAX_FLOWS", "10000")
        loader.add_option("simulator_web_max_flows", int, int(default) if default.isdigit() else 10000,
                          "Under mitmweb, keep at most this many flows, dropping the oldest; 0 keeps all "
                          "(env SIMULATOR_WEB_MAX_FLOWS).")

    def running(self):
        if ctx.master.addons.get("view") is None:
            # No flows are kept (mitmdump): take the hooks away, so no request pays for them.
            self.response = self.error = None

    def configure(self, updated):
        if "simulator_web_max_flows" in updated and ctx.options.simulator_web_max_flows < 0:
            raise exceptions.OptionsError("simulator_web_max_flows: must be 0 (keep all) or more")

    def response(self, flow: http.HTTPFlow) -> None:
        self._trim()

    def error(self, flow: http.HTTPFlow) -> None:
        self._trim()

    def _trim(self) -> None:
        limit = ctx.options.simulator_web_max_flows
        view = ctx.master.addons.get("view")
        if not limit or view is None or view.store_count() <= limit:
            return
        # Trim a tenth below the cap at a time, so the cost is paid once per many flows. The
        # store keeps arrival order (the view may be sorted otherwise), so its head is oldest.
        excess = view.store_count() - int(limit * 0.9)
        oldest = [f for f in internals.stored_flows(view)[:excess] if not f.live]
        view.remove(oldest)
