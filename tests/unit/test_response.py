"""Which lab hosts containment may quarantine (pacslab.response.target), on the reference lab."""

from __future__ import annotations

import pytest

from pacslab.response import ContainmentError, release_target, target
from pacslab.topology import load_lab

from .conftest import DEFAULT_LAB

LAB = load_lab(DEFAULT_LAB)


@pytest.mark.parametrize(("host", "address"), [("mod-ct", "10.77.30.10"), ("mod-legacy", "10.77.31.10"), ("pacs", "10.77.40.10"),
                                               ("attacker", "10.77.90.66")])
def test_a_deployed_host_outside_the_security_zone_is_quarantined_by_its_address(host: str, address: str) -> None:
    assert target(LAB, host) == address


@pytest.mark.parametrize(("host", "reason"), [
    ("fw", "fw is the zone firewall: it enforces the quarantine, it cannot be in it"),
    ("siem", "siem is in the security zone, which a quarantined host keeps: the fw cannot isolate it"),
    ("ntp", "ntp is planned, not deployed: nothing runs at its address to contain"),
    ("nosuch", "'nosuch' is not a host of lab 'default' (see `pacslab status`)"),
])
def test_a_host_containment_cannot_isolate_is_refused_with_its_reason(host: str, reason: str) -> None:
    with pytest.raises(ContainmentError) as refused:
        target(LAB, host)
    assert str(refused.value) == reason


@pytest.mark.parametrize(("name", "address"), [("mod-ct", "10.77.30.10"), ("10.77.30.10", "10.77.30.10"), ("10.77.30.200", "10.77.30.200")])
def test_a_release_takes_a_host_its_address_or_an_address_no_host_has_in_a_zone(name: str, address: str) -> None:
    """What unknown-device quarantined (a rogue's address) can be released by that address."""
    assert release_target(LAB, name) == address


@pytest.mark.parametrize(("name", "reason"), [
    ("192.0.2.7", "192.0.2.7 is in no zone of lab 'default': nothing of the lab's to release"),
    ("10.77.50.10", "siem is in the security zone, which a quarantined host keeps: the fw cannot isolate it"),
    ("10.77.30.x", "'10.77.30.x' is not a host of lab 'default' (see `pacslab status`)"),
])
def test_a_release_of_what_is_not_the_lab_s_is_refused_with_its_reason(name: str, reason: str) -> None:
    with pytest.raises(ContainmentError) as refused:
        release_target(LAB, name)
    assert str(refused.value) == reason
