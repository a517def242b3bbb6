"""The Grafana dashboard only asks for metrics the simulator exports."""

import json
import re
from pathlib import Path

from aoai.runtime.config import SimulatorConfig
from aoai.runtime.streams import StreamServer
from aoai.stages.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "grafana" / "aoai-simulator-dashboard.json"


def test_every_panel_queries_an_exported_metric():
    dashboard = json.loads(DASHBOARD.read_text())
    exported = {family.name for family in Metrics(SimulatorConfig(), StreamServer()).metrics.registry.collect()}
    queried = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for name in re.findall(r"\baoai_[a-z_]+", target["expr"]):
                queried.add(re.sub(r"_(bucket|total|sum|count)$", "", name))
    assert queried and queried <= exported, queried - exported
