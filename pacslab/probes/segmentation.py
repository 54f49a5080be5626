"""The segmentation matrix (C-ACC-04, CSF PR.AC-5): what must pass the fw, and what must not.

Everything is derived from the lab definition:
- allow cases: every source x destination x port of every flow, from a container at the source's
  address to a listener at the destination's address;
- deny cases: every ordered zone pair x the sensitive ports, plus every flow's port from every zone
  that the flow does not allow; each must be dropped (no answer) and logged by the fw;
- egress cases: from every zone to an address of the lab's address space that no zone holds.

Hosts that are planned (not deployed yet) are played by stand-in containers at their own address
(pacslab.probes.standins); so are each zone's probe addresses. Probes aim only at lab addresses.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from ..firewall import PREFIX_DENY, PREFIX_EGRESS
from ..topology import Endpoint, Flow, Host, Lab

# ports that must never cross a zone boundary unless a flow says so (issue: foundation)
SENSITIVE_TCP_PORTS = (22, 104, 443, 2575, 2762, 4242, 5432, 8042, 11112)
# ports tried for a flow that allows any port (e.g. the vulnerability scanner)
ANY_PORT_SAMPLE = (22, 2762, 8042)


@dataclass(frozen=True)
class Peer:
    """One end of a probe: a container (by the host or zone it plays) and its address."""

    name: str  # host name, or zone:<zone> for the zone's probe address
    zone: str
    address: str


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # allow | deny | egress
    src: Peer
    dst: Peer
    proto: str
    port: int
    flow: str | None = None

    @property
    def log_prefix(self) -> str:
        return PREFIX_EGRESS if self.kind == "egress" else PREFIX_DENY


def host_peer(host: Host) -> Peer:
    assert host.zone is not None and host.address is not None
    return Peer(host.name, host.zone, str(host.address))


def zone_peer(lab: Lab, zone: str) -> Peer:
    return Peer(f"zone:{zone}", zone, str(lab.zones[zone].probe))


def endpoint_peer(lab: Lab, ep: Endpoint) -> Peer:
    return zone_peer(lab, ep.name) if ep.kind == "zone" else host_peer(lab.hosts[ep.name])


def _covers(lab: Lab, ep: Endpoint, address: str) -> bool:
    if ep.kind == "zone":
        return ipaddress.IPv4Address(address) in lab.zones[ep.name].subnet
    return str(lab.hosts[ep.name].address) == address


def allowed(lab: Lab, src: str, dst: str, proto: str, port: int) -> Flow | None:
    """The flow that lets src reach dst:port/proto, if any (the fw's accept rules, as data)."""
    for flow in lab.flows:
        if flow.proto not in (proto, "any"):
            continue
        if flow.ports is not None and port not in flow.ports:
            continue
        if _covers(lab, flow.dest, dst) and any(_covers(lab, s, src) for s in flow.sources):
            return flow
    return None


def outside_address(lab: Lab) -> str:
    """An address of the lab's address space that no zone holds (never an address outside the lab)."""
    for net in lab.address_space.subnets(new_prefix=max(lab.address_space.prefixlen, 24)):
        if not any(net.overlaps(z.subnet) for z in lab.zones.values()):
            return str(net.network_address + 10)
    raise ValueError(f"every /24 of {lab.address_space} belongs to a zone: no unallocated lab address to probe")


def _ports(flow: Flow) -> list[tuple[str, int]]:
    if flow.ports is None:
        return [("tcp", p) for p in ANY_PORT_SAMPLE]
    return [(flow.proto, p) for p in flow.ports]


def build_cases(lab: Lab) -> list[Case]:
    cases: dict[str, Case] = {}

    def add(case: Case) -> None:
        cases.setdefault(case.id, case)

    for flow in lab.flows:
        dst = endpoint_peer(lab, flow.dest)
        for src_ep in flow.sources:
            src = endpoint_peer(lab, src_ep)
            for proto, port in _ports(flow):
                add(Case(f"allow-{flow.id}-{src.name}-{dst.name}-{proto}{port}", "allow", src, dst, proto, port, flow.id))

    zones = list(lab.zones)
    deny_targets: list[tuple[Peer, str, int]] = []
    for zd in zones:
        deny_targets += [(zone_peer(lab, zd), "tcp", p) for p in SENSITIVE_TCP_PORTS]
    for flow in lab.flows:
        dst = endpoint_peer(lab, flow.dest)
        deny_targets += [(dst, proto, port) for proto, port in _ports(flow)]
    for host in lab.hosts.values():
        if not host.is_router:
            deny_targets += [(host_peer(host), "tcp", p) for p in SENSITIVE_TCP_PORTS]
    # Sources: each zone's probe address (a device nobody enrolled), and every host that some flow
    # names as a source, so that a rule letting the wrong host through (mod-ct -> vna:2762,
    # vendor-eng -> pacs:22) is caught. To the fw, a host that no flow names is indistinguishable
    # from its zone's probe address, so it needs no sweep of its own.
    named = {ep.name for f in lab.flows for ep in f.sources if ep.kind == "host"}
    sources = [zone_peer(lab, z) for z in zones] + [host_peer(lab.hosts[h]) for h in sorted(named)]
    for dst, proto, port in deny_targets:
        for src in sources:
            if src.zone == dst.zone:
                continue  # inside a zone, traffic never reaches the fw
            if allowed(lab, src.address, dst.address, proto, port):
                continue
            add(Case(f"deny-{src.name}-{dst.name}-{proto}{port}", "deny", src, dst, proto, port))

    outside = outside_address(lab)
    for zs in zones:
        src = zone_peer(lab, zs)
        add(Case(f"egress-{src.name}-tcp443", "egress", src, Peer("outside", "", outside), "tcp", 443))
    return list(cases.values())


def listeners(cases: list[Case]) -> dict[Peer, dict[str, set[int]]]:
    """Per destination peer, the TCP and UDP ports a stand-in must answer on."""
    out: dict[Peer, dict[str, set[int]]] = {}
    for c in cases:
        if c.kind == "egress":
            continue
        ports = out.setdefault(c.dst, {"tcp": set(SENSITIVE_TCP_PORTS), "udp": set()})
        ports[c.proto].add(c.port)
    return out


def parse_drop_log(text: str) -> list[dict[str, object]]:
    """ulogd2 JSON lines -> dicts; torn last lines (still being written) are skipped."""
    entries = []
    for line in text.splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


def logged(case: Case, entries: list[dict[str, object]]) -> dict[str, object] | None:
    """The fw's NFLOG entry for a denied case: same source, destination, protocol, port and reason."""
    proto = {"tcp": 6, "udp": 17}[case.proto]
    for e in entries:
        if (
            e.get("src_ip") == case.src.address
            and e.get("dest_ip") == case.dst.address
            and e.get("dest_port") == case.port
            and e.get("ip.protocol") == proto
            and e.get("oob.prefix") == case.log_prefix
        ):
            return e
    return None
