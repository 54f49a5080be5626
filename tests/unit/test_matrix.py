"""The segmentation matrix derived from the reference lab's definition (C-ACC-04, CSF PR.AC-5).

Two kinds of checks, so that none of them can pass with a broken ``allowed()``:
- verdicts written out by hand for representative cases (a host flow, a zone-source flow, an
  any-port flow, a UDP flow, the attacker, a wrong port, a wrong protocol, a wrong destination),
  with the reference lab's addresses typed in;
- for breadth, properties of the whole generated matrix checked against an oracle written here
  from the flow list (networks and port sets), never with ``allowed()`` itself.

``test_mutations_are_caught`` replaces ``allowed()`` with broken versions and shows that each is
caught by at least one of these checks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest

from pacslab.probes import segmentation as seg
from pacslab.topology import Flow, Lab, load_lab

from .conftest import DEFAULT_LAB

LAB = load_lab(DEFAULT_LAB)

# (source address, destination address, proto, port) -> the flow that must allow it, or None.
# Addresses of the reference lab (inventories/default/hosts.yml and lab.yml), typed in.
VERDICTS: dict[str, tuple[str, str, str, int, str | None]] = {
    "mod-ct to pacs DICOM TLS (host flow)": ("10.77.30.10", "10.77.40.10", "tcp", 2762, "F01"),
    "mod-mr to ris worklist": ("10.77.30.11", "10.77.40.12", "tcp", 2762, "F02"),
    "ovl-gw to pacs for the legacy device": ("10.77.31.20", "10.77.40.10", "tcp", 2762, "F01"),
    "ws-tech to ris HL7 (zone source)": ("10.77.20.11", "10.77.40.12", "tcp", 2575, "F03"),
    "clinical probe address to ris HL7 (zone source)": ("10.77.20.250", "10.77.40.12", "tcp", 2575, "F03"),
    "scanner to pacs postgres (any-port flow)": ("10.77.50.12", "10.77.40.10", "tcp", 5432, "F12"),
    "scanner to vna udp 161 (any-port flow, any protocol)": ("10.77.50.12", "10.77.40.11", "udp", 161, "F12"),
    "scanner to mod-ct ssh (any-port flow, other zone)": ("10.77.50.12", "10.77.30.10", "tcp", 22, "F12b"),
    "modality zone to ntp (udp flow)": ("10.77.30.10", "10.77.10.13", "udp", 123, "F13"),
    "pacs to ws-rad C-MOVE": ("10.77.40.10", "10.77.20.10", "tcp", 2762, "F06"),
    "attacker to pacs DICOM": ("10.77.90.66", "10.77.40.10", "tcp", 2762, None),
    "internet probe address to pacs DICOM": ("10.77.90.250", "10.77.40.10", "tcp", 2762, None),
    "mod-ct to vna DICOM (wrong destination)": ("10.77.30.10", "10.77.40.11", "tcp", 2762, None),
    "mod-ct to pacs ssh (wrong port)": ("10.77.30.10", "10.77.40.10", "tcp", 22, None),
    "mod-ct to pacs udp 2762 (wrong protocol)": ("10.77.30.10", "10.77.40.10", "udp", 2762, None),
    "modality zone to ntp over tcp (wrong protocol)": ("10.77.30.10", "10.77.10.13", "tcp", 123, None),
    "ws-tech to pacs DICOM (F05d names ws-rad only)": ("10.77.20.11", "10.77.40.10", "tcp", 2762, None),
    "mod-ct to ws-rad (F06 is from pacs only)": ("10.77.30.10", "10.77.20.10", "tcp", 2762, None),
    "scanner to ris from another security address": ("10.77.50.11", "10.77.40.12", "tcp", 2762, None),
    "vendor-eng to pacs ssh (only bastion may)": ("10.77.90.11", "10.77.40.10", "tcp", 22, None),
}

# Cases the generated matrix must hold, with their ends typed in.
REQUIRED_CASES: dict[str, tuple[str, str, str, int]] = {  # id -> (kind, source address, destination address, port)
    "allow-F01-mod-ct-pacs-tcp2762": ("allow", "10.77.30.10", "10.77.40.10", 2762),
    "allow-F03-zone:clinical-ris-tcp2575": ("allow", "10.77.20.250", "10.77.40.12", 2575),
    "allow-F12-scanner-zone:datacenter-tcp8042": ("allow", "10.77.50.12", "10.77.40.250", 8042),
    "deny-mod-ct-vna-tcp2762": ("deny", "10.77.30.10", "10.77.40.11", 2762),
    "deny-zone:internet-pacs-tcp2762": ("deny", "10.77.90.250", "10.77.40.10", 2762),
    "deny-vendor-eng-pacs-tcp22": ("deny", "10.77.90.11", "10.77.40.10", 22),
    "deny-mod-ct-pacs-tcp22": ("deny", "10.77.30.10", "10.77.40.10", 22),
    "deny-ws-rad-mod-ct-tcp22": ("deny", "10.77.20.10", "10.77.30.10", 22),
    "deny-zone:modality-pacs-tcp2762": ("deny", "10.77.30.250", "10.77.40.10", 2762),
    "deny-zone:clinical-pacs-tcp104": ("deny", "10.77.20.250", "10.77.40.10", 104),
    "egress-zone:internet-tcp443": ("egress", "10.77.90.250", "10.77.0.10", 443),
}
# Allowed traffic that must never appear as a deny case (it would be probed, and "fail", forever).
NEVER_DENIED = ("deny-mod-ct-pacs-tcp2762", "deny-zone:clinical-ris-tcp2575", "deny-ws-rad-pacs-tcp2762", "deny-scanner-pacs-tcp22")


def _network(lab: Lab, kind: str, name: str) -> ipaddress.IPv4Network:
    if kind == "zone":
        return lab.zones[name].subnet
    return ipaddress.IPv4Network(f"{lab.hosts[name].address}/32")


def oracle(lab: Lab, src: str, dst: str, proto: str, port: int) -> set[str]:
    """Every flow id that covers the packet, from the flow list as networks and port sets: the
    test's own reading of lab_flows, independent of segmentation.allowed()."""
    s, d = ipaddress.IPv4Address(src), ipaddress.IPv4Address(dst)
    hits = set()
    for f in lab.flows:
        protos = {"tcp", "udp"} if f.proto == "any" else {f.proto}
        ports = range(1, 65536) if f.ports is None else set(f.ports)
        if proto in protos and port in ports and d in _network(lab, f.dest.kind, f.dest.name):
            if any(s in _network(lab, e.kind, e.name) for e in f.sources):
                hits.add(f.id)
    return hits


def cases() -> list[seg.Case]:
    return seg.build_cases(LAB)  # at call time, so a patched allowed() reaches it


def check_verdict(name: str) -> None:
    src, dst, proto, port, expected = VERDICTS[name]
    flow = seg.allowed(LAB, src, dst, proto, port)
    assert (flow.id if flow else None) == expected, name


def check_required_cases(built: list[seg.Case]) -> None:
    by_id = {c.id: c for c in built}
    for cid, (kind, src, dst, port) in REQUIRED_CASES.items():
        assert cid in by_id, cid
        c = by_id[cid]
        assert (c.kind, c.src.address, c.dst.address, c.port) == (kind, src, dst, port), cid
    for cid in NEVER_DENIED:
        assert cid not in by_id, f"{cid}: allowed traffic in the deny matrix"


def check_deny_cases_are_denied_by_the_flows(built: list[seg.Case]) -> None:
    for c in built:
        if c.kind == "deny":
            flows = oracle(LAB, c.src.address, c.dst.address, c.proto, c.port)
            assert not flows, f"{c.id} is allowed by {sorted(flows)}"
            assert c.src.zone != c.dst.zone, c.id


def check_allow_cases_are_their_flows(built: list[seg.Case]) -> None:
    for c in built:
        if c.kind == "allow":
            assert c.flow in oracle(LAB, c.src.address, c.dst.address, c.proto, c.port), c.id


def check_every_flow_source_has_an_allow_case(built: list[seg.Case]) -> None:
    for flow in LAB.flows:
        got = {c.src.name for c in built if c.kind == "allow" and c.flow == flow.id}
        assert got == {str(s) for s in flow.sources}, flow.id


@pytest.mark.parametrize("name", list(VERDICTS))
def test_allowed_gives_the_hand_written_verdict(name: str) -> None:
    check_verdict(name)


def test_required_cases_are_in_the_matrix_with_their_addresses() -> None:
    check_required_cases(cases())


def test_no_deny_case_is_allowed_by_any_flow_and_none_stays_inside_a_zone() -> None:
    check_deny_cases_are_denied_by_the_flows(cases())


def test_every_allow_case_is_covered_by_its_own_flow() -> None:
    check_allow_cases_are_their_flows(cases())


def test_every_flow_source_has_an_allow_case() -> None:
    check_every_flow_source_has_an_allow_case(cases())


def test_every_zone_pair_and_sensitive_port_is_denied() -> None:
    """Zone probe addresses are nobody's flow source, so each ordered zone pair is denied on every
    sensitive port (to the zone's own probe address)."""
    denied = {(c.src.name, c.dst.name, c.port) for c in cases() if c.kind == "deny"}
    for zs in LAB.zones:
        for zd in LAB.zones:
            if zs != zd:
                for port in seg.SENSITIVE_TCP_PORTS:
                    assert (f"zone:{zs}", f"zone:{zd}", port) in denied


def test_the_matrix_has_the_reference_lab_size() -> None:
    """46 allow cases: F01..F13 and F16 expanded (hosts and zones as sources, the any-port flows sampled
    on 3 ports). A change in the flows or in the generator that changes the size shows here."""
    built = cases()
    assert sum(c.kind == "allow" for c in built) == 46
    assert sum(c.kind == "egress" for c in built) == len(LAB.zones) == 10


def test_egress_target_is_inside_the_lab_space_and_in_no_zone() -> None:
    addr = ipaddress.IPv4Address(seg.outside_address(LAB))
    assert str(addr) == "10.77.0.10"  # the first /24 of 10.77.0.0/16 that no zone holds
    assert addr in LAB.address_space
    assert not any(addr in z.subnet for z in LAB.zones.values())


def test_the_oracle_agrees_with_the_hand_written_verdicts() -> None:
    """The oracle used for breadth is itself checked against the literal cases."""
    for name, (src, dst, proto, port, expected) in VERDICTS.items():
        assert oracle(LAB, src, dst, proto, port) == ({expected} if expected else set()), name


# ---------------------------------------------------------------------------------------------
# Mutations of allowed(): each must make at least one check above fail.


def _without(skip: str) -> Callable[..., Flow | None]:
    """allowed() with one of its conditions dropped: the port, the protocol, zone sources, or the
    source altogether."""

    def mutated(lab: Lab, src: str, dst: str, proto: str, port: int) -> Flow | None:
        for flow in lab.flows:
            if skip != "protocol" and flow.proto not in (proto, "any"):
                continue
            if skip != "port" and flow.ports is not None and port not in flow.ports:
                continue
            sources = [s for s in flow.sources if s.kind == "host"] if skip == "zone-sources" else flow.sources
            if seg._covers(lab, flow.dest, dst) and (skip == "source" or any(seg._covers(lab, s, src) for s in sources)):
                return flow
        return None

    return mutated


MUTATIONS: dict[str, Callable[..., Flow | None]] = {
    "always-none": lambda *a: None,
    "ignores-port": _without("port"),
    "ignores-protocol": _without("protocol"),
    "ignores-zone-sources": _without("zone-sources"),
    "ignores-source": _without("source"),
}
# mutation -> checks that must catch it (a subset of what does: written out so that a weakened
# check shows here).
CAUGHT_BY = {
    "always-none": {"verdict: mod-ct to pacs DICOM TLS (host flow)", "required cases", "deny cases denied by the flows"},
    "ignores-port": {"verdict: mod-ct to pacs ssh (wrong port)", "required cases"},
    "ignores-protocol": {"verdict: mod-ct to pacs udp 2762 (wrong protocol)", "verdict: modality zone to ntp over tcp (wrong protocol)"},
    "ignores-zone-sources": {"verdict: ws-tech to ris HL7 (zone source)", "deny cases denied by the flows"},
    "ignores-source": {"verdict: attacker to pacs DICOM", "verdict: mod-ct to vna DICOM (wrong destination)", "required cases"},
}


def _checks(built: list[seg.Case]) -> dict[str, Callable[[], None]]:
    return {
        **{f"verdict: {name}": (lambda name=name: check_verdict(name)) for name in VERDICTS},
        "required cases": lambda: check_required_cases(built),
        "deny cases denied by the flows": lambda: check_deny_cases_are_denied_by_the_flows(built),
        "allow cases are their flows": lambda: check_allow_cases_are_their_flows(built),
    }


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_mutations_are_caught(mutation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seg, "allowed", MUTATIONS[mutation])
    caught = set()
    for name, check in _checks(seg.build_cases(LAB)).items():
        try:
            check()
        except AssertionError:
            caught.add(name)
    assert CAUGHT_BY[mutation] <= caught, f"allowed() mutated ({mutation}): not caught by {sorted(CAUGHT_BY[mutation] - caught)}"


def test_the_real_allowed_passes_every_check() -> None:
    """The premise of the mutation test: unmutated, no check fails."""
    for check in _checks(cases()).values():
        check()
