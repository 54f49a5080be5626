"""C-ACC-04: only the fw routes. Workloads hold no NET_ADMIN, publish no port, forward nothing,
and a source address forged from another zone is dropped by the fw's reverse-path check."""

from __future__ import annotations

import subprocess
import time

import pytest

from pacslab.docker import docker, lab_objects
from pacslab.firewall import PREFIX_SPOOF
from pacslab.probes import segmentation as seg
from pacslab.probes import standins
from pacslab.topology import Host, Lab

pytestmark = pytest.mark.control("C-ACC-04")


def _containers(lab: Lab) -> list[dict]:
    return lab_objects("container", lab.name)


def forgery(lab: Lab) -> tuple[Host, Host, int, str]:
    """A source address worth forging, from the lab's flows: a deployed host that a TCP flow lets
    reach another deployed host (its address, the destination, the port), and a third zone to
    forge it from, so that only the fw's reverse-path check can stop it (the flow would let it
    through). Reference lab: mod-ct -> pacs:2762 (F01), forged from the enterprise zone."""
    for flow in lab.flows:
        if flow.proto != "tcp" or flow.ports is None or flow.dest.kind != "host" or not lab.hosts[flow.dest.name].deployed:
            continue
        for src in flow.sources:
            if src.kind == "host" and lab.hosts[src.name].deployed:
                host, target = lab.hosts[src.name], lab.hosts[flow.dest.name]
                zone = next(z for z in lab.zones if z not in (host.zone, target.zone))
                return host, target, flow.ports[0], zone
    raise AssertionError("no flow between two deployed hosts to forge")


def test_only_the_fw_holds_net_admin(running_lab: Lab, segmentation, evidence) -> None:
    caps = {c["Name"].lstrip("/"): c["HostConfig"]["CapAdd"] or [] for c in _containers(running_lab)}
    evidence.update(capabilities=caps)
    fw = running_lab.container_name(running_lab.router.name)
    assert "NET_ADMIN" in caps[fw] or "CAP_NET_ADMIN" in caps[fw]
    holders = sorted(n for n, c in caps.items() if n != fw and {"NET_ADMIN", "CAP_NET_ADMIN", "ALL"} & set(c))
    assert holders == [], f"workloads holding NET_ADMIN: {holders}"
    assert not [c["Name"] for c in _containers(running_lab) if c["HostConfig"].get("Privileged")]


def test_no_port_is_published_outside_the_dmz(running_lab: Lab, evidence) -> None:
    exposed_hosts = {h.name for h in running_lab.hosts.values() if h.zone and running_lab.zones[h.zone].exposed}
    published = {
        c["Config"]["Labels"].get("pacslab.host"): sorted(c["HostConfig"].get("PortBindings") or {})
        for c in _containers(running_lab)
    }
    evidence.update(published=published)
    offenders = {h: p for h, p in published.items() if p and h not in exposed_hosts}
    assert offenders == {}, f"published ports outside the exposed zone: {offenders}"
    for host in running_lab.deployed_hosts():
        if host.name in exposed_hosts:
            assert published.get(host.name) == sorted(f"{p}/tcp" for p in host.publish)


@pytest.mark.parametrize("zone", ["first", "last"])
def test_a_workload_cannot_change_its_route(running_lab: Lab, segmentation, zone: str) -> None:
    """A stand-in is provisioned exactly like a workload: its attempt to re-route (to its zone's
    Docker bridge, the way out of the lab) is refused, and its route still leads to the fw."""
    name_of_zone = list(running_lab.zones)[0 if zone == "first" else -1]
    z = running_lab.zones[name_of_zone]
    name = standins.container_for(running_lab, seg.zone_peer(running_lab, name_of_zone))
    proc = docker("exec", name, "ip", "route", "replace", "default", "via", str(z.gateway), check=False)
    assert proc.returncode != 0 and "Operation not permitted" in proc.stderr, proc.stderr
    route = docker("exec", name, "ip", "route", "show", "default").stdout
    assert f"via {z.router} " in route


def test_only_the_fw_forwards(running_lab: Lab, segmentation, evidence) -> None:
    values = {}
    for c in _containers(running_lab):
        name = c["Name"].lstrip("/")
        values[name] = docker("exec", name, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip()
    evidence.update(ip_forward=values)
    fw = running_lab.container_name(running_lab.router.name)
    assert values.pop(fw) == "1"
    assert set(values.values()) <= {"0"}, values


def test_forged_source_from_another_zone_is_dropped_and_logged(running_lab: Lab, plan, segmentation, evidence) -> None:
    """From a third zone, forge the address of a host that a flow lets reach a target (reference
    lab: mod-ct -> pacs:2762, F01): without the reverse-path check the fw would forward it."""
    lab = running_lab
    owner, dest, port, zone = forgery(lab)
    forged = owner.address
    target = seg.host_peer(dest)
    assert seg.allowed(lab, str(forged), target.address, "tcp", port) is not None, f"premise: a flow allows {owner.name} -> {dest.name}:{port}"
    src = standins.container_for(lab, seg.zone_peer(lab, zone))
    helper = ["docker", "run", "--rm", "--network", f"container:{src}", "--cap-add", "NET_ADMIN", plan.tools_image]
    subprocess.run([*helper, "ip", "addr", "add", f"{forged}/32", "dev", "eth0"], check=True, capture_output=True)
    try:
        offset = standins.drop_log_mark(lab)
        outcome = standins.probe(src, [{"id": "spoof", "addr": target.address, "port": port, "proto": "tcp", "bind": str(forged)}])["spoof"]
        entries = []
        for _ in range(10):
            entries = [e for e in seg.parse_drop_log(standins.read_drop_log(lab, offset)) if e.get("oob.prefix") == PREFIX_SPOOF]
            if entries:
                break
            time.sleep(1)
    finally:
        subprocess.run([*helper, "ip", "addr", "del", f"{forged}/32", "dev", "eth0"], check=False, capture_output=True)
    evidence.update(forged=f"{owner.name} {forged} from zone {zone}", target=f"{dest.name} {target.address}:{port}")
    evidence.update(outcome=outcome, nflog=entries[:1])
    assert outcome == "dropped", f"forged {forged} -> {target.address}:{port} was not dropped: {outcome}"
    assert any(e.get("src_ip") == str(forged) and e.get("dest_ip") == target.address for e in entries)
