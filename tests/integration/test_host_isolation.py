"""C-ACC-04 (CSF PR.AC-5): no zone reaches the Docker host (issue 9 item 10).

Each zone's bridge address (.1) is the host's, outside the fw's path, and with the weak host model
a packet that enters the host from a lab bridge reaches every host address. The test starts a
TCP and UDP listener on the host itself (all IPv4 and IPv6 addresses, a random high port) and a
throw-away container in every zone (the trainee's container: Docker's default capabilities, IPv6
left on so that it can use the bridges' link-local addresses). From each zone it tries:

- own-gateway, own-gateway-v6: its own bridge's IPv4 address and IPv6 link-local address (TCP, UDP,
  ICMP echo): straight to the host's INPUT;
- other-gateway-via-bridge, docker0, primary, primary-v6: another zone's bridge address, docker0's
  address and the host's primary IPv4 and IPv6 addresses, routed to its own bridge (what a container
  that crafts frames to the bridge's MAC gets): the host's INPUT again;
- other-gateway-via-fw: another zone's bridge address along its default route, through the fw;
- published-port: a port that a container outside the lab (another lab's, say) publishes on the
  host's primary address, routed to its own bridge: Docker DNATs it towards that container.

Each must time out: "dropped", not refused (an RST means the host answered) and not answered; the
fw logs the one it drops, the host's INPUT rules (and its DOCKER-USER rule for the published port)
count the others, and the listener hears nobody from the lab. The positive twin: the same listener
(and the published port) answers each address from the host itself, so "dropped" means blocked,
not "nothing listening". Probes aim only at the Docker host's own addresses; the containers carry
the lab's label and are removed at the end.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from pacslab.docker import docker
from pacslab.engine import run_playbook
from pacslab.plan import WORKLOAD_SYSCTLS, Attachment, ContainerPlan, Plan
from pacslab.probes import segmentation as seg
from pacslab.probes import standins
from pacslab.probes.agent import BANNER
from pacslab.topology import Lab, Zone, load_lab

pytestmark = pytest.mark.control("C-ACC-04")

PROBE_TIMEOUT = 2.0  # seconds without an answer that count as "dropped"
LOG_DEADLINE = 10.0  # seconds within which the fw's drop must be in its NFLOG log
LISTENER = "docker-host"  # the name in the listener's banner: the agent reports open:docker-host
FW_HOST_PREFIX = "pacslab host "  # the fw's log prefix for a drop towards the host (pacslab.firewall)
# target -> protocols tried from every zone
TARGETS: dict[str, tuple[str, ...]] = {
    "own-gateway": ("tcp", "udp", "icmp"),
    "own-gateway-v6": ("tcp", "udp", "icmp"),
    "other-gateway-via-bridge": ("tcp", "udp"),
    "docker0": ("tcp", "udp"),
    "primary": ("tcp", "udp"),
    "primary-v6": ("tcp", "udp"),
    "other-gateway-via-fw": ("tcp", "udp"),
    "published-port": ("tcp", "udp"),
}
PUBLISHED = "published-port"  # the name in the published container's banner
THROUGH_FW = {"other-gateway-via-fw"}
IPV6_TARGETS = {"own-gateway-v6", "primary-v6"}


@dataclass(frozen=True)
class HostCase:
    zone: str
    target: str
    proto: str

    @property
    def id(self) -> str:
        return f"{self.zone}-{self.target}-{self.proto}"


def host_cases(lab: Lab) -> list[HostCase]:
    return [HostCase(z, t, p) for z in lab.zones for t, protos in TARGETS.items() for p in protos]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "host_case" in metafunc.fixturenames:
        cases = host_cases(load_lab(metafunc.config.getoption("--lab")))
        metafunc.parametrize("host_case", cases, ids=[c.id for c in cases])


# ------------------------------------------------------------------------------------------------
# The host side: its addresses, the listener, the INPUT rules' counters


def ip_json(*args: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True).stdout)
    return out


def addresses_of(dev: str, family: str, scope: str) -> list[str]:
    (link,) = ip_json("addr", "show", "dev", dev)
    return [a["local"] for a in link["addr_info"] if a["family"] == family and a["scope"] == scope]


@dataclass(frozen=True)
class HostAddresses:
    """The Docker host's addresses, read with `ip -j` at test time."""

    bridge_v6: dict[str, str]  # zone -> its bridge's IPv6 link-local address
    bridge_mac: dict[str, str]  # zone -> its bridge's MAC address
    docker0: str
    primary: str  # the IPv4 address of the interface that holds the default route
    primary_v6: str | None  # the global IPv6 address of the interface that holds the IPv6 default route

    @classmethod
    def read(cls, lab: Lab) -> HostAddresses:
        (dev4,) = {r["dev"] for r in ip_json("-4", "route", "show", "default")}
        dev6 = {r["dev"] for r in ip_json("-6", "route", "show", "default")}
        global6 = [a for d in sorted(dev6) for a in addresses_of(d, "inet6", "global")]
        return cls(
            bridge_v6={z.name: addresses_of(z.bridge, "inet6", "link")[0] for z in lab.zones.values()},
            bridge_mac={z.name: ip_json("link", "show", "dev", z.bridge)[0]["address"] for z in lab.zones.values()},
            docker0=addresses_of("docker0", "inet", "global")[0],
            primary=addresses_of(dev4, "inet", "global")[0],
            primary_v6=global6[0] if global6 else None,
        )


class HostListener:
    """TCP and UDP on one random high port of every IPv4 and IPv6 address of the host (dual-stack
    sockets on ::). Each TCP connect gets the banner, each datagram is answered with it; every peer
    is recorded."""

    def __init__(self) -> None:
        self.tcp = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True)
        self.port = int(self.tcp.getsockname()[1])
        self.udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.udp.bind(("::", self.port))
        self.banner = BANNER + LISTENER.encode() + b"\n"
        self.peers: list[str] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._serve_tcp, daemon=True), threading.Thread(target=self._serve_udp, daemon=True)]
        for t in self.threads:
            t.start()

    def _serve_tcp(self) -> None:
        self.tcp.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                conn, peer = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.peers.append(peer[0])
            with conn:
                conn.sendall(self.banner)

    def _serve_udp(self) -> None:
        """Answer from the address the datagram was sent to (IPV6_PKTINFO, which Linux also gives
        for IPv4 as a mapped address): a wildcard socket would otherwise pick its own source, and
        the client's connected socket would discard the answer."""
        self.udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        self.udp.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                _, ancillary, _, peer = self.udp.recvmsg(2048, socket.CMSG_SPACE(20))
            except TimeoutError:
                continue
            except OSError:
                return
            self.peers.append(peer[0])
            pktinfo = [(lvl, kind, data) for lvl, kind, data in ancillary if (lvl, kind) == (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO)]
            self.udp.sendmsg([self.banner], pktinfo, 0, peer)

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=5)
        self.tcp.close()
        self.udp.close()


# the lab's drop rules whose counters the test reads: name -> (command, chain)
DROP_RULES = {"iptables": ("iptables", "INPUT"), "ip6tables": ("ip6tables", "INPUT"), "DOCKER-USER": ("iptables", "DOCKER-USER")}


def drop_rule_packets(command: str, chain: str, comment: str) -> int | None:
    """Packets counted by the lab's DROP rule in a chain (`<command> -v -S <chain>`: the rule's
    -c PACKETS BYTES); None when the chain holds no DROP rule with the lab's comment."""
    out = subprocess.run([command, "-v", "-S", chain], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        tokens = shlex.split(line)
        pairs = list(zip(tokens, tokens[1:], strict=False))
        if ("--comment", comment) in pairs and ("-j", "DROP") in pairs and "-c" in tokens:
            return int(tokens[tokens.index("-c") + 1])
    return None


def gain(before: int | None, after: int | None) -> int | None:
    return None if before is None or after is None else after - before


# ------------------------------------------------------------------------------------------------
# The zone side: one throw-away container per zone


def free_address(lab: Lab, zone: Zone) -> str:
    """The highest address of the zone that no host, router, probe or gateway holds."""
    taken = {zone.gateway, zone.router, zone.probe} | {h.address for h in lab.hosts.values() if h.address is not None}
    return str(next(a for a in reversed(list(zone.subnet.hosts())) if a not in taken))


def prober_plans(lab: Lab, plan: Plan) -> list[ContainerPlan]:
    """Tools-image containers with the lab's label, its workload sysctls plus IPv6 on, no NET_ADMIN."""
    v6_on = {"net.ipv6.conf.all.disable_ipv6": "0", "net.ipv6.conf.default.disable_ipv6": "0"}
    return [
        ContainerPlan(
            name=f"{lab.prefix}-hostprobe-{z.name}",
            host=f"hostprobe-{z.name}",
            image=plan.tools_image,
            networks=[Attachment(lab.network_name(z.name), free_address(lab, z))],
            router=str(z.router),
            sysctls=dict(WORKLOAD_SYSCTLS) | v6_on,
            command=["python3", "-c", standins.AGENT, "listen", f"hostprobe-{z.name}"],
            role="standin",
        )
        for z in lab.zones.values()
    ]


def others(lab: Lab, zone: str) -> tuple[Zone, Zone]:
    """The next zone (reached through the fw) and the one after (reached through the own bridge)."""
    names = list(lab.zones)
    i = names.index(zone)
    return lab.zones[names[(i + 1) % len(names)]], lab.zones[names[(i + 2) % len(names)]]


def target_address(lab: Lab, host: HostAddresses, case: HostCase, side: str) -> str | None:
    """The address a case aims at, as the zone's container (side "zone") or the host itself ("host")
    writes it: a link-local address carries the interface (eth0 in the container, the bridge on the host)."""
    zone = lab.zones[case.zone]
    via_fw, via_bridge = others(lab, case.zone)
    return {
        "own-gateway": str(zone.gateway),
        "own-gateway-v6": f"{host.bridge_v6[zone.name]}%{'eth0' if side == 'zone' else zone.bridge}",
        "other-gateway-via-bridge": str(via_bridge.gateway),
        "docker0": host.docker0,
        "primary": host.primary,
        "primary-v6": host.primary_v6,
        "other-gateway-via-fw": str(via_fw.gateway),
        "published-port": host.primary,
    }[case.target]


def route_to_own_bridge(lab: Lab, plan: Plan, host: HostAddresses, container: ContainerPlan, zone: Zone) -> None:
    """Host routes through the zone's own bridge, set from outside (a helper with NET_ADMIN in the
    container's namespace, as lab_provision sets default routes); then wait for IPv6 DAD.

    The bridge's MAC goes into the neighbour table by hand: the host drops the container's IPv6
    neighbour solicitations too, and a container that crafts frames needs none (ARP, which
    iptables does not see, tells it the MAC anyway). So the IPv6 probes do reach the host's INPUT."""
    _, via_bridge = others(lab, zone.name)
    gw, ll = str(zone.gateway), host.bridge_v6[zone.name]
    script = [f"ip route replace {a}/32 via {gw}" for a in (str(via_bridge.gateway), host.docker0, host.primary)]
    script.append(f"ip -6 neigh replace {ll} lladdr {host.bridge_mac[zone.name]} dev eth0 nud permanent")
    if host.primary_v6:
        script.append(f"ip -6 route replace {host.primary_v6}/128 via {ll} dev eth0")
    script.append("for i in $(seq 100); do ip -6 addr show dev eth0 tentative | grep -q inet6 || exit 0; sleep 0.1; done; exit 1")
    docker("run", "--rm", "--network", f"container:{container.name}", "--cap-add", "NET_ADMIN", plan.tools_image,
           "sh", "-ec", "\n".join(script), timeout=120)


def host_probe(targets: list[dict[str, object]]) -> dict[str, str]:
    """The agent's connect run on the Docker host itself (the positive twin)."""
    out = subprocess.run([sys.executable, "-c", standins.AGENT, "connect", str(PROBE_TIMEOUT)], input=json.dumps(targets),
                         capture_output=True, text=True, check=True, timeout=120)
    result: dict[str, str] = json.loads(out.stdout)
    return result


@dataclass
class HostRun:
    host: HostAddresses
    outcomes: dict[str, str]  # case id -> outcome from the zone's container
    twins: dict[str, str]  # case id -> outcome from the host itself
    counted: dict[str, int | None]  # DROP_RULES key -> packets that rule gained during the run (None: no rule)
    log: list[dict[str, object]]
    peers: list[str]  # every address the listener heard from
    sources: dict[str, str]  # zone -> its container's address
    port: int  # the listener's port
    cases: list[HostCase]


@pytest.fixture(scope="module")
def host_run(running_lab: Lab, plan: Plan, state: Path, own_devices: Callable[[str, list[str]], None]) -> Iterator[HostRun]:
    lab = running_lab
    host = HostAddresses.read(lab)
    cases = [c for c in host_cases(lab) if c.target != "primary-v6" or host.primary_v6]
    probers = prober_plans(lab, plan)
    own_devices("the host isolation check's probe containers", [c.networks[0].ipv4_address for c in probers])
    listener = HostListener()
    published = f"{lab.prefix}-hostprobe-published"
    try:
        ports = publish(lab, plan, host, published)
        started = run_playbook(lab, replace(plan, containers=probers, volumes=[]), "standins.yml", state, quiet=True)
        assert started.ok, f"probe containers failed: {started.failures}"
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda c: route_to_own_bridge(lab, plan, host, c[0], c[1]), zip(probers, lab.zones.values(), strict=True)))

        def target(case: HostCase, side: str) -> dict[str, object]:
            port = ports[case.proto] if case.target == "published-port" else listener.port
            return {"id": case.id, "addr": target_address(lab, host, case, side), "port": port, "proto": case.proto}

        twins = host_probe([target(c, "host") for c in cases])
        peers_before = len(listener.peers)

        offset = standins.drop_log_mark(lab)
        before = {k: drop_rule_packets(*where, plan.docker_user_comment) for k, where in DROP_RULES.items()}
        by_zone = {z: [target(c, "zone") for c in cases if c.zone == z] for z in lab.zones}
        with ThreadPoolExecutor(max_workers=len(probers)) as pool:
            parts = pool.map(lambda p: standins.probe(p.name, by_zone[p.host.removeprefix("hostprobe-")], PROBE_TIMEOUT), probers)
            outcomes = {k: v for part in parts for k, v in part.items()}
        after = {k: drop_rule_packets(*where, plan.docker_user_comment) for k, where in DROP_RULES.items()}

        sources = {z: p.networks[0].ipv4_address for z, p in zip(lab.zones, probers, strict=True)}
        fw_cases = [c for c in cases if c.target in THROUGH_FW and c.proto != "icmp"]
        deadline = time.monotonic() + LOG_DEADLINE
        while True:
            entries = seg.parse_drop_log(standins.read_drop_log(lab, offset))
            if all(fw_logged(lab, c, sources, listener.port, entries) for c in fw_cases) or time.monotonic() > deadline:
                break
            time.sleep(1)
        counted = {k: gain(before[k], after[k]) for k in after}
        yield HostRun(host, outcomes, twins, counted, entries,
                      listener.peers[peers_before:], sources, listener.port, cases)
    finally:
        docker("rm", "-f", published, *(p.name for p in probers), check=False)
        listener.stop()


def publish(lab: Lab, plan: Plan, host: HostAddresses, name: str) -> dict[str, int]:
    """A container outside the lab's zones (on docker0, like another lab's service) that publishes
    TCP and UDP 7000 on the host's primary address, on ports Docker picks; proto -> host port."""
    docker("run", "-d", "--name", name, "--label", f"pacslab.lab={lab.name}", "--label", "pacslab.role=standin",
           "-p", f"{host.primary}::7000/tcp", "-p", f"{host.primary}::7000/udp", plan.tools_image,
           "python3", "-c", standins.AGENT, "listen", PUBLISHED, "--tcp", "7000", "--udp", "7000")
    deadline = time.monotonic() + 30
    while "listening" not in docker("logs", name, check=False).stdout:
        assert time.monotonic() < deadline, f"{name} is not listening after 30 s"
        time.sleep(0.5)
    ports = json.loads(docker("inspect", "-f", "{{json .NetworkSettings.Ports}}", name).stdout)
    return {proto: int(ports[f"7000/{proto}"][0]["HostPort"]) for proto in ("tcp", "udp")}


def fw_logged(lab: Lab, case: HostCase, sources: dict[str, str], port: int, entries: list[dict[str, object]]) -> dict[str, object] | None:
    """The fw's NFLOG entry for a case it drops on the way to another zone's gateway."""
    dst = str(others(lab, case.zone)[0].gateway)
    proto = {"tcp": 6, "udp": 17}[case.proto]
    for e in entries:
        if (e.get("src_ip"), e.get("dest_ip"), e.get("ip.protocol"), e.get("dest_port"), e.get("oob.prefix")) == (
            sources[case.zone], dst, proto, port, FW_HOST_PREFIX
        ):
            return e
    return None


# ------------------------------------------------------------------------------------------------
# The checks


def test_a_zone_does_not_reach_the_docker_host(host_case: HostCase, host_run: HostRun, running_lab: Lab, evidence) -> None:
    """Dropped: no answer within the timeout. "refused" (an RST or port unreachable from the host)
    and "open:docker-host" (the listener's banner) both fail."""
    if host_case.target == "primary-v6" and host_run.host.primary_v6 is None:
        pytest.skip("the Docker host has no global IPv6 address")
    outcome = host_run.outcomes[host_case.id]
    dst = target_address(running_lab, host_run.host, host_case, "zone")
    evidence.update(src=host_run.sources[host_case.zone], dst=dst, proto=host_case.proto, outcome=outcome)
    assert outcome == "dropped", f"{host_case.id}: {dst} must be dropped on the way to the Docker host, got {outcome}"
    if host_case.target in THROUGH_FW:
        entry = fw_logged(running_lab, host_case, host_run.sources, host_run.port, host_run.log)
        evidence.update(nflog={k: entry[k] for k in ("timestamp", "oob.prefix", "src_ip", "dest_ip", "dest_port")} if entry else None)
        assert entry is not None, f"{host_case.id}: the fw did not log its drop towards {dst} with prefix {FW_HOST_PREFIX!r}"


def test_the_same_listener_answers_the_host_itself(host_case: HostCase, host_run: HostRun, running_lab: Lab, evidence) -> None:
    """The positive twin: from the host, every address the zones tried answers (TCP and UDP with the
    listener's banner, ICMP with an echo reply)."""
    if host_case.target == "primary-v6" and host_run.host.primary_v6 is None:
        pytest.skip("the Docker host has no global IPv6 address")
    outcome = host_run.twins[host_case.id]
    expected = "open:echo-reply" if host_case.proto == "icmp" else f"open:{PUBLISHED if host_case.target == 'published-port' else LISTENER}"
    evidence.update(dst=target_address(running_lab, host_run.host, host_case, "host"), outcome=outcome)
    assert outcome == expected, f"{host_case.id}: from the host itself, expected {expected}, got {outcome}"


@pytest.mark.parametrize("rule", list(DROP_RULES))
def test_the_host_drop_rule_counted_every_probe(rule: str, host_run: HostRun, evidence) -> None:
    """The drops are the lab's host rules' (roles/docker_host): during the run each rule's counter
    gained at least one packet per probe it stands in the way of (TCP retries add more): INPUT for
    IPv4 and IPv6 towards the host's addresses, DOCKER-USER for the published port."""
    def stopped_by(case: HostCase) -> str | None:
        if case.target in THROUGH_FW:
            return None
        if case.target == "published-port":
            return "DOCKER-USER"
        return "ip6tables" if case.target in IPV6_TARGETS else "iptables"

    sent = [c for c in host_run.cases if stopped_by(c) == rule]
    gained = host_run.counted[rule]
    evidence.update(probes=len(sent), packets=gained)
    assert sent, f"no probe meets the {rule} rule"
    assert gained is not None, f"{' '.join(DROP_RULES[rule])} holds no DROP rule with the lab's comment"
    assert gained >= len(sent), f"{rule}: the lab's rule counted {gained} packets for {len(sent)} probes"


def test_the_host_listener_heard_nobody_from_the_lab(host_run: HostRun, running_lab: Lab, evidence) -> None:
    """Seen from the host: while the zones probed, no lab address (nor a link-local one) reached the listener."""
    heard = sorted(set(host_run.peers))
    evidence.update(heard=heard)
    lab_peers = [p for p in heard if ipaddress.ip_address(p.split("%")[0].removeprefix("::ffff:")) in running_lab.address_space
                 or ipaddress.ip_address(p.split("%")[0]).is_link_local]
    assert lab_peers == [], f"the host's listener answered {lab_peers}"
