"""For `make bench-limits` only, loaded after the simulator: stamps each admitted answer with
the moment the simulator checked its quota (in the windows' clock: the system's monotonic
clock for windows in memory, Redis's clock for shared ones), so the benchmark counts its
windows in the simulator's time. Under a burst a response can leave a few hundred
milliseconds after its decision; counted by arrival, a 10 s window would look fuller than
the simulator ever let it be."""


class DecidedAt:
    def request(self, flow):
        context = flow.metadata.get("aoai")
        at = getattr(context, "values", {}).get("quota_checked_at")
        if flow.response is not None and at is not None:
            flow.response.headers["x-bench-decided-at"] = repr(at)


addons = [DecidedAt()]
