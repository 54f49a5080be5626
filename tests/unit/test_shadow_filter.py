"""plugins/filter/pacslab_shadow.py: a person's last day -> the account's shadow expiry (epoch seconds)."""

from __future__ import annotations

import datetime as dt
import importlib.util

import pytest

from pacslab.topology import REPO_ROOT

_spec = importlib.util.spec_from_file_location("pacslab_shadow", REPO_ROOT / "plugins" / "filter" / "pacslab_shadow.py")
assert _spec and _spec.loader
shadow = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shadow)


def test_the_account_ends_at_midnight_utc_after_the_last_day() -> None:
    assert shadow.pacslab_shadow_expiry("2026-01-31") == 1769904000  # 2026-02-01T00:00:00Z
    assert shadow.pacslab_shadow_expiry(dt.date(2030, 6, 30)) == 1909094400  # 2030-07-01T00:00:00Z, as YAML gives a date


def test_no_end_date_is_no_expiry() -> None:
    assert shadow.pacslab_shadow_expiry(None) == -1 and shadow.pacslab_shadow_expiry("") == -1


def test_text_that_is_not_a_date_is_refused() -> None:
    with pytest.raises(ValueError):
        shadow.pacslab_shadow_expiry("soon")
