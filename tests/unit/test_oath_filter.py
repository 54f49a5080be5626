"""plugins/filter/pacslab_oath.py: pam_oath's users file from the lab's TOTP seeds, keeping the
state pam_oath writes (the last accepted code, which makes a replayed code fail)."""

from __future__ import annotations

import importlib.util

import pytest

from pacslab.topology import REPO_ROOT

_spec = importlib.util.spec_from_file_location("pacslab_oath", REPO_ROOT / "plugins" / "filter" / "pacslab_oath.py")
assert _spec and _spec.loader
oath = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(oath)

# RFC 6238 appendix B's SHA-1 secret, the ASCII "12345678901234567890", in base32 and in hex
SEED = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
HEX = "3132333435363738393031323334353637383930"
OTHER = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
# a line after pam_oath accepted a code: counter, last code, when
USED = f"HOTP/T30/6\tvnd-acme\t-\t{HEX}\t0\t755224\t2026-12-01T20:01:54L"


def test_a_new_person_gets_a_fresh_line_in_the_order_given() -> None:
    assert oath.pacslab_oath_users("", {"vnd-acme": SEED, "vnd-beta": SEED}) == (
        f"HOTP/T30/6\tvnd-acme\t-\t{HEX}\nHOTP/T30/6\tvnd-beta\t-\t{HEX}\n")


def test_a_used_line_is_kept_with_its_state_and_a_second_run_changes_nothing() -> None:
    text = oath.pacslab_oath_users(USED + "\n", {"vnd-acme": SEED})
    assert text == USED + "\n"
    assert oath.pacslab_oath_users(text, {"vnd-acme": SEED}) == text


def test_a_new_seed_replaces_the_line_and_its_state_and_people_not_listed_lose_theirs() -> None:
    text = oath.pacslab_oath_users(USED + "\nHOTP/T30/6\tvnd-old\t-\tabcd\n", {"vnd-acme": OTHER})
    assert text == "HOTP/T30/6\tvnd-acme\t-\t48656c6c6f21deadbeef48656c6c6f21deadbeef\n"


def test_a_seed_that_is_not_base32_is_refused() -> None:
    with pytest.raises(ValueError, match="not a base32 TOTP seed"):
        oath.pacslab_oath_users("", {"vnd-acme": "not-base32!"})
