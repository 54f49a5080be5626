"""Devices seen by the fw that the lab definition does not expect there (issue 13,
roles/siem/files/rules/devices.yml): unknown-device (C-AST-01) and device-anomaly (C-DET-05).

The fw logs every packet it drops; the siem enriches each with the host that has its source
address and the zone whose subnet holds it. A rogue container plugged into the modality zone at an
address no host has raises unknown-device; the CT trying the VNA raises device-anomaly about it
and no unknown-device; a workstation doing the same raises neither (its zone is not a modality's).
Markers: this run's source ports, and the rogue's address and name.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from pacslab.docker import docker
from pacslab.plan import LABEL_LAB, LABEL_ROLE, Plan
from pacslab.probes import portscan
from pacslab.topology import Host, Lab

from .test_response import modalities, scanner, vna
from .test_siem import siem_json, wait_for

RUN = secrets.token_hex(3)
BASE = 22000 + secrets.randbelow(90) * 100  # source ports of this run, below the ephemeral range (32768-60999)

def drops_from(lab: Lab, address: str, source: int) -> list[dict[str, Any]]:
    return [e for e in siem_json(lab, "events", "--contains", f'"src_port": {source},')
            if e["event_type"] == "fw-drop" and e["src_ip"] == address]


def alerts_holding(lab: Lab, rule: str, event_id: int) -> list[dict[str, Any]]:
    return [a for a in siem_json(lab, "alerts") if a["rule"] == rule and event_id in a["events"]]


def modality(lab: Lab) -> Host:
    return modalities(lab)[0]


@pytest.fixture
def rogue(running_lab: Lab, plan: Plan) -> Iterator[tuple[str, str]]:
    """A container of the tools image on the modality zone's network at an address no host of the
    lab definition has (labelled as the lab's, so `pacslab down` removes it if this check cannot):
    (its name, its address). Removed afterwards."""
    lab = running_lab
    zone = lab.zones[modality(lab).zone]
    taken = {str(h.address) for h in lab.hosts.values() if h.address} | {str(zone.router)}
    address = next(str(a) for a in list(zone.subnet.hosts())[199:249] if str(a) not in taken)
    name = f"{lab.prefix}-rogue-{RUN}"
    docker("run", "-d", "--name", name, "--label", f"{LABEL_LAB}={lab.name}", "--label", f"{LABEL_ROLE}=standin",
           "--network", lab.network_name(zone.name), "--ip", address, "--cap-drop", "ALL", plan.tools_image, "sleep", "600")
    try:
        yield name, address
    finally:
        docker("rm", "-f", name, check=False)


@pytest.mark.control("C-AST-01")
def test_a_rogue_device_in_the_modality_zone_raises_unknown_device(running_lab: Lab, rogue: tuple[str, str], evidence) -> None:
    """The rogue knocks on the fw's address in its zone (it has no route beyond): the fw drops it
    (input) and the siem stores the drop with no src_host and src_zone modality, and raises
    unknown-device (high) about the address and its zone."""
    lab = running_lab
    name, address = rogue
    zone = modality(lab).zone
    assert portscan.scan_in(name, str(lab.zones[zone].router), (22,), BASE) == ["unanswered"]
    drop = wait_for("the rogue's drop", lambda: drops_from(lab, address, BASE))[0]
    alert = wait_for("unknown-device", lambda: alerts_holding(lab, "unknown-device", drop["id"]))[0]
    evidence.update(rogue=address, drop={k: drop[k] for k in ("id", "outcome", "src_host", "src_zone")}, alert=alert)
    assert (drop["outcome"], drop["src_host"], drop["src_zone"]) == ("input", None, zone)
    assert (alert["severity"], alert["entities"]) == ("high", {"src_ip": address, "src_zone": zone})


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
