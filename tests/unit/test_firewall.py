"""The rendered ruleset: default drop, one accept per flow with its own counter, drops logged."""

from __future__ import annotations

import re

from pacslab.firewall import LOG_GROUP, PREFIX_DENY, PREFIX_EGRESS, counter_name, flow_rules, render
from pacslab.topology import load_lab

from .conftest import DEFAULT_LAB

LAB = load_lab(DEFAULT_LAB)
RULES = render(LAB)


def forward_chain(text: str) -> list[str]:
    body = text.split("chain forward {", 1)[1].split("\n\t}", 1)[0]
    return [ln.strip() for ln in body.splitlines() if ln.strip()]


def test_forward_policy_is_drop_and_ends_with_a_logged_drop() -> None:
    chain = forward_chain(RULES)
    assert chain[0] == "type filter hook forward priority filter; policy drop;"
    assert chain[-1] == f'counter log group {LOG_GROUP} prefix "{PREFIX_DENY}" drop'


def test_quarantine_comes_before_established_and_flows() -> None:
    chain = forward_chain(RULES)
    first_quarantine = next(i for i, r in enumerate(chain) if "@quarantine" in r)
    established = chain.index("ct state established,related accept")
    first_flow = next(i for i, r in enumerate(chain) if "counter name" in r)
    assert first_quarantine < established < first_flow


def test_egress_outside_the_zones_is_dropped_before_any_flow() -> None:
    chain = forward_chain(RULES)
    egress = next(i for i, r in enumerate(chain) if PREFIX_EGRESS in r)
    assert "ip daddr != @lab_nets" in chain[egress]
    assert egress < next(i for i, r in enumerate(chain) if "counter name" in r)


def test_every_flow_has_its_rules_and_named_counter() -> None:
    for flow in LAB.flows:
        assert f"counter {counter_name(flow)} {{" in RULES
        for rule in flow_rules(LAB, flow):
            assert rule in RULES
            assert rule.endswith(f'comment "{flow.id} {flow.purpose[:100]}"')


def test_accept_rules_are_only_the_flows() -> None:
    accepts = [r for r in forward_chain(RULES) if re.search(r"\baccept\b", r)]
    expected = ["ct state established,related accept"] + [r for f in LAB.flows for r in flow_rules(LAB, f)]
    assert accepts == expected


def test_host_flow_uses_addresses_and_port() -> None:
    f01 = next(f for f in LAB.flows if f.id == "F01")
    (rule,) = flow_rules(LAB, f01)
    assert rule.startswith("ip saddr { 10.77.30.10, 10.77.30.11, 10.77.31.20 } ip daddr 10.77.40.10 tcp dport 2762 ct state new")


def test_any_protocol_flow_matches_a_zone_without_port() -> None:
    f12 = next(f for f in LAB.flows if f.id == "F12")
    (rule,) = flow_rules(LAB, f12)
    assert rule.startswith("ip saddr 10.77.50.12 ip daddr 10.77.40.0/24 ct state new")
    assert "dport" not in rule
