"""Which lab hosts containment may quarantine (pacslab.response.target), on the reference lab."""

from __future__ import annotations

import pytest

from pacslab.response import ContainmentError, target
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
