"""Containment (C-RSP-02, CSF RS.MI-1 and RS.MI-2): a host in the fw's quarantine set loses every
path but the security zone's, an association it holds open ends at its next request, the other
modalities keep storing, the release gives the path back and is logged, and a ruleset load (`pacslab
up` after drift) keeps the set (pacslab.response, roles/firewall pacslab-quarantine).

Expectations are written out: the answer a quarantined modality's SYN gets (the fw's TCP reset,
which the modality reports as "Connection refused"), the fw's log prefix, the response log's fields.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pacslab import cli, response
from pacslab.docker import docker
from pacslab.probes import imaging as im
from pacslab.probes import segmentation as seg
from pacslab.probes import standins
from pacslab.topology import Host, Lab

ENDED_WITHIN = 10  # seconds: an association open when its host is quarantined must stop within this (issue 13)
LOG_WAIT = 10  # seconds the fw's NFLOG line is waited for at most


def modalities(lab: Lab) -> tuple[Host, Host]:
    """Two modalities that store to the PACS over TLS: the one contained and the one that goes on."""
    found = [h for h in lab.deployed_hosts() if "modalities" in h.groups and h.zone == "modality" and h.ae_title]
    if len(found) < 2:
        pytest.skip(f"lab {lab.name!r} has fewer than two modalities in the modality zone")
    return found[0], found[1]


def pacs(lab: Lab) -> Host:
    return next(h for h in lab.deployed_hosts() if "pacs_servers" in h.groups)


def siem_address(lab: Lab) -> tuple[str, int]:
    siem = next((h for h in lab.deployed_hosts() if "siem_servers" in h.groups), None)
    if siem is None:
        pytest.skip(f"lab {lab.name!r} deploys no siem")
    return str(siem.address), siem.service("syslog-tls").port


def store_one(lab: Lab, host: Host, marker: str) -> dict[str, Any]:
    return im.dicomsim(lab, host.name, "store", "--images", "1", "--patient-name", f"PACSLAB^{marker}", "--retries", "0")


def connect(lab: Lab, host: Host, address: str, port: int) -> str:
    """A TCP connect from ``host``: "open", "refused" (a reset) or "timeout" (no answer in 3 s)."""
    script = ("import socket,sys\ntry:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close(); print('open')\n"
              "except ConnectionRefusedError: print('refused')\nexcept OSError: print('timeout')\n")
    return im.exec_in(lab, host.name, "python3", "-c", script, address, str(port)).strip()


def response_log(lab: Lab) -> list[dict[str, Any]]:
    text = docker("exec", lab.container_name(lab.router.name), "cat", "/var/log/pacslab/fw-response.json", check=False).stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def contained(running_lab: Lab) -> Iterator[tuple[Host, Host]]:
    """The first modality quarantined for the test (released after it, whatever happened)."""
    lab = running_lab
    held, other = modalities(lab)
    assert response.quarantined(lab) == {}, "a host was left in quarantine before this test"
    entry = response.quarantine(lab, held.name, "integration test: containment", by="pacslab-tests")
    assert entry["changed"] is True
    try:
        yield held, other
    finally:
        response.release(lab, held.name, "integration test: done", by="pacslab-tests")


@pytest.mark.control("C-RSP-02")
def test_a_quarantined_modality_loses_the_pacs_while_the_other_keeps_storing(running_lab: Lab, evidence: dict[str, Any]) -> None:
    lab = running_lab
    held, other = modalities(lab)
    before = store_one(lab, held, "BEFORE")
    assert before["outcome"] == "established" and len(before["stored"]) == 1, f"{held.name} could not store before the quarantine: {before}"
    offset = standins.drop_log_size(lab)
    response.quarantine(lab, held.name, "integration test: containment", by="pacslab-tests")
    try:
        cut = store_one(lab, held, "CUT")
        goes_on = store_one(lab, other, "GOESON")
        deadline = time.monotonic() + LOG_WAIT
        while True:
            lines = [e for e in seg.parse_drop_log(standins.read_drop_log(lab, offset))
                     if e.get("oob.prefix") == "pacslab quarantine " and e.get("src_ip") == str(held.address)]
            if lines or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        response.release(lab, held.name, "integration test: done", by="pacslab-tests")
    evidence.update(before=before, cut=cut, goes_on=goes_on, fw_log=lines[:3])
    # The fw answers the contained modality's SYN with a reset: refused at once, nothing stored.
    assert (cut["outcome"], cut.get("error"), cut["stored"]) == ("refused", "[Errno 111] Connection refused", [])
    assert (goes_on["outcome"], len(goes_on["stored"]), goes_on["stored"][0]["status"]) == ("established", 1, 0)
    assert lines, f"no 'pacslab quarantine ' line from {held.address} in the fw's drop log within {LOG_WAIT} s"
    assert (lines[0]["dest_ip"], lines[0]["dest_port"], lines[0]["ip.protocol"]) == (str(pacs(lab).address), pacs(lab).dicom_port, 6)


# Runs in the modality: opens an association with the PACS, echoes once a second and prints each
# outcome as a JSON line, until an echo gets no answer (then, within 3 s, how the association ended).
HOLD = """
import json, sys, time
sys.path.insert(0, "/usr/local/lib/pacslab")
import dicomsim
from pynetdicom.sop_class import Verification
assoc, out = dicomsim.associate(dicomsim.load_config(), "pacs", [Verification])
print(json.dumps(out), flush=True)
for n in range(90):
    status = assoc.send_c_echo() if assoc.is_established else None
    if not status:
        for _ in range(30):  # the association's reader thread notes the reset a moment after the request failed
            if not assoc.is_established:
                break
            time.sleep(0.1)
        print(json.dumps({"echo": n, "ended": True, "aborted": bool(assoc.is_aborted), "established": bool(assoc.is_established)}), flush=True)
        break
    print(json.dumps({"echo": n, "status": f"0x{status.Status:04X}"}), flush=True)
    time.sleep(1)
"""


@pytest.mark.control("C-RSP-02")
def test_an_association_open_when_its_modality_is_quarantined_ends(running_lab: Lab, evidence: dict[str, Any]) -> None:
    lab = running_lab
    held, _ = modalities(lab)
    proc = subprocess.Popen(["docker", "exec", lab.container_name(held.name), "python3", "-c", HOLD],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    seen: list[dict[str, Any]] = []
    try:
        opened = json.loads(proc.stdout.readline())
        assert opened["outcome"] == "established", f"{held.name} could not open an association with the PACS: {opened}"
        while len(seen) < 2:  # two answered echoes: the association carries requests before the quarantine
            seen.append(json.loads(proc.stdout.readline()))
        response.quarantine(lab, held.name, "integration test: open association", by="pacslab-tests")
        quarantined_at = time.monotonic()
        try:
            proc.wait(timeout=ENDED_WITHIN)
        except subprocess.TimeoutExpired:
            pass
        ended_after = time.monotonic() - quarantined_at
        seen += [json.loads(line) for line in proc.stdout.read().splitlines() if line.strip()] if proc.poll() is not None else []
    finally:
        proc.kill()
        response.release(lab, held.name, "integration test: done", by="pacslab-tests")
    evidence.update(opened=opened, echoes=seen, ended_after_seconds=round(ended_after, 2))
    assert [e.get("status") for e in seen[:2]] == ["0x0000", "0x0000"]
    last = seen[-1]
    assert last.get("ended") is True, f"the association still answered {ENDED_WITHIN} s after the quarantine: {seen}"
    # pynetdicom marks an association whose connection was reset as aborted (no A-RELEASE).
    assert (last["aborted"], last["established"]) == (True, False), (seen, ended_after)


@pytest.mark.control("C-RSP-02")
def test_a_quarantined_host_keeps_the_security_zone_only(running_lab: Lab, contained: tuple[Host, Host], evidence: dict[str, Any]) -> None:
    lab = running_lab
    held, _ = contained
    siem_ip, syslog_port = siem_address(lab)
    ris = next(h for h in lab.deployed_hosts() if "ris_servers" in h.groups)
    to_siem = connect(lab, held, siem_ip, syslog_port)  # F09: the modality zone ships to the siem
    to_ris = connect(lab, held, str(ris.address), ris.dicom_port)  # F02: the worklist, allowed when not contained
    evidence.update(to_siem=to_siem, to_ris=to_ris)
    assert (to_siem, to_ris) == ("open", "refused")


@pytest.mark.control("C-RSP-02")
def test_the_release_gives_the_path_back_and_is_logged(running_lab: Lab, evidence: dict[str, Any]) -> None:
    lab = running_lab
    held, _ = modalities(lab)
    response.quarantine(lab, held.name, "integration test: release", by="pacslab-tests")
    released = response.release(lab, held.name, "integration test: the modality was cleaned", by="pacslab-tests")
    after = store_one(lab, held, "RELEASED")
    logged = response_log(lab)[-1]
    evidence.update(released=released, after=after, logged=logged)
    assert response.quarantined(lab) == {}
    assert (after["outcome"], len(after["stored"])) == ("established", 1)
    assert {k: logged[k] for k in ("action", "address", "host", "by", "reason", "changed")} == {
        "action": "release", "address": str(held.address), "host": held.name, "by": "pacslab-tests",
        "reason": "integration test: the modality was cleaned", "changed": True}


@pytest.mark.control("C-RSP-02")
def test_up_keeps_the_quarantine_when_it_loads_the_ruleset_again(running_lab: Lab, contained: tuple[Host, Host], evidence: dict[str, Any]) -> None:
    """A rule added by hand is drift: `up` loads the whole ruleset again (flush ruleset first)."""
    lab = running_lab
    held, _ = contained
    fw = lab.container_name(lab.router.name)
    docker("exec", fw, "nft", "add", "rule", "inet", "pacslab", "forward", "meta", "nftrace", "set", "1")
    assert cli.main(["up", "--lab", str(lab.path)]) == cli.EXIT_OK
    ruleset = docker("exec", fw, "nft", "list", "chain", "inet", "pacslab", "forward").stdout
    record = response.quarantined(lab)
    evidence.update(record=record)
    assert "nftrace" not in ruleset, "up did not load the ruleset again: the drift is still there"
    assert record[str(held.address)]["enforced"] is True
    assert store_one(lab, held, "STILLCUT")["outcome"] == "refused"
