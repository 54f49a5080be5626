"""Devices seen by the fw or found by the scanner that the lab definition does not expect there
(issue 13, roles/siem/files/rules/devices.yml): unknown-device (C-AST-01) and device-anomaly (C-DET-05).

The fw logs every packet it drops; the siem enriches each with the host that has its source
address and the zone whose subnet holds it. A rogue container plugged into the modality zone at an
address no host has raises unknown-device; the CT trying the VNA raises device-anomaly about it
and no unknown-device; a workstation doing the same raises neither (its zone is not a modality's).
A rogue that stays silent is found only by the scanner's sweeps (roles/scanner), which
`pacslab discovery` also reconciles with the lab definition both ways.
Markers: this run's source ports, and the rogue's address and name.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pacslab import discovery, response
from pacslab.docker import docker
from pacslab.plan import LABEL_LAB, LABEL_ROLE, Plan
from pacslab.probes import imaging as im
from pacslab.probes import portscan
from pacslab.topology import REPO_ROOT, Host, Lab

from .test_response import CONTAINED_WITHIN, modalities, pacs, scanner, vna, wait
from .test_siem import WAIT, evaluated_after, siem_json, sources, utc_now, wait_for

RUN = secrets.token_hex(3)
BASE = 22000 + secrets.randbelow(90) * 100  # source ports of this run, below the ephemeral range (32768-60999)


def drops_from(lab: Lab, address: str, source: int) -> list[dict[str, Any]]:
    return [e for e in siem_json(lab, "events", "--contains", f'"src_port": {source},')
            if e["event_type"] == "fw-drop" and e["src_ip"] == address]


def alerts_holding(lab: Lab, rule: str, event_id: int) -> list[dict[str, Any]]:
    return [a for a in siem_json(lab, "alerts") if a["rule"] == rule and event_id in a["events"]]


def modality(lab: Lab) -> Host:
    return modalities(lab)[0]


@contextlib.contextmanager
def plugged_in(lab: Lab, plan: Plan, zone_name: str, image: str | None = None) -> Iterator[tuple[str, str]]:
    """A container of the tools image (or ``image``) on the zone's network at an address no host of the lab
    definition has (labelled as the lab's, so `pacslab down` removes it if this check cannot):
    (its name, its address). It has the fw as its default route, as a device set up for its zone
    (a DHCP lease would give it that) has: it answers what reaches it from another zone, and
    reaches the fw's other zones. The route is set from outside (a helper in its network
    namespace with NET_ADMIN, as roles/lab_provision does), the rogue holds no capability. Removed
    afterwards, and its address released from the fw's quarantine, where unknown-device put it
    (C-RSP-02), once the siem has weighed everything the rogue sent."""
    zone = lab.zones[zone_name]
    taken = {str(h.address) for h in lab.hosts.values() if h.address} | {str(zone.router)}
    address = next(str(a) for a in list(zone.subnet.hosts())[199:249] if str(a) not in taken)
    name = f"{lab.prefix}-rogue-{RUN}-{zone_name}"
    docker("run", "-d", "--name", name, "--label", f"{LABEL_LAB}={lab.name}", "--label", f"{LABEL_ROLE}=standin",
           "--network", lab.network_name(zone.name), "--ip", address, "--cap-drop", "ALL", image or plan.tools_image, "sleep", "600")
    try:
        docker("run", "--rm", "--network", f"container:{name}", "--cap-add", "NET_ADMIN", plan.tools_image,
               "ip", "route", "replace", "default", "via", str(zone.router))
        yield name, address
    finally:
        docker("rm", "-f", name, check=False)
        response.release_when_settled(lab, address, "check done: the rogue device is gone", by="pacslab-tests")


@pytest.mark.control("C-AST-01")
@pytest.mark.control("C-RSP-02")
def test_a_rogue_device_in_the_modality_zone_raises_unknown_device_and_is_quarantined(running_lab: Lab, routed_rogue: tuple[str, str],
                                                                                     evidence) -> None:
    """The rogue knocks on the fw's address in its zone and tries the PACS's DICOM port: the fw
    drops both (no flow names it; the PACS's SYN goes unanswered) and the siem stores the knock with
    no src_host and src_zone modality, and raises unknown-device (high) about the address and its
    zone. The alert quarantines the address (the fw pulls the siem's decision, C-RSP-02) within
    30 s: the rogue's next SYN to the PACS is answered by the fw with a reset and logged as the
    quarantine's."""
    lab = running_lab
    name, address = routed_rogue
    zone, target = modality(lab).zone, pacs(lab)
    dicom = target.dicom_port
    assert portscan.scan_in(name, str(lab.zones[zone].router), (22,), BASE) == ["unanswered"]
    assert portscan.scan_in(name, str(target.address), (dicom,), BASE + 1) == ["unanswered"]
    drop = wait_for("the rogue's drop", lambda: drops_from(lab, address, BASE))[0]
    alert = wait_for("unknown-device", lambda: alerts_holding(lab, "unknown-device", drop["id"]))[0]
    held = wait(f"quarantine of {address}", CONTAINED_WITHIN, lambda: response.quarantined(lab).get(address))
    answered = portscan.scan_in(name, str(target.address), (dicom,), BASE + 2)
    quarantined = wait_for("the fw's log of the quarantined SYN", lambda: drops_from(lab, address, BASE + 2))[0]
    evidence.update(rogue=address, drop={k: drop[k] for k in ("id", "outcome", "src_host", "src_zone")}, alert=alert, held=held,
                    answered=answered, quarantined={k: quarantined[k] for k in ("outcome", "dst_ip", "dst_port")})
    assert (drop["outcome"], drop["src_host"], drop["src_zone"]) == ("input", None, zone)
    assert (alert["severity"], alert["entities"]) == ("high", {"src_ip": address, "src_zone": zone})
    assert (held["host"], held["by"], held["reason"], held["enforced"]) == (
        "", "siem", f"siem alert {alert['id']}: unknown-device (no lab host has {address}, in the {zone} zone)", True)
    assert answered == ["refused"]
    assert (quarantined["outcome"], quarantined["dst_ip"], str(quarantined["dst_port"])) == ("quarantine", str(target.address), str(dicom))


@pytest.mark.control("C-DET-05")
def test_the_ct_trying_the_vna_raises_device_anomaly_and_not_unknown_device(running_lab: Lab, evidence) -> None:
    """The CT tries the VNA's SSH port: no flow of its baseline (the flow matrix) allows it, so the
    fw drops it (deny) and the siem raises device-anomaly (medium) about the CT, and no
    unknown-device (the CT is a host of the lab definition). A workstation tries the same: neither
    rule holds its drop. The CT tries again last: once device-anomaly holds that drop, the pass that
    took it saw the workstation's too."""
    lab = running_lab
    ct = modality(lab)
    target, workstation = vna(lab), scanner(lab, 1)
    tries = ((ct, BASE + 1), (workstation, BASE + 2), (ct, BASE + 3))
    for host, port in tries:
        assert portscan.scan(lab, host.name, str(target.address), (22,), port) == ["unanswered"]
    ct_drop, ws_drop, last = (wait_for(f"the drop from port {port}", lambda h=h, port=port: drops_from(lab, str(h.address), port))[0]
                              for h, port in tries)
    anomaly = wait_for("device-anomaly", lambda: alerts_holding(lab, "device-anomaly", ct_drop["id"]))[0]
    wait_for("device-anomaly on the last drop", lambda: alerts_holding(lab, "device-anomaly", last["id"]))
    evidence.update(ct_drop={k: ct_drop[k] for k in ("id", "outcome", "src_host", "src_zone")}, anomaly=anomaly,
                    workstation_drop={k: ws_drop[k] for k in ("id", "outcome", "src_host", "src_zone")})
    assert (ct_drop["outcome"], ct_drop["src_host"], ct_drop["src_zone"]) == ("deny", ct.name, ct.zone)
    assert (ws_drop["outcome"], ws_drop["src_host"], ws_drop["src_zone"]) == ("deny", workstation.name, workstation.zone)
    assert (anomaly["severity"], anomaly["entities"]) == ("medium", {"src_ip": str(ct.address), "src_host": ct.name})
    assert ws_drop["id"] < last["id"]
    assert alerts_holding(lab, "unknown-device", ct_drop["id"]) == []
    assert alerts_holding(lab, "device-anomaly", ws_drop["id"]) == []
    assert alerts_holding(lab, "unknown-device", ws_drop["id"]) == []


# A TLS session to the proxy's HTTPS port from a source port of the run (argv: address, port, source
# port): the handshake, one request, the answer's first line.
TLS_SESSION = r"""
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
raw = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20, source_address=("", int(sys.argv[3])))
with ctx.wrap_socket(raw) as conn:
    conn.sendall(b"GET /pacslab-passive-check HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n")
    print(conn.recv(200).split(b"\r\n", 1)[0].decode())
"""


def clinical_zone(lab: Lab) -> str:
    zones = {str(h.zone) for h in lab.deployed_hosts() if "workstations" in h.groups}
    if len(zones) != 1:
        pytest.skip(f"lab {lab.name!r} has no one zone of workstations")
    return zones.pop()


def sensor_records(lab: Lab, address: str, source: int) -> list[dict[str, Any]]:
    """The IDS sensor's TLS records of a connection from ``address`` and source port ``source``."""
    return [e for e in siem_json(lab, "events", "--contains", f'"src_port":{source},')
            if e["source"] == "suricata" and e["event_type"] == "ids-tls" and e["src_ip"] == address]


@pytest.mark.control("C-AST-01")
@pytest.mark.control("C-RSP-02")
def test_a_rogue_device_using_its_zones_flow_is_seen_by_the_ids_sensor_and_raises_unknown_device(running_lab: Lab, plan: Plan,
                                                                                               evidence) -> None:
    """Passive discovery by the sensor: a rogue in the workstations' zone (which no sweep covers)
    opens a TLS session to the proxy over the flow the whole zone has (F05a). The fw forwards it and
    drops nothing of it; the IDS sensor records the handshake (ids-tls, the rogue's address and
    source port, no host, the zone), and that record alone raises unknown-device (high) about the
    address and its zone, which has the fw quarantine it within 30 s: its next session is refused
    by the fw (a reset, logged as the quarantine's). `pacslab discovery` lists the address among
    what the sensor and the fw saw in the zone (exit 5). The twin: a workstation's same session is
    recorded by the sensor as its host's, held by no unknown-device alert and listed by nobody."""
    lab = running_lab
    zone = clinical_zone(lab)
    proxies = [h for h in lab.deployed_hosts() if "reverse_proxies" in h.groups]
    if not [h for h in lab.deployed_hosts() if "sensors" in h.groups] or not proxies:
        pytest.skip(f"lab {lab.name!r} deploys no IDS sensor or no reverse proxy")
    scanning(lab)  # `pacslab discovery` reconciles the sweeps and the passive finds together
    proxy_host = proxies[0]
    workstation = next(h for h in lab.deployed_hosts() if "workstations" in h.groups)
    target = (str(proxy_host.address), str(proxy_host.service("https").port))
    with plugged_in(lab, plan, zone) as (name, address):
        said = docker("exec", name, "python3", "-c", TLS_SESSION, *target, str(BASE + 10), timeout=60).stdout.strip()
        record = wait_for("the sensor's record of the rogue's handshake", lambda: sensor_records(lab, address, BASE + 10))[0]
        alert = wait_for("unknown-device holding it", lambda: alerts_holding(lab, "unknown-device", record["id"]))[0]
        held = wait(f"quarantine of {address}", CONTAINED_WITHIN, lambda: response.quarantined(lab).get(address))
        cut = docker("exec", name, "python3", "-c", TLS_SESSION, *target, str(BASE + 12), timeout=60, check=False)
        quarantined = wait_for("the fw's log of the quarantined session", lambda: drops_from(lab, address, BASE + 12))[0]
        dropped = drops_from(lab, address, BASE + 10)  # the drop log has reached the later drop: it holds none of the first session
    twin_said = im.exec_in(lab, workstation.name, "python3", "-c", TLS_SESSION, *target, str(BASE + 11)).strip()
    twin = wait_for("the sensor's record of the workstation's handshake", lambda: sensor_records(lab, str(workstation.address), BASE + 11))[0]
    evaluated_after(lab, utc_now())
    rc, reconciled = reconciliation(lab)
    seen = {s["address"]: s for r in reconciled["zones"] if r["zone"] == zone for s in r["seen"]}
    evidence.update(rogue=address, said=said, record={k: record[k] for k in ("id", "outcome", "src_host", "src_zone", "dst_ip")},
                    alert=alert, held=held, dropped=len(dropped), cut=cut.stderr.strip().splitlines()[-1:],
                    quarantined={k: quarantined[k] for k in ("outcome", "dst_ip", "dst_port")}, twin_said=twin_said,
                    twin={k: twin[k] for k in ("id", "src_host", "src_zone")}, seen=seen)
    assert said.startswith("HTTP/1.1 ") and twin_said.startswith("HTTP/1.1 "), (said, twin_said)
    assert (record["src_host"], record["src_zone"], record["dst_ip"]) == (None, zone, str(proxy_host.address))
    assert (alert["severity"], alert["entities"]) == ("high", {"src_ip": address, "src_zone": zone})
    assert dropped == []
    assert (held["host"], held["by"], held["reason"], held["enforced"]) == (
        "", "siem", f"siem alert {alert['id']}: unknown-device (no lab host has {address}, in the {zone} zone)", True)
    assert cut.returncode != 0 and "ConnectionRefusedError" in cut.stderr, cut.stderr
    assert (quarantined["outcome"], quarantined["dst_ip"], str(quarantined["dst_port"])) == ("quarantine", target[0], target[1])
    assert (twin["src_host"], twin["src_zone"]) == (workstation.name, zone)
    assert alerts_holding(lab, "unknown-device", twin["id"]) == []
    assert rc == 5 and {"suricata", "fw-drops"} <= set(seen[address]["seen_by"]) and not seen[address]["probe"], (rc, seen)
    assert str(workstation.address) not in seen


def gateway_echo(lab: Lab, container: str, config: str) -> dict[str, Any]:
    """A C-ECHO to the PACS from ``container`` (an image with pynetdicom) with a legacy device's own
    DICOM configuration ``config`` (its AE title, its peers at its gateway's tunnels): the lab's
    simulator (pacslab/dicomsim.py, as roles/dicom_node installs it) copied in; its JSON outcome."""
    docker("cp", str(REPO_ROOT / "pacslab" / "dicomsim.py"), f"{container}:/tmp/dicomsim.py")
    docker("exec", "-i", container, "sh", "-c", "cat > /tmp/dicom.json", input=config)
    out = docker("exec", container, "python3", "/tmp/dicomsim.py", "--config", "/tmp/dicom.json", "echo", "--peer", "pacs", timeout=120).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def gateway_connections(lab: Lab, text: str, since: int = 0) -> list[dict[str, Any]]:
    """The siem's events of the overlay gateway's tunnels whose raw message holds ``text``, after event ``since``."""
    return [e for e in siem_json(lab, "events", "--since-id", str(since), "--contains", text) if e["source"] == "overlay-gateway"]


@pytest.mark.control("C-ACC-08")
@pytest.mark.control("C-AST-01")
@pytest.mark.control("C-RSP-02")
@pytest.mark.control("C-PRT-01")
def test_a_rogue_on_the_legacy_segment_is_refused_by_the_gateway_and_raises_unknown_device(running_lab: Lab, plan: Plan,
                                                                                          evidence) -> None:
    """The legacy segment: nothing there crosses the fw on its way to the overlay gateway and no sweep
    covers it, so the gateway is its only witness. A rogue plugged in at an address no host has,
    holding a copy of the legacy device's own DICOM configuration (its AE title, the gateway's
    tunnel to the PACS: all a sniffer of the cleartext segment learns), offers the PACS a C-ECHO
    through the tunnel. The gateway's allow-list (the devices whose peers go through it) closes the
    connection before a byte goes on: the association ends with no PDU received (closed, reset, or
    reset before the connection counts as made, as the timing of the request and the close
    falls), and the PACS never sees the legacy device's AE title from it. The gateway's log line,
    shipped as overlay-gateway, is a refused tls-connection from the rogue's address (no host, the legacy
    zone), which raises unknown-device (high) about the address and zone, and the fw quarantines
    it within 30 s. The twin: the legacy device's own C-ECHO through the same tunnel right after
    is answered 0x0000, and its connections there are accepted ones of its host, held by no alert."""
    lab = running_lab
    gateways = [h for h in lab.deployed_hosts() if "overlay_gateways" in h.groups]
    if not gateways or gateways[0].name not in sources(lab):
        pytest.skip(f"lab {lab.name!r} deploys no overlay gateway that ships its log")
    gateway = gateways[0]
    device = next(h for h in lab.deployed_hosts() if "modalities" in h.groups and h.zone == gateway.zone)
    zone, image = str(gateway.zone), next(c.image for c in plan.containers if c.host == device.name)
    config = im.exec_in(lab, device.name, "cat", "/etc/pacslab/dicom.json")
    with plugged_in(lab, plan, zone, image) as (name, address):
        tried = utc_now()  # the rogue's address is the same on a re-run: its refusal is the one stored after this
        rogue = gateway_echo(lab, name, config)
        refusal = wait_for("the gateway's refusal of the rogue", lambda: [
            e for e in gateway_connections(lab, f" REFUSED by libwrap from {address}:") if e["time"] >= tried])[0]
        alert = wait_for("unknown-device holding it", lambda: alerts_holding(lab, "unknown-device", refusal["id"]))[0]
        held = wait(f"quarantine of {address}", CONTAINED_WITHIN, lambda: response.quarantined(lab).get(address))
    own = im.dicomsim(lab, device.name, "echo", "--peer", "pacs")
    opened = f"] accepted connection from {device.address}:"
    accepted = wait_for("the gateway's accepted connection of the legacy device", lambda: [
        e for e in gateway_connections(lab, opened, refusal["id"]) if e["event_type"] == "tls-connection"])[0]
    evaluated_after(lab, utc_now())  # a pass that started after the accepted connection was stored has weighed it
    evidence.update(rogue_address=address, rogue=rogue, refusal={k: refusal[k] for k in ("id", "host", "event_type", "outcome", "message")},
                    alert=alert, held=held, own=own, accepted={k: accepted[k] for k in ("id", "outcome", "src_host", "src_zone")})
    # cut by the gateway before any PDU, as the timing of its close falls: a plain close or a reset,
    # while the request is on its way or even before the connect returned (pacslab.dicomsim.refusal:
    # closed, no PDU, either way); never a refusal (the tunnel listens), a timeout or an answer
    assert (rogue["established"], rogue["outcome"], rogue["pdus_received"]) == (False, "closed", []), rogue
    assert (refusal["host"], refusal["event_type"], refusal["outcome"], refusal["src_ip"], refusal["src_host"], refusal["src_zone"]) == (
        gateway.name, "tls-connection", "refused", address, None, zone)
    assert (alert["severity"], alert["entities"]) == ("high", {"src_ip": address, "src_zone": zone})
    assert (held["host"], held["by"], held["reason"], held["enforced"]) == (
        "", "siem", f"siem alert {alert['id']}: unknown-device (no lab host has {address}, in the {zone} zone)", True)
    assert (own["established"], own.get("status")) == (True, "0x0000"), own
    assert (accepted["host"], accepted["outcome"], accepted["src_host"], accepted["src_zone"]) == (gateway.name, "accepted", device.name, zone)
    assert alerts_holding(lab, "unknown-device", accepted["id"]) == []


# ---------------------------------------------------------------------------------------------
# Active discovery (C-AST-01, C-DET-04): the scanner's sweeps (roles/scanner) reconciled with the lab
# definition by the siem (unknown-device) and by `pacslab discovery` (pacslab.discovery)

FOUND_WITHIN = 60  # seconds from a device's appearance to its unknown-device alert (C-AST-01's budget)


def scanning(lab: Lab) -> Host:
    found = [h for h in lab.deployed_hosts() if "scanners" in h.groups]
    if not found:
        pytest.skip(f"lab {lab.name!r} deploys no scanner")
    return found[0]


def swept_zones(lab: Lab) -> set[str]:
    """The scanner's own zone and each zone a flow opens to it on any port (F12, F12b)."""
    scanner_host = scanning(lab)
    return {str(scanner_host.zone)} | {f.dest.name for f in lab.flows if f.ports is None and f.dest.kind == "zone"
                                       and any(s.name == scanner_host.name for s in f.sources)}


@pytest.fixture
def routed_rogue(running_lab: Lab, plan: Plan) -> Iterator[tuple[str, str]]:
    """A rogue in the modality zone with the fw as its default route (plugged_in). A device with no
    route out of its zone answers no sweep from another zone: only a sweep inside the zone would
    find it (not built, README)."""
    with plugged_in(running_lab, plan, str(modality(running_lab).zone)) as found:
        yield found


def discovered(lab: Lab, address: str) -> list[dict[str, Any]]:
    return [e for e in siem_json(lab, "events", "--contains", f'"address": "{address}"')
            if e["source"] == "discovery" and e["event_type"] == "discovered-address" and e["src_ip"] == address]


def reconciliation(lab: Lab) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-m", "pacslab.cli", "discovery", "--json", "--lab", str(lab.path)],
                          capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {"stderr": proc.stderr}


@pytest.mark.control("C-AST-01")
def test_a_silent_rogue_device_is_found_by_the_scanner_and_raises_unknown_device(running_lab: Lab, routed_rogue: tuple[str, str],
                                                                                 evidence) -> None:
    """The rogue sends nothing, so the fw never sees it: only a sweep can find it. Its address
    answers the scanner's ping; the siem stores it with no host and the modality zone and raises
    unknown-device (high) about it within 60 s; `pacslab discovery` lists it as unknown in that zone
    (exit 5). The CT, which answers the same sweeps, is stored as itself and no unknown-device holds it."""
    lab = running_lab
    scanning(lab)
    _, address = routed_rogue
    zone = modality(lab).zone
    started, since = time.monotonic(), utc_now()
    found = wait(f"the sweep's record of {address}", FOUND_WITHIN, lambda: [e for e in discovered(lab, address) if e["time"] >= since])[0]
    alert = wait("unknown-device about the silent rogue", FOUND_WITHIN - (time.monotonic() - started),
                 lambda: alerts_holding(lab, "unknown-device", found["id"]))[0]
    ct = modality(lab)
    ct_found = discovered(lab, str(ct.address))[-1]

    def listed() -> tuple[int, dict[str, Any]] | None:
        rc, record = reconciliation(lab)
        return (rc, record) if any(address in z["unknown"] for z in record.get("zones", [])) else None

    rc, record = wait("the rogue in `pacslab discovery`", WAIT, listed)
    row = next(r for r in record["zones"] if r["zone"] == zone)
    evidence.update(rogue=address, found={k: found[k] for k in ("id", "outcome", "src_host", "src_zone")}, alert=alert, reconciled=row)
    assert (found["outcome"], found["src_host"], found["src_zone"]) == ("echo-reply", None, zone)
    assert (alert["severity"], alert["entities"]) == ("high", {"src_ip": address, "src_zone": zone})
    assert [e for e in siem_json(lab, "events", "--contains", f'"src_ip": "{address}"') if e["event_type"] == "fw-drop" and e["time"] >= since] == []
    assert (ct_found["src_host"], ct_found["src_zone"]) == (ct.name, zone)
    assert alerts_holding(lab, "unknown-device", ct_found["id"]) == []
    assert rc == 5 and address in row["unknown"] and row["missing"] == []


@pytest.mark.control("C-AST-01")
@pytest.mark.control("C-DET-04")
def test_the_sweeps_find_exactly_the_deployed_hosts_of_each_zone_they_cover(running_lab: Lab, evidence) -> None:
    """A sweep that began after this check did, in every zone the scanner may reach: every deployed
    host of the zone answered (none missing) and no other address did, but the zone's probe address
    (the segmentation check's stand-in, which may run meanwhile). The zones it may not reach are
    listed as not swept, with the reason."""
    lab = running_lab
    since = utc_now()

    def fresh() -> dict[str, Any] | None:
        rc, record = reconciliation(lab)
        rows = {r["zone"]: r for r in record.get("zones", [])}
        return record if all(rows[z]["swept"] and rows[z]["started"] > since for z in swept_zones(lab)) else None

    record = wait("a sweep of every zone the scanner may reach that began after this check", FOUND_WITHIN, fresh)
    rows = {r["zone"]: r for r in record["zones"]}
    evidence.update(swept=sorted(swept_zones(lab)), rows={z: {k: r[k] for k in ("finished", "unknown", "missing")} for z, r in rows.items()})
    assert {z for z, r in rows.items() if r["swept"]} == swept_zones(lab)
    for zone in swept_zones(lab):
        assert rows[zone]["missing"] == [], zone
        assert set(rows[zone]["unknown"]) <= {str(lab.zones[zone].probe)}, zone
        fw = {str(lab.zones[zone].router): lab.router.name} if zone == scanning(lab).zone else {}  # behind the fw, its address is not tried
        assert rows[zone]["expected"] == {str(h.address): h.name for h in lab.deployed_hosts() if h.zone == zone} | fw, zone
    for zone in set(lab.zones) - swept_zones(lab):
        assert (rows[zone]["finished"], rows[zone]["reason"]) == (None, discovery.NOT_SWEPT)
    assert [f for f in record["failed"] if f["time"] > since] == []
