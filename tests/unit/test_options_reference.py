"""docs/configuration.md is what scripts/options_reference.py makes from the option declarations."""

from __future__ import annotations

import options_reference


def test_every_setting_the_stages_declare_is_in_the_reference():
    page = options_reference.PAGE.read_text(encoding="utf-8")
    declared = [
        o for _, options in options_reference.declared_options(options_reference.stage_addons()) for o in options
    ]
    assert len(declared) >= 40  # the stack loaded: Settings alone declares more
    missing = [o.name.upper() for o in declared if f"| `{o.name.upper()}` | `{o.name}` |" not in page]
    assert not missing, f"undocumented settings {missing}: run python scripts/options_reference.py"


def test_the_reference_is_up_to_date():
    page = options_reference.PAGE.read_text(encoding="utf-8")
    assert page == options_reference.reference(), (
        "docs/configuration.md is stale: run python scripts/options_reference.py"
    )


def test_defaults_are_the_declared_ones_whatever_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SIMULATOR_MODE", "replay")
    monkeypatch.setenv("RECORDING_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("SIMULATOR_SEED=5\n", encoding="utf-8")
    assert options_reference.reference() == options_reference.PAGE.read_text(encoding="utf-8")
