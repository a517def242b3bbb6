from aoai.stages.flowcap import FlowCap
from mitmproxy.addons.view import View
from mitmproxy.test import taddons, tflow


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
