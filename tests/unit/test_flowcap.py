from mitmproxy.addons.view import View
from mitmproxy.test import taddons, tflow

from aoai.runtime.bounds import Bounds
from aoai.runtime.config import SimulatorConfig
from aoai.stages.flowcap import FlowCap, flow_bytes


def finished_flow():
    f = tflow.tflow(resp=True)
    f.live = False
    return f


def test_keeps_the_newest_flows_under_the_cap():
    view, cap = View(), FlowCap()
    with taddons.context(view, cap) as tctx:
        tctx.configure(cap, simulator_web_max_flows=10)
        flows = [finished_flow() for _ in range(15)]
        for f in flows:
            view.add([f])
            cap.response(f)
        kept = list(view._store.values())
        assert 9 <= len(kept) <= 10
        assert kept[-1] is flows[-1] and flows[0] not in kept


def test_zero_keeps_everything():
    view, cap = View(), FlowCap()
    with taddons.context(view, cap) as tctx:
        tctx.configure(cap, simulator_web_max_flows=0)
        for _ in range(30):
            f = finished_flow()
            view.add([f])
            cap.response(f)
        assert view.store_count() == 30


def test_keeps_the_flows_within_their_bytes_the_oldest_going_first():
    view, cap = View(), FlowCap(SimulatorConfig(bounds=Bounds(web_flow_bytes=100_000)))
    with taddons.context(view, cap) as tctx:
        tctx.configure(cap, simulator_web_max_flows=1000)
        flows = []
        for _ in range(30):
            f = finished_flow()
            f.request.content = bytes(10_000)
            flows.append(f)
            view.add([f])
            cap.response(f)
        kept = list(view._store.values())
        assert kept[-1] is flows[-1] and flows[0] not in kept
        assert sum(flow_bytes(f) for f in kept) == cap.bytes <= 100_000
        assert 8 <= len(kept) <= 9


def test_flows_removed_in_the_web_ui_no_longer_count():
    view, cap = View(), FlowCap(SimulatorConfig(bounds=Bounds(web_flow_bytes=100_000)))
    with taddons.context(view, cap) as tctx:
        tctx.configure(cap, simulator_web_max_flows=1000)
        for _ in range(8):
            f = finished_flow()
            f.request.content = bytes(10_000)
            view.add([f])
            cap.response(f)
        view.remove(list(view._store.values())[:4])  # as the web UI's "delete"
        for _ in range(4):
            f = finished_flow()
            f.request.content = bytes(10_000)
            view.add([f])
            cap.response(f)
        assert view.store_count() == 8  # 120 kB were measured, but only 8 flows are kept: nothing more goes
