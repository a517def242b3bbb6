"""The bounds table: its settings parse, refuse what is out of range, and are all documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from aoai.runtime import bounds
from aoai.runtime.bounds import BOUNDS, BoundError, Bounds, parse_bound, parse_bounds

LIMITS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "limits.md"


def test_every_bound_has_a_field_and_its_default_is_the_fields():
    defaults = Bounds()
    for b in BOUNDS:
        assert getattr(defaults, b.field) == b.default, b.env


def test_settings_parse_as_numbers_and_empty_keeps_the_default():
    parsed = parse_bounds(
        {"SIMULATOR_MAX_BODY_BYTES": "1_048_576", "SIMULATOR_BODY_TIMEOUT_SECONDS": "2.5", "IMAGE_MAX_PIXELS": ""}
    )
    assert parsed.max_body_bytes == 1_048_576
    assert parsed.body_timeout_s == 2.5
    assert parsed.image_max_pixels == Bounds().image_max_pixels


@pytest.mark.parametrize("raw", ["0", "-1", "1.5", "nan", "inf", "1e300", "ten", str(2**63)])
def test_a_whole_number_bound_refuses_what_is_not_one_in_range_naming_the_variable(raw):
    with pytest.raises(BoundError, match=r"^SIMULATOR_MAX_BODY_BYTES: "):
        parse_bound(bounds.BY_ENV["SIMULATOR_MAX_BODY_BYTES"], raw)


def test_a_duration_takes_fractions_above_its_floor():
    timeout = bounds.BY_ENV["SIMULATOR_HEADER_TIMEOUT_SECONDS"]
    assert parse_bound(timeout, "0.25") == 0.25
    with pytest.raises(BoundError, match="SIMULATOR_HEADER_TIMEOUT_SECONDS"):
        parse_bound(timeout, "0.01")


def test_the_view_names_each_bound_by_its_setting():
    view = Bounds().to_json()
    assert set(view) == {b.env for b in BOUNDS}
    assert all(isinstance(v, (int, float)) for v in view.values())


def test_every_bound_is_in_the_limits_table():
    rows = [line for line in LIMITS_PAGE.read_text(encoding="utf-8").splitlines() if line.startswith("| ")]
    table = "\n".join(rows)
    missing = [b.env for b in BOUNDS if f"`{b.env}`" not in table]
    assert not missing, f"add these settings to the Limits table of docs/limits.md: {missing}"


def test_bound_rows_are_unique():
    assert len({b.env for b in BOUNDS}) == len(BOUNDS)
    assert len({b.field for b in BOUNDS}) == len(BOUNDS)
