"""The load-test driver expects the latency the simulator uses: for every default deployment
(whose latency GET /++/config leaves out), one of its own, the LATENCY_OPENAI_CHAT_COMPLETIONS_*
setting, an undefined name, and latency turned off."""

import importlib.util
import sys

import pytest
from conftest import ROOT
from unit_support import make_config

from aoai.openai import catalogue
from aoai.openai.catalogue import Normal
from aoai.runtime import latency, routes
from aoai.runtime.config import Deployment, Latency
from aoai.stages.management import config_view

spec = importlib.util.spec_from_file_location("loadtest_driver", ROOT / "loadtest" / "driver.py")
driver = importlib.util.module_from_spec(spec)
sys.modules["loadtest_driver"] = driver  # its dataclasses look their module up
spec.loader.exec_module(driver)

CHAT = next(r for r in routes.ROUTES if r.name == "chat")


def simulator_uses(config, name: str) -> tuple[float, float]:
    profile = latency.profile(config.deployment(name, catalogue.CHAT), CHAT, config)
    return profile.time_to_first_token_ms.mean, profile.inter_token_ms.mean


def chat_deployments(config) -> list[str]:
    return [name for name, d in config.deployments.items() if d.model.kind == catalogue.CHAT]


def test_the_default_deployments():
    config = make_config(latency_enabled=True)
    names = chat_deployments(config)
    assert len(names) >= 2
    for name in names:
        assert config.deployments[name].latency is None  # what /++/config does not show
        expected = driver.expected_latency(config_view(config), name)
        assert expected == simulator_uses(config, name), name
        assert expected[0] > 0 and expected[1] > 0


def test_a_deployment_with_latency_of_its_own():
    config = make_config(latency_enabled=True)
    own = Latency(Normal(321, 1), Normal(12, 1), Normal(50, 1))
    config.deployments["mine"] = Deployment("mine", catalogue.MODELS["gpt-4o"], latency=own)
    assert driver.expected_latency(config_view(config), "mine") == (321, 12) == simulator_uses(config, "mine")


def test_the_latency_setting_for_chat():
    config = make_config(latency_enabled=True, latency_defaults={"chat_completions": Normal(7, 1)})
    name = chat_deployments(config)[0]
    assert driver.expected_latency(config_view(config), name) == (7, 7) == simulator_uses(config, name)


@pytest.mark.parametrize("name", ["gpt-4o-mini-undefined", "gpt-4o-mini"])
def test_an_undefined_name(name):
    config = make_config(latency_enabled=True, allow_undefined_deployments=True)
    config.deployments.pop(name, None)
    assert driver.expected_latency(config_view(config), name) == simulator_uses(config, name)


def test_an_unknown_name_where_undefined_ones_are_refused():
    config = make_config(latency_enabled=True, allow_undefined_deployments=False)
    assert driver.expected_latency(config_view(config), "nowhere") == (None, None)


def test_latency_turned_off():
    config = make_config(latency_enabled=False)
    assert driver.expected_latency(config_view(config), chat_deployments(config)[0]) == (0.0, 0.0)
