"""The imaging core: clinical workflow, device authentication, application allow-listing, the
legacy overlay, data in transit, integrity, certificates, least functionality, robustness.

Every probe runs inside a lab container, so the source address is the device's own; every negative
case asserts on what the PACS did (association rejected, nothing stored), not on configuration.
Each refusal is asserted as the specific answer the service gives (the TLS alert, the
A-ASSOCIATE-RJ result/source/reason of PS3.8 9.3.4, the fw's drop and its NFLOG line): a timeout
or a routing fault never passes as a refusal.

Hosts, addresses, ports and AE titles come from the loaded lab (pacslab.topology.Lab): the groups
say what a host is (modalities, workstations, pacs_servers ...), lab_services its ports, and the
lab's host variables whom it talks to; nothing here names an address or an AE title.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from pacslab import certs
from pacslab.firewall import PREFIX_DENY
from pacslab.probes import imaging as im
from pacslab.probes import segmentation as seg
from pacslab.probes import standins
from pacslab.topology import Host, Lab, load_lab

from .test_rproxy import store_study

APP_CONTEXT_UID = b"1.2.840.10008.3.1.1.1"  # every cleartext A-ASSOCIATE-RQ carries it (PS3.7 A.2.1)
DICOM_IMAGES = ("dicom", "orthanc")  # the images of the DICOM nodes (roles dicom_node, orthanc)
NFLOG_DEADLINE = 10.0  # seconds within which a drop must be in the fw's NFLOG log
NFLOG_KEYS = ("timestamp", "oob.prefix", "src_ip", "dest_ip", "ip.protocol", "dest_port")  # of a ulogd2 JSON line, kept as evidence


# ---------------------------------------------------------------------------------------------
# Who is who, from the lab definition


def _vars(lab: Lab, host: str) -> dict[str, Any]:
    return lab.host_vars.get(host, {})


def members(lab: Lab, group: str) -> list[Host]:
    """The deployed hosts of an inventory group, in definition order."""
    return [h for h in lab.group(group) if h.deployed]


def the(lab: Lab, group: str) -> Host:
    """The one deployed host of a group (the PACS, the VNA, the RIS, the CA)."""
    hosts = members(lab, group)
    assert len(hosts) == 1, f"expected one deployed host in group {group}, found {[h.name for h in hosts]}"
    return hosts[0]


def enrolled(lab: Lab, host: Host) -> bool:
    """A DICOM node that holds a certificate from the lab CA: every deployed DICOM node unless its
    variables say pki_enrol: false (the legacy device, which has no TLS of its own)."""
    return host.deployed and host.image in DICOM_IMAGES and _vars(lab, host.name).get("pki_enrol", True) is not False


def tls_hosts(lab: Lab) -> list[Host]:
    return [h for h in lab.hosts.values() if enrolled(lab, h)]


def gateway_of(lab: Lab, host: Host) -> Host | None:
    """The gateway that carries a device's DICOM (the `via` of its peers), if it has one."""
    vias = {str(p["via"]) for p in _vars(lab, host.name).get("dicom_node_peers") or [] if p.get("via")}
    assert len(vias) <= 1, f"{host.name} reaches its peers through several gateways: {sorted(vias)}"
    return lab.hosts[vias.pop()] if vias else None


def stations(lab: Lab) -> list[Host]:
    """The modalities with an AE title: each acquires from the worklist and stores to the PACS."""
    return [h for h in members(lab, "modalities") if h.ae_title]


def tls_stations(lab: Lab) -> list[Host]:
    return [h for h in stations(lab) if enrolled(lab, h)]


def legacy_stations(lab: Lab) -> list[Host]:
    return [h for h in stations(lab) if not enrolled(lab, h) and gateway_of(lab, h) is not None]


def modality_of(lab: Lab, host: Host) -> str:
    return str(_vars(lab, host.name).get("dicom_node_modality", "CT"))


def reader(lab: Lab) -> Host:
    """The reading workstation: the workstation with an AE title (the PACS's C-MOVE destination)."""
    hosts = [h for h in members(lab, "workstations") if h.ae_title]
    assert len(hosts) == 1, f"expected one reading workstation, found {[h.name for h in hosts]}"
    return hosts[0]


def order_entry(lab: Lab) -> Host:
    """The station that sends HL7 orders: the RIS's first listed sender."""
    senders = _vars(lab, the(lab, "ris_servers").name).get("ris_hl7_senders") or []
    assert senders, "the RIS lists no HL7 sender"
    return lab.hosts[str(senders[0])]


def tls_peers(lab: Lab, node: Host) -> set[str]:
    """The enrolled hosts whose issuers a node's trust bundle (trusted.pem) must hold: the carriers
    of the peers the lab definition names for it (its orthanc_peers and dicom_node_peers, the
    `via` gateway for a peer that has one; the far end of each dicom_node_tunnels entry). The
    lab's loader checks each of these against lab_flows both ways. Reference lab: the PACS trusts
    mod-ct, mod-mr, ovl-gw, ws-rad and the VNA; ws-tech trusts the RIS."""
    hv = _vars(lab, node.name)
    named = [str(p.get("via") or p["host"]) for p in (hv.get("orthanc_peers") or []) + (hv.get("dicom_node_peers") or [])]
    named += [str(t["host"]) for t in hv.get("dicom_node_tunnels") or []]
    return {h for h in named if h != node.name and enrolled(lab, lab.hosts[h])}


@functools.lru_cache(maxsize=4)
def _lab_at(path: str) -> Lab:
    return load_lab(path)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """station / tls_station / legacy_station / tls_host: one test per host of the lab;
    legacy_target: one per (legacy device, PACS, port) it must not reach directly."""
    wanted = {"station": stations, "tls_station": tls_stations, "legacy_station": legacy_stations, "tls_host": tls_hosts}
    names = [n for n in wanted if n in metafunc.fixturenames]
    if not names and "legacy_target" not in metafunc.fixturenames:
        return
    lab = _lab_at(str(metafunc.config.getoption("--lab")))
    if "legacy_target" in metafunc.fixturenames:
        targets = _legacy_targets(lab)
        metafunc.parametrize("legacy_target", targets, ids=[f"{d}-{h}-{p}" for d, h, p in targets])
    for name in names:
        hosts = wanted[name](lab)
        metafunc.parametrize(name, [h.name for h in hosts], ids=[f"{h.name}-{h.ae_title}" if h.ae_title else h.name for h in hosts])


# ---------------------------------------------------------------------------------------------
# The clinical workflow, run once for the module


@dataclass
class ClinicalRound:
    accession: dict[str, str]  # station host -> accession
    canary: dict[str, str]  # station host -> synthetic patient name
    sent: dict[str, list[dict[str, str]]]  # station host -> fingerprints the modality sent
    pacs: dict[str, list[dict[str, Any]]]
    vna: dict[str, list[dict[str, Any]]]
    moves: dict[str, dict[str, Any]]


@dataclass
class ClinicalRun(ClinicalRound):
    received: list[dict[str, str]]
    fw_capture: bytes
    legacy_capture: dict[str, bytes]  # gateway host -> what its segment carried
    fw_dropped: int | None  # packets the kernel dropped from the fw's capture (tcpdump's count)


@pytest.fixture(scope="module")
def clinical(running_lab: Lab, plan, tmp_path_factory) -> ClinicalRun:
    """HL7 order -> worklist -> each modality (over TLS; a legacy device in cleartext via its
    gateway) -> PACS -> VNA -> C-MOVE to the reading workstation, with captures on the fw and on
    each legacy segment running the whole time."""
    lab = running_lab
    ws = reader(lab)
    folder = tmp_path_factory.mktemp("captures")
    fw_image = next(c.image for c in plan.containers if c.host == plan.firewall_host)
    im.exec_in(lab, ws.name, "sh", "-c", "rm -f /var/lib/pacslab/received/*.dcm")
    gateways = sorted({gw.name for h in legacy_stations(lab) if (gw := gateway_of(lab, h))})
    captures: dict[str, im.Capture] = {}
    with contextlib.ExitStack() as running:  # each capture started is stopped and removed, whatever fails
        for name, netns in [("fw", lab.router.name), *((f"legacy-{gw}", gw) for gw in gateways)]:
            im.capture_start(lab, name, netns, fw_image)
            running.callback(lambda name=name: captures.__setitem__(name, im.capture_stop(lab, name, folder / f"{name}.pcap")))
        work = clinical_round(lab, secrets.token_hex(3).upper())
        received = im.received_fingerprints(lab, ws.name)
    return ClinicalRun(**vars(work), received=received, fw_capture=captures["fw"].data,
                       legacy_capture={gw: captures[f"legacy-{gw}"].data for gw in gateways}, fw_dropped=captures["fw"].dropped)


def clinical_round(lab: Lab, tag: str) -> ClinicalRound:
    """One round of the clinical workflow, ``tag`` in its accessions and patient names: an HL7 order
    for each station, which acquires from its worklist and stores to the PACS, which forwards to the
    VNA; each study once on both, the reading workstation moves it to itself (C-MOVE)."""
    pacs, ws = the(lab, "pacs_servers"), reader(lab)
    hosts = stations(lab)
    accession = {h.name: f"A{tag}{i}" for i, h in enumerate(hosts)}
    canary = {h.name: f"PACSLAB^CANARY{tag}{i}" for i, h in enumerate(hosts)}
    sender = order_entry(lab).name
    for h in hosts:
        ack = im.send_order(lab, sender, accession[h.name], str(h.ae_title), modality_of(lab, h), canary[h.name], f"P{tag}{h.name[:6]}")
        assert ack["ack"] == "AA", ack
    pacs_rows, vna_rows, sent, moves = {}, {}, {}, {}
    for h in hosts:
        st = h.name
        study = im.wait_for(f"{accession[st]} on the PACS", lambda st=st: im.find_study(lab, pacs.name, accession[st]), timeout=150)[0]
        sent[st] = im.wait_for("the modality's record", lambda st=st: _sent(lab, st, accession[st]))
        im.wait_for("every instance on the PACS", lambda study=study, st=st: len(im.study_instances(lab, pacs.name, study)) == len(sent[st]))
        pacs_rows[st] = im.study_instances(lab, pacs.name, study)
        im.wait_for(f"{accession[st]} on the VNA", lambda study=study, st=st: len(_vna_instances(lab, study)) == len(sent[st]), timeout=120)
        vna_rows[st] = im.study_instances(lab, the(lab, "vna_servers").name, study)
        uid = im.orthanc(lab, pacs.name, f"/studies/{study}")["MainDicomTags"]["StudyInstanceUID"]
        moves[st] = im.dicomsim(lab, ws.name, "move", "--study", uid, "--destination", str(ws.ae_title))
    return ClinicalRound(accession, canary, sent, pacs_rows, vna_rows, moves)


def devices_round(lab: Lab, tag: str) -> dict[str, dict[str, Any]]:
    """One round of the clinical workflow as the lab's devices do it, with no person's or
    administrator's read (clinical_round checks each study through Orthanc's REST API as the
    administrator, whose reads of many studies are what bulk-access watches): an HL7 order for each
    station, which acquires from its worklist and stores to the PACS (the PACS forwards to the VNA);
    once the modality has recorded its store, the reading workstation finds the study (C-FIND) and
    moves it to itself (C-MOVE). Its C-MOVE results, by station."""
    ws = reader(lab)
    hosts = stations(lab)
    sender = order_entry(lab).name
    for i, h in enumerate(hosts):
        ack = im.send_order(lab, sender, f"A{tag}{i}", str(h.ae_title), modality_of(lab, h), f"PACSLAB^WORK{tag}{i}", f"P{tag}{h.name[:6]}")
        assert ack["ack"] == "AA", ack
    moves = {}
    for i, h in enumerate(hosts):
        im.wait_for("the modality's record", lambda h=h, i=i: _sent(lab, h.name, f"A{tag}{i}"), timeout=150)
        [match] = im.wait_for(f"A{tag}{i} at the workstation's C-FIND", lambda i=i: im.dicomsim(
            lab, ws.name, "find", "--accession", f"A{tag}{i}")["matches"])
        moves[h.name] = im.dicomsim(lab, ws.name, "move", "--study", match["study_uid"], "--destination", str(ws.ae_title))
    return moves


def _sent(lab: Lab, host: str, accession: str) -> list[dict[str, str]] | None:
    out = im.exec_in(lab, host, "cat", f"/var/lib/pacslab/sent/{accession}.json", check=False)
    return im.json.loads(out) if out.strip() else None


def _vna_instances(lab: Lab, study: str) -> list[dict[str, Any]]:
    vna = the(lab, "vna_servers").name
    return im.study_instances(lab, vna, study) if study in im.orthanc(lab, vna, "/studies") else []


def _pacs_events(lab: Lab, pacs: str, kind: str) -> list[dict[str, Any]]:
    """The events of one kind in the lab plugin's JSON event log on an Orthanc host."""
    return [e for e in im.orthanc_events(lab, pacs) if e.get("event") == kind]


def _first_tls_station(lab: Lab) -> Host:
    hosts = tls_stations(lab)
    assert hosts, "the lab has no modality with a certificate"
    return hosts[0]


# ---------------------------------------------------------------------------------------------
# The clinical workflow end to end


@pytest.mark.control("C-DAT-03")
def test_workflow_delivers_identical_images(clinical: ClinicalRun, station: str, evidence) -> None:
    """Order -> worklist -> acquisition -> PACS -> VNA -> workstation: pixel data and key tags
    byte-identical to what the modality sent, accession numbers kept."""
    sent = {f["sop_instance_uid"]: f for f in clinical.sent[station]}
    received = {f["sop_instance_uid"]: f for f in clinical.received if f["sop_instance_uid"] in sent}
    evidence.update(accession=clinical.accession[station], sent=len(sent), received=len(received), move=clinical.moves[station])
    assert clinical.moves[station]["statuses"][-1] == "0x0000", clinical.moves[station]
    assert set(received) == set(sent), "the workstation did not receive every instance the modality sent"
    for uid, fp in sent.items():
        assert received[uid] == fp, f"{uid} changed between the modality and the workstation"
        assert fp["accession"] == clinical.accession[station]


@pytest.mark.control("C-DAT-03")
def test_pacs_and_vna_copies_match(clinical: ClinicalRun, station: str, evidence) -> None:
    pacs = {r["sop_instance_uid"]: r["md5"] for r in clinical.pacs[station]}
    vna = {r["sop_instance_uid"]: r["md5"] for r in clinical.vna[station]}
    evidence.update(instances=len(pacs), pacs_md5=sorted(pacs.values())[:2], vna_md5=sorted(vna.values())[:2])
    assert pacs and pacs == vna


# ---------------------------------------------------------------------------------------------
# C-ACC-08 legacy overlay and C-DAT-02 data in transit


@pytest.mark.control("C-DAT-02")
@pytest.mark.parametrize("marker", ["application-context", "patient-name", "DICM"])
def test_no_cleartext_dicom_crosses_a_zone(clinical: ClinicalRun, marker: str, evidence) -> None:
    """The capture on the fw holds every inter-zone packet of the workflow: none in cleartext."""
    needles = {
        "application-context": [APP_CONTEXT_UID],
        "patient-name": [n.encode() for n in clinical.canary.values()],
        # A DICOM file's zero preamble ends in "DICM" (PS3.10 7.1). The 4 bytes alone turn up in
        # ciphertext by chance about once in 4 GiB: in about 1 run in 200 of a 20 MB capture (seen).
        "DICM": [b"\x00" * 16 + b"DICM"],
    }[marker]
    evidence.update(capture_bytes=len(clinical.fw_capture), dropped=clinical.fw_dropped, needles=[n.decode() for n in needles])
    assert len(clinical.fw_capture) > 100_000, "the fw capture saw almost nothing: the workflow did not cross it"
    assert clinical.fw_dropped == 0, f"the kernel dropped {clinical.fw_dropped} packets of the fw's capture: what it lacks proves nothing"
    for needle in needles:
        assert needle not in clinical.fw_capture, f"{needle!r} crossed a zone boundary in cleartext"


@pytest.mark.control("C-DAT-02")
def test_a_modality_store_crosses_the_fw_inside_tls(running_lab: Lab, plan, device: Host, tmp_path, evidence) -> None:
    """One C-STORE from a modality to the PACS, with a capture on the fw: the capture holds the store
    (its size is the witness) and neither the patient's name nor the DICOM application context. The
    clinical run above covers every link of the workflow; this one needs no other part of it (the
    RIS, the VNA, the workstation, a legacy gateway) to work, so it grades the modality link alone
    (workshop scenario W5)."""
    lab = running_lab
    fw_image = next(c.image for c in plan.containers if c.host == plan.firewall_host)
    canary = f"PACSLAB^LINK{secrets.token_hex(3).upper()}"
    name = f"link-{secrets.token_hex(3)}"
    im.capture_start(lab, name, lab.router.name, fw_image)
    try:
        result = im.dicomsim(lab, device.name, "store", "--images", "1", "--patient-name", canary)
    finally:
        captured = im.capture_stop(lab, name, tmp_path / "link.pcap")
    capture = captured.data
    evidence.update(device=device.name, outcome=result["outcome"], stored=len(result["stored"]), capture_bytes=len(capture),
                    dropped=captured.dropped)
    assert len(result["stored"]) == 1, f"the store did not go through, nothing to search: {result}"
    assert captured.dropped == 0, f"the kernel dropped {captured.dropped} packets of the capture: what it lacks proves nothing"
    assert len(capture) > 100_000, "the fw capture saw almost nothing: the store did not cross it"
    assert APP_CONTEXT_UID not in capture, "a DICOM application context crossed the fw in cleartext"
    assert canary.encode() not in capture, f"{canary} crossed the fw in cleartext"


@pytest.mark.control("C-ACC-08")
def test_capture_sees_cleartext_on_the_legacy_segment(running_lab: Lab, clinical: ClinicalRun, legacy_station: str, evidence) -> None:
    """The twin of the check above: the same search finds the legacy device's cleartext DICOM on
    its own segment (before the gateway), so an empty result on the fw means encrypted, not unseen."""
    gateway = gateway_of(running_lab, running_lab.hosts[legacy_station])
    assert gateway is not None
    capture = clinical.legacy_capture[gateway.name]
    evidence.update(gateway=gateway.name, capture_bytes=len(capture))
    assert APP_CONTEXT_UID in capture
    assert clinical.canary[legacy_station].encode() in capture


def _legacy_targets(lab: Lab) -> list[tuple[str, str, int]]:
    """(legacy device, target host, port) it must not reach directly: the PACS's DICOM port, and
    the PACS at each port of its gateway's services (the cleartext ports it does use, on the gateway)."""
    pacs = the(lab, "pacs_servers")
    out = []
    for dev in legacy_stations(lab):
        gw = gateway_of(lab, dev)
        assert gw is not None
        out.append((dev.name, pacs.name, pacs.dicom_port))
        out += [(dev.name, pacs.name, s.port) for s in gw.services if s.proto == "tcp" and s.port != pacs.dicom_port]
    return out


def _direct_connect(lab: Lab, target: tuple[str, str, int]) -> str:
    """A TCP connect from the device to the host's port, 4 s to answer: open, dropped, refused or error."""
    dev, dst, port = target
    address = seg.host_peer(lab.hosts[dst]).address
    script = (
        f"import socket\ntry:\n socket.create_connection(({address!r},{port}),4); print('open')\n"
        "except TimeoutError: print('dropped')\nexcept ConnectionRefusedError: print('refused')\nexcept OSError as e: print('error', e)"
    )
    return im.exec_in(lab, dev, "python3", "-c", script).strip()


@pytest.fixture(scope="module")
def legacy_attempts(running_lab: Lab) -> tuple[int, dict[tuple[str, str, int], str]]:
    """Every direct attempt of every legacy device, made at the same time (a dropped SYN waits its
    4 s once, not once per target): the fw log's size before them, and target -> outcome."""
    targets = _legacy_targets(running_lab)
    offset = standins.drop_log_mark(running_lab)
    with ThreadPoolExecutor(max_workers=len(targets) or 1) as pool:
        outcomes = dict(zip(targets, pool.map(lambda t: _direct_connect(running_lab, t), targets), strict=True))
    return offset, outcomes


@pytest.mark.control("C-ACC-08")
def test_legacy_device_reaches_the_pacs_only_through_its_gateway(running_lab: Lab, legacy_target: tuple[str, str, int],
                                                                  legacy_attempts: tuple[int, dict[tuple[str, str, int], str]], evidence) -> None:
    """From the legacy device straight to the PACS (its DICOM port, and the ports the device uses
    on its gateway): the SYN is dropped by the fw (no answer: not refused, not reset) and logged
    as a deny with its source, destination and port."""
    lab = running_lab
    dev, dst, port = legacy_target
    src_peer, dst_peer = seg.host_peer(lab.hosts[dev]), seg.host_peer(lab.hosts[dst])
    assert seg.allowed(lab, src_peer.address, dst_peer.address, "tcp", port) is None, f"premise: no flow lets {dev} reach {dst}:{port}"
    case = seg.Case(f"legacy-{dev}-{dst}-{port}", "deny", src_peer, dst_peer, "tcp", port)
    offset, outcomes = legacy_attempts
    outcome = outcomes[legacy_target]
    evidence.update(target=f"{dst} {dst_peer.address}:{port}", outcome=outcome)
    assert outcome == "dropped", f"{case.id}: {outcome}"
    entry = im.wait_for(f"the fw's NFLOG line for {case.id}",
                        lambda: seg.logged(case, seg.parse_drop_log(standins.read_drop_log(lab, offset))), timeout=NFLOG_DEADLINE, every=1)
    evidence.update(nflog={k: entry.get(k) for k in NFLOG_KEYS})
    assert entry["oob.prefix"] == PREFIX_DENY


# ---------------------------------------------------------------------------------------------
# C-ACC-06 device authentication


def rogue_pair(cn: str) -> tuple[str, str]:
    """A self-signed certificate from no lab CA, with the given CN, and its key (PEM)."""
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(rogue_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=90)).sign(rogue_key, hashes.SHA256())
    )
    key = rogue_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key.decode()


@pytest.fixture(scope="module")
def device(running_lab: Lab) -> Host:
    """The device the authentication checks play: the first modality with a certificate."""
    return _first_tls_station(running_lab)


@pytest.fixture(scope="module")
def bad_certificates(running_lab: Lab, device: Host) -> dict[str, str]:
    """A certificate from a rogue CA (same subject as the device) and an expired one from the
    device's own issuer, installed in the device's /tmp with their keys."""
    lab = running_lab
    cert, key = rogue_pair(device.name)
    im.copy_into(lab, device.name, "/tmp/rogue.crt", cert)
    im.copy_into(lab, device.name, "/tmp/rogue.key", key)
    csr = im.exec_in(lab, device.name, "openssl", "req", "-new", "-key", "/etc/pacslab/tls/node.key", "-subj", f"/CN={device.name}")
    expired = im.ca(lab, "issue", device.name, "--sans", f"DNS:{device.name},IP:{device.address}", "--expired", input=csr)
    im.copy_into(lab, device.name, "/tmp/expired.crt", expired["chain"])
    return {
        "rogue": "cert:/tmp/rogue.crt:/tmp/rogue.key",
        "expired": "cert:/tmp/expired.crt:/etc/pacslab/tls/node.key",
        "expired_pem": expired["cert"],
    }


# Each way a device without a valid certificate tries the PACS, and the refusal it must meet,
# as dicomsim reports it (pacslab/dicomsim.py refusal()): seen on the reference lab (the PACS's DICOM
# TLS front, stunnel 5.68 with OpenSSL 3.0, before Orthanc 1.10.1) and written out here.
REFUSED_TRANSPORTS: dict[str, tuple[list[str], dict[str, Any]]] = {
    "no-client-certificate": (["--tls", "nocert"], {"outcome": "tls-alert", "tls_alert": "certificate-required"}),
    "rogue-ca": (["--tls", "{rogue}"], {"outcome": "tls-alert", "tls_alert": "unknown-ca"}),
    "expired-certificate": (["--tls", "{expired}"], {"outcome": "tls-alert", "tls_alert": "certificate-expired"}),
    "tls-1.1": (["--tls-version", "TLSv1_1"], {"outcome": "tls-alert", "tls_alert": "protocol-version"}),  # RFC 8446 6.2
    "cleartext": (["--tls", "cleartext"], {"outcome": "closed", "reset": True, "pdus_received": []}),  # no A-ASSOCIATE-AC, a TCP reset
}


@pytest.mark.control("C-ACC-06")
def test_enrolled_device_stores_over_tls(running_lab: Lab, device: Host, evidence) -> None:
    pacs = the(running_lab, "pacs_servers").name
    before = im.instance_count(running_lab, pacs)
    result = im.dicomsim(running_lab, device.name, "store", "--images", "1", "--patient-name", "PACSLAB^AUTHN")
    evidence.update(outcome=result["outcome"], tls=result.get("tls_version"), stored=len(result["stored"]))
    assert result["outcome"] == "established" and result["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert len(result["stored"]) == 1 and im.instance_count(running_lab, pacs) == before + 1


@pytest.mark.control("C-ACC-06")
@pytest.mark.parametrize("case", sorted(REFUSED_TRANSPORTS))
def test_unauthenticated_device_is_refused(running_lab: Lab, device: Host, bad_certificates, case: str, evidence) -> None:
    args, expected = REFUSED_TRANSPORTS[case]
    pacs = the(running_lab, "pacs_servers").name
    before = im.instance_count(running_lab, pacs)
    result = im.dicomsim(running_lab, device.name, "store", "--images", "1", "--patient-name", "PACSLAB^REFUSED",
                         *[a.format(**bad_certificates) for a in args])
    seen = {k: result.get(k) for k in expected}
    evidence.update(case=case, refusal={k: v for k, v in result.items() if k not in ("stored", "failed", "latency_ms")})
    assert seen == expected, f"{case}: expected {expected}, the PACS answered {result}"
    assert not result["stored"] and im.instance_count(running_lab, pacs) == before


REFUSED_SENDERS = {
    "no-client-certificate": ["--no-cert"],
    "rogue-ca": ["--cert", "/tmp/rogue.crt", "--key", "/tmp/rogue.key"],
}
# What the RIS's HL7 front (stunnel 5.68, TLS 1.3, requireCert) answers each, as orders.py reports it
# (orders.py waits for the server's verdict before sending, so the alert cannot be lost to a race).
SENDER_REFUSALS: dict[str, dict[str, Any]] = {
    "no-client-certificate": {"error_type": "SSLError", "tls_alert": "certificate-required"},
    "rogue-ca": {"error_type": "SSLError", "tls_alert": "unknown-ca"},
}


@pytest.mark.control("C-ACC-06")
@pytest.mark.parametrize("case", list(REFUSED_SENDERS))
def test_order_without_a_listed_sender_certificate_is_refused(running_lab: Lab, case: str, evidence) -> None:
    """The RIS's TLS front takes orders only from certificates anchored in its HL7 bundle (the
    order-entry station's issuer); the workflow test is the positive twin (ACK AA)."""
    lab = running_lab
    sender, ris = order_entry(lab), the(lab, "ris_servers")
    cert, key = rogue_pair(sender.name)
    im.copy_into(lab, sender.name, "/tmp/rogue.crt", cert)
    im.copy_into(lab, sender.name, "/tmp/rogue.key", key)
    accession = f"R{secrets.token_hex(4).upper()}"
    station = _first_tls_station(lab)
    result = im.send_order(lab, sender.name, accession, str(station.ae_title), modality_of(lab, station), "PACSLAB^REFUSED", "PREFUSED",
                           *REFUSED_SENDERS[case])
    worklists = im.exec_in(lab, ris.name, "ls", "/var/lib/orthanc/worklists").split()
    evidence.update(case=case, answer=result)
    assert result["ack"] == "", f"{case}: the RIS answered {result}"
    assert {k: result.get(k) for k in SENDER_REFUSALS[case]} == SENDER_REFUSALS[case], f"{case}: the RIS answered {result}"
    assert f"{accession}.wl" not in worklists


# ---------------------------------------------------------------------------------------------
# C-ACC-05 application allow-listing


# A-ASSOCIATE-RJ as Orthanc sends it (seen on the reference lab), PS3.8 9.3.4 Table 9-21.
CALLING_AE_NOT_RECOGNIZED = {"result": 1, "source": 1, "reason": 3, "result_name": "rejected-permanent",
                             "source_name": "service-user", "reason_name": "calling-AE-title-not-recognized"}
CALLED_AE_NOT_RECOGNIZED = {"result": 1, "source": 1, "reason": 7, "result_name": "rejected-permanent",
                            "source_name": "service-user", "reason_name": "called-AE-title-not-recognized"}


def _store_refusals(lab: Lab) -> dict[str, tuple[str, list[str], dict[str, Any]]]:
    """case -> (the host that tries, dicomsim arguments, the A-ASSOCIATE-RJ it must get)."""
    first, *others = tls_stations(lab)
    assert others, "the checks need two modalities with certificates"
    return {
        "unknown-calling-ae": (first.name, ["--calling", "EVILMOD"], CALLING_AE_NOT_RECOGNIZED),
        "known-ae-wrong-address": (others[0].name, ["--calling", str(first.ae_title)], CALLING_AE_NOT_RECOGNIZED),
        "wrong-called-ae": (first.name, ["--called", "NOTPACS"], CALLED_AE_NOT_RECOGNIZED),
    }


@pytest.mark.control("C-ACC-05")
@pytest.mark.parametrize("case", ["known-ae-wrong-address", "unknown-calling-ae", "wrong-called-ae"])
def test_store_from_unlisted_application_is_refused(running_lab: Lab, case: str, evidence) -> None:
    host, args, expected = _store_refusals(running_lab)[case]
    pacs = the(running_lab, "pacs_servers").name
    before = im.instance_count(running_lab, pacs)
    result = im.dicomsim(running_lab, host, "store", "--images", "1", "--patient-name", "PACSLAB^EVIL", *args)
    evidence.update(case=case, outcome=result["outcome"], reject=result.get("reject"))
    assert result["outcome"] == "rejected", f"{case}: expected an A-ASSOCIATE-RJ, got {result}"
    assert result["reject"] == expected
    assert not result["stored"] and im.instance_count(running_lab, pacs) == before


@pytest.mark.control("C-ACC-05")
@pytest.mark.parametrize("who", ["reading-workstation", "modality"])
def test_only_the_workstation_may_query(running_lab: Lab, clinical: ClinicalRun, who: str, evidence) -> None:
    """The reading workstation finds the study (C-FIND status 0x0000 after the match); a modality,
    allowed to store but not to query, has its C-FIND answered by an A-ABORT from the PACS
    (source service-user: Orthanc's "DICOM authorization rejected"), with no status and no match."""
    lab = running_lab
    station = _first_tls_station(lab)
    host = reader(lab) if who == "reading-workstation" else station
    result = im.dicomsim(lab, host.name, "find", "--accession", clinical.accession[station.name])
    evidence.update(host=host.name, outcome=result["outcome"], matches=len(result["matches"]), statuses=result["statuses"], abort=result.get("abort"))
    assert result["outcome"] == "established"
    if who == "reading-workstation":
        assert [m["accession"] for m in result["matches"]] == [clinical.accession[station.name]]
        assert result["statuses"][-1] == "0x0000" and not result["aborted"]
    else:
        assert result["matches"] == [] and result["statuses"] == [None]
        assert result["aborted"] and result.get("abort", {}).get("source_name") == "service-user", result


@pytest.mark.control("C-ACC-05")
def test_a_modality_sees_only_its_own_worklist_items(running_lab: Lab, clinical: ClinicalRun, tls_station: str, evidence) -> None:
    """Least privilege (PR.AC-4): a broad worklist query (no station, no modality: what a curious or
    compromised device asks) answers only the items scheduled for the calling station's own AE
    title, while the RIS holds the other stations' items too (read on its disk: the premise that
    makes an answer without them a filter, not an empty worklist)."""
    lab = running_lab
    ris, station = the(lab, "ris_servers"), lab.hosts[tls_station]
    config = im.json.loads(im.read_from(lab, ris.name, "/etc/pacslab/orthanc/orthanc.json"))
    held = set(im.exec_in(lab, ris.name, "ls", config["Worklists"]["Database"]).split())
    others = {clinical.accession[h] for h in clinical.accession if h != station.name}
    assert others and {f"{a}.wl" for a in others} <= held, f"premise: the RIS holds the other stations' items {sorted(others)}"
    answer = im.dicomsim(lab, station.name, "worklist", "--peer", ris.name, "--broad")
    items = answer["items"]
    evidence.update(station=str(station.ae_title), items=len(items), stations=sorted({i["station"] for i in items}),
                    other_accessions_held=sorted(others))
    assert answer["established"], answer
    assert clinical.accession[station.name] in {i["accession"] for i in items}, "the station's own order is missing"
    assert {i["station"] for i in items} == {str(station.ae_title)}, "items of other stations were answered"
    assert not others & {i["accession"] for i in items}


@pytest.mark.control("C-ACC-05")
@pytest.mark.parametrize("registered", [True, False], ids=["registered", "unregistered-ATTACKER"])
def test_move_goes_only_to_registered_destinations(running_lab: Lab, clinical: ClinicalRun, registered: bool, evidence) -> None:
    """C-MOVE to the reading workstation completes; to an AE title the PACS does not list, it is
    answered 0xC000 (Orthanc 1.10.1: "Unknown modality for AET", not PS3.4's 0xA801) with nothing sent."""
    lab = running_lab
    pacs, ws, station = the(lab, "pacs_servers").name, reader(lab), _first_tls_station(lab)
    destination = str(ws.ae_title) if registered else "ATTACKER"
    study = im.find_study(lab, pacs, clinical.accession[station.name])[0]
    uid = im.orthanc(lab, pacs, f"/studies/{study}")["MainDicomTags"]["StudyInstanceUID"]
    log_before = len(im.read_from(lab, pacs, "/var/log/pacslab/orthanc.log"))
    result = im.dicomsim(lab, ws.name, "move", "--study", uid, "--destination", destination)
    log = im.read_from(lab, pacs, "/var/log/pacslab/orthanc.log")[log_before:]
    evidence.update(destination=destination, statuses=result["statuses"], completed=result.get("completed"))
    if registered:
        assert result["statuses"][-1] == "0x0000" and result.get("completed", 0) > 0, result
    else:
        assert result["statuses"] == ["0xC000"] and result.get("completed") == 0, result
        assert "Unknown modality for AET: ATTACKER" in log


# ---------------------------------------------------------------------------------------------
# C-DAT-03 integrity


@pytest.mark.control("C-DAT-03")
def test_flipped_byte_on_disk_is_detected(running_lab: Lab, evidence) -> None:
    """One image a modality stored (its own, not the clinical run's: `scenario check W4` runs this
    check alone, and with the clinical run it took 27 s instead of 4) has a byte flipped on the
    PACS's disk: a verification pass (POST /pacslab/verify) names it, and an integrity-failure
    event is logged; the pass before the flip did not name it."""
    lab = running_lab
    pacs = the(lab, "pacs_servers").name
    target = store_study(lab, "FB")["instance"]
    # Orthanc 1.10.1's REST API does not name the attachment's file: the index does.
    query = f"select a.uuid from attachedfiles a join resources r on a.id = r.internalid where r.publicid = '{target}' and a.filetype = 1"
    uuid = im.exec_in(lab, pacs, "su", "postgres", "-c", f'psql -h /var/run/postgresql -d orthanc -tAc "{query}"').strip()
    path = f"/var/lib/orthanc/db/{uuid[0:2]}/{uuid[2:4]}/{uuid}"
    flip = f"f=open('{path}','r+b');f.seek(4000);b=f.read(1);f.seek(4000);f.write(bytes([b[0]^0xFF]));f.close()"
    clean = im.orthanc(lab, pacs, "/pacslab/verify", "POST", "")
    im.exec_in(lab, pacs, "python3", "-c", flip)
    try:
        tampered = im.orthanc(lab, pacs, "/pacslab/verify", "POST", "")
        failures = _pacs_events(lab, pacs, "integrity-failure")
    finally:
        im.exec_in(lab, pacs, "python3", "-c", flip)  # flip it back: a later pass would name it again
    evidence.update(file=path, before=clean["failures"], after=tampered["failures"])
    assert target not in clean["failures"]
    assert target in tampered["failures"]
    assert any(e.get("instance") == target for e in failures), "no integrity-failure event"


@pytest.mark.control("C-DAT-03")
def test_resending_a_modified_instance_does_not_overwrite(running_lab: Lab, clinical: ClinicalRun, evidence) -> None:
    lab = running_lab
    pacs, station = the(lab, "pacs_servers").name, _first_tls_station(lab)
    original = clinical.pacs[station.name][0]
    forged = ["--patient-name", "PACSLAB^FORGED", "--sop-instance-uid", original["sop_instance_uid"]]
    result = im.dicomsim(lab, station.name, "store", "--images", "1", *forged)
    after = im.orthanc(lab, pacs, f"/instances/{original['id']}/attachments/dicom/md5", raw=True).strip()
    name = im.orthanc(lab, pacs, f"/instances/{original['id']}/simplified-tags")["PatientName"]
    evidence.update(store=result["stored"] or result["failed"], md5_before=original["md5"], md5_after=after, patient=name)
    assert after == original["md5"] and name == clinical.canary[station.name]


@pytest.mark.control("C-DAT-03")
def test_a_uid_that_is_not_a_dicom_uid_is_refused_and_named(running_lab: Lab, evidence) -> None:
    """PS3.5 9.1: a SOP Instance UID like "../../tmp/x" is refused with 0xC000 (Cannot understand)
    before it is stored, and a security event names the sender; the PACS holds nothing of it."""
    lab = running_lab
    pacs, station = the(lab, "pacs_servers").name, _first_tls_station(lab)
    uid = f"../../../../tmp/pacslab-{secrets.token_hex(4)}"
    result = im.dicomsim(lab, station.name, "store", "--images", "1", "--sop-instance-uid", uid)
    refused = [e for e in _pacs_events(lab, pacs, "invalid-uid-refused") if e.get("uids", {}).get("SOPInstanceUID") == uid]
    held = im.orthanc(lab, pacs, "/tools/lookup", "POST", uid)
    evidence.update(statuses=[f"0x{f['status']:04X}" for f in result["failed"]], event=refused[-1:] if refused else None, held=held)
    assert result["stored"] == [] and [f["status"] for f in result["failed"]] == [0xC000], result
    assert held == []
    assert refused and refused[-1]["calling_ae"] == str(station.ae_title), "no security event names the sender"


@pytest.mark.control("C-DAT-03")
def test_a_sop_instance_uid_held_in_another_study_is_refused(running_lab: Lab, evidence) -> None:
    """A SOP Instance UID names one object everywhere: object A in study S1 is stored (0x0000), a
    different object B with the same SOP Instance UID in study S2 is refused with 0x0111 (Duplicate
    SOP Instance), named in a security event; the PACS still holds A alone."""
    lab = running_lab
    pacs, station = the(lab, "pacs_servers").name, _first_tls_station(lab)
    uid = f"1.2.826.0.1.3680043.10.1077.9.{secrets.randbelow(10**18)}"
    first = im.dicomsim(lab, station.name, "store", "--images", "1", "--sop-instance-uid", uid)
    second = im.dicomsim(lab, station.name, "store", "--images", "1", "--sop-instance-uid", uid, "--patient-name", "PACSLAB^OTHER")
    held = [h for h in im.orthanc(lab, pacs, "/tools/lookup", "POST", uid) if h["Type"] == "Instance"]
    study = im.orthanc(lab, pacs, f"/instances/{held[0]['ID']}/simplified-tags")["StudyInstanceUID"] if held else None
    refused = [e for e in _pacs_events(lab, pacs, "duplicate-sop-instance-refused") if e.get("sop_instance_uid") == uid]
    evidence.update(first=[s["status"] for s in first["stored"] + first["failed"]], second=[s["status"] for s in second["stored"] + second["failed"]],
                    held=len(held), event=refused[-1:] if refused else None)
    assert [s["status"] for s in first["stored"]] == [0x0000], first
    a, b = first["stored"][0]["study_uid"], second["failed"][0]["study_uid"] if second["failed"] else None
    assert b is not None and b != a, f"premise: B is in another study ({second})"
    assert [f["status"] for f in second["failed"]] == [0x0111] and second["stored"] == [], second
    assert len(held) == 1 and study == a
    assert refused and refused[-1]["calling_ae"] == str(station.ae_title) and refused[-1]["held_study_uid"] == a


def test_the_workstation_names_no_file_after_a_received_value(running_lab: Lab, clinical: ClinicalRun, evidence) -> None:
    """The reading workstation's storage service names each file by the SHA-256 of its SOP
    Instance UID, never by the UID itself (a received "../" would have left the folder)."""
    lab = running_lab
    names = im.exec_in(lab, reader(lab).name, "ls", "/var/lib/pacslab/received").split()
    sop = next(iter(clinical.sent.values()))[0]["sop_instance_uid"]
    evidence.update(files=len(names), sample=names[:3])
    assert names and all(re.fullmatch(r"[0-9a-f]{64}\.dcm", n) for n in names), names[:10]
    assert f"{hashlib.sha256(sop.encode()).hexdigest()}.dcm" in names


# ---------------------------------------------------------------------------------------------
# C-DAT-05 certificate lifecycle


@pytest.fixture(scope="module")
def lab_root(running_lab: Lab) -> str:
    return im.read_from(running_lab, the(running_lab, "pki_servers").name, "/var/lib/pacslab-ca/root.crt")


@pytest.mark.control("C-DAT-05")
def test_certificate_in_use_is_sound(running_lab: Lab, lab_root: str, tls_host: str, evidence) -> None:
    chain = im.read_from(running_lab, tls_host, "/etc/pacslab/tls/chain.pem")
    problems = certs.audit(chain, lab_root)
    leaf = x509.load_pem_x509_certificate(chain.encode())
    evidence.update(subject=leaf.subject.rfc4514_string(), not_after=str(certs.not_after(leaf)), key=certs.key_strength(leaf))
    evidence.update(problems=problems)
    assert problems == []


def _fronts(lab: Lab) -> dict[str, tuple[str, str, int]]:
    """A TLS service -> (a client that may reach it, the server host, its port)."""
    pacs, ris = the(lab, "pacs_servers"), the(lab, "ris_servers")
    return {
        "pacs-dicom": (_first_tls_station(lab).name, pacs.name, pacs.dicom_port),
        "pacs-https": (pacs.name, pacs.name, pacs.service("https").port),  # only the (planned) reverse proxy may cross the fw to it
        "ris-hl7": (order_entry(lab).name, ris.name, ris.service("hl7").port),
    }


@pytest.mark.control("C-DAT-05")
@pytest.mark.parametrize("front", ["pacs-dicom", "pacs-https", "ris-hl7"])
def test_presented_certificate_is_the_installed_one(running_lab: Lab, front: str, evidence) -> None:
    """What each TLS service presents is what the audit above looked at (a front still serving
    a certificate the pki role has replaced would differ)."""
    client, server, port = _fronts(running_lab)[front]
    out = im.exec_in(
        running_lab, client, "sh", "-c",
        f"openssl s_client -connect {running_lab.hosts[server].address}:{port} -cert /etc/pacslab/tls/chain.pem "
        "-key /etc/pacslab/tls/node.key -CAfile /etc/pacslab/tls/trusted.pem </dev/null 2>/dev/null | openssl x509",
    )
    installed = im.read_from(running_lab, server, "/etc/pacslab/tls/node.crt")
    evidence.update(presented=out.splitlines()[1][:40] if out else None)
    assert out.strip() == installed.strip()


@pytest.mark.control("C-DAT-05")
@pytest.mark.parametrize("kind", ["expired", "rogue-ca", "weak-key"])
def test_expiry_report_names_a_bad_certificate(running_lab: Lab, lab_root: str, device: Host, bad_certificates, kind: str, evidence) -> None:
    if kind == "expired":
        pem = bad_certificates["expired_pem"]
        chain = pem + im.read_from(running_lab, device.name, "/etc/pacslab/tls/chain.pem").split("-----END CERTIFICATE-----\n", 1)[1]
    elif kind == "rogue-ca":
        chain = im.read_from(running_lab, device.name, "/tmp/rogue.crt")
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=90)).sign(key, hashes.SHA256())
        )
        chain = cert.public_bytes(serialization.Encoding.PEM).decode()
    problems = certs.audit(chain, lab_root)
    evidence.update(kind=kind, problems=problems)
    word = {"expired": "days left", "rogue-ca": "not issued by the lab CA", "weak-key": "weak key"}[kind]
    assert any(word in p for p in problems), problems


def _keys(pem: str) -> set[bytes]:
    """The public keys of the certificates in a PEM bundle (DER SubjectPublicKeyInfo)."""
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return {c.public_key().public_bytes(*spki) for c in x509.load_pem_x509_certificates(pem.encode())} if pem.strip() else set()


@pytest.mark.control("C-ACC-06")
def test_trust_bundle_holds_exactly_the_issuers_of_its_flow_peers(running_lab: Lab, tls_host: str, evidence) -> None:
    """The bundle a node verifies its TLS peers with holds the issuing key of each peer the lab names
    for it (read from that peer's own chain), and nothing else: no lab root, no stranger."""
    lab = running_lab
    host = lab.hosts[tls_host]
    path = "/etc/pacslab/orthanc/trusted.pem" if host.image == "orthanc" else "/etc/pacslab/tls/trusted.pem"  # what the service reads
    bundle = _keys(im.exec_in(lab, tls_host, "cat", path, check=False))
    peers = sorted(tls_peers(lab, host))
    issuers = {p: _keys(im.read_from(lab, p, "/etc/pacslab/tls/chain.pem").split("-----END CERTIFICATE-----\n", 1)[1]) for p in peers}
    evidence.update(bundle=path, anchors=len(bundle), peers=peers)
    assert all(len(k) == 1 for k in issuers.values()), f"a peer's chain does not hold exactly one issuer: {issuers}"
    assert bundle == set().union(*issuers.values()), f"{tls_host} trusts other keys than the issuers of {peers}"


@pytest.mark.control("C-DAT-05")
def test_ca_inventory_lists_every_enrolled_node(running_lab: Lab, evidence) -> None:
    inventory = im.ca(running_lab, "inventory")
    valid = {r["name"] for r in inventory if r["status"] == "valid"}
    expected = {h.name for h in tls_hosts(running_lab)}
    evidence.update(valid=sorted(valid), expected=sorted(expected))
    assert expected and expected <= valid


# C-PRT-02 least functionality (listeners, the scan, Orthanc's refusals): tests/integration/test_facts.py


# ---------------------------------------------------------------------------------------------
# Robustness: the PACS keeps serving the other modality, stores nothing bad, logs each event


@pytest.mark.parametrize("case", ["garbage", "truncated-pdu", "flood", "malformed-object", "unknown-sop-class"])
def test_pacs_survives_misbehaving_device(running_lab: Lab, case: str, evidence) -> None:
    lab = running_lab
    pacs = the(lab, "pacs_servers").name
    steady, rogue = tls_stations(lab)[:2]  # one modality misbehaves, the other must still be served
    before = im.instance_count(lab, pacs)
    log_before = len(im.read_from(lab, pacs, "/var/log/pacslab/orthanc.log"))
    if case == "garbage":
        result = im.dicomsim(lab, rogue.name, "raw", "--hex", secrets.token_hex(512))
    elif case == "truncated-pdu":
        result = im.dicomsim(lab, rogue.name, "raw", "--hex", "010000000400" + "0001" + "00" * 10)  # A-ASSOCIATE-RQ, 1024 bytes promised
    elif case == "flood":
        result = im.dicomsim(lab, rogue.name, "flood", "--count", "30", "--hold", "3")
        assert result["seconds"] < 120
    elif case == "malformed-object":
        result = im.dicomsim(lab, rogue.name, "store", "--images", "1", "--malformed")
        assert not result["stored"]
    else:
        result = im.dicomsim(lab, rogue.name, "store", "--images", "1", "--sop-class-uid", "1.2.826.0.1.3680043.10.1077.99.1")
        assert not result["stored"]
    still = im.dicomsim(lab, steady.name, "echo")
    log = im.read_from(lab, pacs, "/var/log/pacslab/orthanc.log")[log_before:]
    evidence.update(case=case, result={k: v for k, v in result.items() if k in ("error", "received", "outcome", "attempted", "failed")},
                    other_modality=still.get("status"), log_lines=len(log.splitlines()))
    assert still["outcome"] == "established" and still["status"] == "0x0000", f"the PACS stopped serving {steady.ae_title}"
    assert im.instance_count(lab, pacs) == before
    assert str(rogue.address) in log or "Receiving Association failed" in log, "the PACS did not log the event"


# ---------------------------------------------------------------------------------------------
# C-ACC-06 / C-DAT-05 revocation: test_access_changes.py, whose one `up` also disables a person.


# ---------------------------------------------------------------------------------------------
# A PACS killed mid-series (changes nothing lasting: supervisor restarts Orthanc)


KILLED_SERIES = 120  # instances; the PACS is killed once KILL_AFTER of them are on it
KILL_AFTER = 30


def _store_through_a_kill(lab: Lab, station: Host, retries: int) -> tuple[dict[str, Any], set[str], str]:
    """mod-* stores a series while Orthanc on the PACS is killed (SIGKILL) once KILL_AFTER instances are
    on it; (the modality's JSON result, the SOP Instance UIDs the PACS holds afterwards, the accession)."""
    pacs = the(lab, "pacs_servers").name
    accession = f"K{secrets.token_hex(4).upper()}"
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(im.dicomsim, lab, station.name, "store", "--images", str(KILLED_SERIES), "--accession", accession,
                              "--retries", str(retries))
        study = im.wait_for("the series reaching the PACS", lambda: im.find_study(lab, pacs, accession), timeout=60, every=0.2)[0]
        im.wait_for(f"{KILL_AFTER} instances on the PACS",
                    lambda: len(im.orthanc(lab, pacs, f"/studies/{study}/instances")) >= KILL_AFTER, timeout=60, every=0.2)
        im.exec_in(lab, pacs, "pkill", "-KILL", "-x", "Orthanc")
        result = running.result(timeout=300)
    im.wait_for("Orthanc back on the PACS", lambda: im.exec_in(lab, pacs, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                                               "http://127.0.0.1:8042/system", check=False).strip() == "401", timeout=60)
    held = {i["MainDicomTags"]["SOPInstanceUID"] for i in im.orthanc(lab, pacs, f"/studies/{study}/instances")}
    return result, held, accession


@pytest.mark.lifecycle
def test_a_modality_resends_what_a_killed_pacs_did_not_acknowledge(running_lab: Lab, evidence) -> None:
    """Orthanc killed (SIGKILL) mid-series: the modality keeps every instance left without an answer
    and sends it again on a new association once supervisor has restarted Orthanc; every instance
    sent is on the PACS exactly once (one SOP Instance UID, one instance)."""
    lab = running_lab
    result, held, _ = _store_through_a_kill(lab, _first_tls_station(lab), retries=5)
    stored = [s["sop_instance_uid"] for s in result["stored"]]
    evidence.update(attempts=result["attempts"], stored=len(stored), unacknowledged=len(result["unacknowledged"]), held=len(held))
    first = result["attempts"][0]
    assert len(result["attempts"]) >= 2 and first["outcome"] == "established" and first.get("error"), result["attempts"]
    assert result["unacknowledged"] == [] and result["failed"] == [], result["attempts"]
    assert len(stored) == len(set(stored)) == KILLED_SERIES
    assert held == set(stored)


@pytest.mark.lifecycle
def test_without_retries_the_modality_names_what_was_not_acknowledged(running_lab: Lab, evidence) -> None:
    """The twin, retries off: the one-shot store still ends with its JSON, which names the instances
    the PACS acknowledged and those it did not; the PACS holds every acknowledged one, and of the
    others at most the one in flight when Orthanc died."""
    lab = running_lab
    result, held, _ = _store_through_a_kill(lab, _first_tls_station(lab), retries=0)
    stored = {s["sop_instance_uid"] for s in result["stored"]}
    missing = [u["sop_instance_uid"] for u in result["unacknowledged"]]
    evidence.update(attempts=result["attempts"], stored=len(stored), unacknowledged=len(missing), held=len(held))
    assert len(result["attempts"]) == 1 and result["attempts"][0].get("error")
    assert missing and len(stored) + len(missing) == KILLED_SERIES
    assert stored <= held and held - stored <= set(missing[:1])
