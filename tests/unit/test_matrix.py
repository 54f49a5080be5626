"""The segmentation matrix derived from the definition is consistent with the flows."""

from __future__ import annotations

import ipaddress

from pacslab.probes.segmentation import SENSITIVE_TCP_PORTS, allowed, build_cases, outside_address
from pacslab.topology import load_lab

from .conftest import DEFAULT_LAB

LAB = load_lab(DEFAULT_LAB)
CASES = build_cases(LAB)


def test_every_flow_source_has_an_allow_case() -> None:
    for flow in LAB.flows:
        got = {c.src.name for c in CASES if c.kind == "allow" and c.flow == flow.id}
        assert got == {str(s) for s in flow.sources}, flow.id


def test_no_deny_case_is_allowed_and_none_stays_inside_a_zone() -> None:
    for c in CASES:
        if c.kind == "deny":
            assert allowed(LAB, c.src.address, c.dst.address, c.proto, c.port) is None, c.id
            assert c.src.zone != c.dst.zone, c.id


def test_every_zone_pair_and_sensitive_port_is_denied() -> None:
    denied = {(c.src.name, c.dst.name, c.port) for c in CASES if c.kind == "deny"}
    for zs in LAB.zones:
        for zd in LAB.zones:
            if zs != zd:
                for port in SENSITIVE_TCP_PORTS:
                    assert (f"zone:{zs}", f"zone:{zd}", port) in denied


def test_required_negatives_of_the_catalogue_are_in_the_matrix() -> None:
    ids = {c.id for c in CASES}
    for case in ("deny-mod-ct-vna-tcp2762", "deny-zone:internet-pacs-tcp2762", "deny-vendor-eng-pacs-tcp22", "deny-ws-rad-mod-ct-tcp22",
                 "deny-zone:modality-pacs-tcp2762", "deny-zone:clinical-pacs-tcp104"):
        assert case in ids


def test_egress_target_is_inside_the_lab_space_and_in_no_zone() -> None:
    addr = ipaddress.IPv4Address(outside_address(LAB))
    assert addr in LAB.address_space
    assert not any(addr in z.subnet for z in LAB.zones.values())
