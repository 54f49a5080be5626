"""The DICOM TLS listeners (issue 10, items 9 and 10): a stalled peer cannot stop the others, and
every DICOM TLS port speaks TLS 1.2 with the BCP 195 AEAD suites and TLS 1.3, and nothing older.

Each listener is probed from a host that the lab's flows let reach it, with that host's own lab
certificate: the PACS and the RIS worklist from the modalities, the VNA and the reading workstation
from the PACS (their only peer). Independent clients: OpenSSL's s_client, DCMTK's echoscu with each of
its TLS profiles, and pynetdicom (dicomsim) capped at TLS 1.2. Expected outcomes are written out.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from pacslab.docker import docker
from pacslab.firewall import PREFIX_RATE
from pacslab.plan import LABEL_LAB
from pacslab.probes import imaging as im
from pacslab.probes import segmentation as seg
from pacslab.probes import standins, tlsgrade
from pacslab.topology import Host, Lab

from .test_imaging import reader, the, tls_stations

TLS = "/etc/pacslab/tls"  # every enrolled node's key, chain and trust bundle (roles/pki)
STALL_HOLD = 40  # seconds the stalling peer waits for the listener to cut it; the fronts cut after 10

# A ClientHello's record and handshake headers, cut short: the first bytes of a handshake, then nothing.
STALL = """
import json, socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(bytes.fromhex("1603010200010001fc0303"))
s.settimeout(float(sys.argv[3]))
start = time.monotonic()
try:
    data = s.recv(4096)
    print(json.dumps({"cut": True, "after": round(time.monotonic() - start, 1), "first_byte": data[:1].hex()}))
except ConnectionResetError:
    print(json.dumps({"cut": True, "after": round(time.monotonic() - start, 1), "first_byte": "reset"}))
except TimeoutError:
    print(json.dumps({"cut": False, "after": round(time.monotonic() - start, 1)}))
"""


def listeners(lab: Lab) -> dict[str, tuple[Host, Host, Host]]:
    """listener -> (its host, the peer that stalls, the peer that must still be served)."""
    pacs, vna, ris, ws = the(lab, "pacs_servers"), the(lab, "vna_servers"), the(lab, "ris_servers"), reader(lab)
    first, second = tls_stations(lab)[:2]
    return {"pacs": (pacs, second, first), "ris-worklist": (ris, second, first), "vna": (vna, pacs, pacs), "ws-rad-storage": (ws, pacs, pacs)}


def _served(lab: Lab, server: Host, client: Host) -> dict[str, Any]:
    """A fresh association from ``client`` to ``server``: dicomsim from a modality, else the PACS's own
    C-ECHO (Orthanc's REST /modalities/<AE>/echo, which answers {} on success)."""
    if client.image == "dicom":
        peer = "ris" if "ris_servers" in server.groups else "pacs"
        return im.dicomsim(lab, client.name, "echo", "--peer", peer)
    status, _ = im.orthanc_call(lab, client.name, f"/modalities/{server.ae_title}/echo", "POST", "{}", max_time=30)
    return {"outcome": "established" if status == 200 else f"http {status}", "status": "0x0000" if status == 200 else None}


@pytest.fixture(scope="module")
def stalls(running_lab: Lab) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Every listener stalled at once (each is cut after about 10 s: one wait for all four), each
    other peer's association made while its listener's stall is held: listener -> (served, stall)."""
    lab = running_lab
    targets = listeners(lab)
    with ThreadPoolExecutor(len(targets)) as pool:
        held = {name: pool.submit(im.exec_in, lab, staller.name, "python3", "-c", STALL, str(server.address), str(server.dicom_port),
                                  str(STALL_HOLD), timeout=STALL_HOLD + 30) for name, (server, staller, _) in targets.items()}
        time.sleep(1.5)  # the stalls are in place
        served = {name: _served(lab, server, client) for name, (server, _, client) in targets.items()}
        return {name: (served[name], json.loads(held[name].result().strip().splitlines()[-1])) for name in targets}


@pytest.mark.control("C-PRT-05")
@pytest.mark.parametrize("listener", ["pacs", "ris-worklist", "vna", "ws-rad-storage"])
def test_a_stalled_handshake_does_not_stop_other_peers(running_lab: Lab, stalls, listener: str, evidence) -> None:
    """Item 9: a peer sends the first bytes of a TLS handshake and then nothing. Another peer's new
    association is still answered (C-ECHO 0x0000) while the stall is held, and the listener cuts the
    stalled connection by itself (it closes it, with or without an alert, before STALL_HOLD)."""
    server, staller, client = listeners(running_lab)[listener]
    served, held = stalls[listener]
    evidence.update(listener=listener, staller=staller.name, client=client.name, served=served.get("outcome"), stall=held)
    assert (served["outcome"], served["status"]) == ("established", "0x0000"), served
    assert held["cut"] and held["first_byte"] in ("", "15", "reset"), held  # closed, a TLS alert record, or a reset


# ---------------------------------------------------------------------------------------------
# Item 10: TLS versions and suites per DICOM TLS port (DICOM PS3.15 B.12, BCP 195)

AEAD = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384"]  # the lab's keys are ECDSA P-256
NOT_AEAD = ["ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES128-SHA"]  # CBC with SHA-256, CBC with SHA-1
# case -> (s_client arguments, what OpenSSL must report): the negotiated version and suite, or the alert.
OPENSSL_CASES: dict[str, tuple[list[str], dict[str, str]]] = {
    **{f"tls1.2-{c}": (["-tls1_2", "-cipher", c], {"protocol": "TLSv1.2", "cipher": c}) for c in AEAD},
    **{f"tls1.2-{c}": (["-tls1_2", "-cipher", c], {"alert": "handshake failure"}) for c in NOT_AEAD},
    "tls1.3": (["-tls1_3"], {"protocol": "TLSv1.3"}),
    "tls1.1": (["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"], {"alert": "protocol version"}),
    "tls1.0": (["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"], {"alert": "protocol version"}),
}


def _s_client(lab: Lab, client: Host, server: Host, args: list[str]) -> dict[str, str]:
    out = im.exec_in(lab, client.name, "sh", "-c", 'openssl s_client "$@" </dev/null 2>&1; true', "s_client", "-brief",
                     "-connect", f"{server.address}:{server.dicom_port}", "-servername", server.name, "-cert", f"{TLS}/chain.pem",
                     "-key", f"{TLS}/node.key", "-CAfile", f"{TLS}/trusted.pem", *args, timeout=60)
    seen: dict[str, str] = {}
    if m := re.search(r"^Protocol version: (\S+)", out, re.M):
        seen["protocol"] = m[1]
    if m := re.search(r"^Ciphersuite: (\S+)", out, re.M):
        seen["cipher"] = m[1]
    if m := re.search(r"alert ([a-z ]+?)(?::|\n| \(|$)", out, re.M):
        seen["alert"] = m[1].strip()
    return seen


@pytest.mark.control("C-DAT-02")
@pytest.mark.parametrize("case", list(OPENSSL_CASES))
@pytest.mark.parametrize("listener", ["pacs", "ris-worklist", "vna", "ws-rad-storage"])
def test_a_dicom_tls_port_speaks_tls_1_2_with_aead_and_1_3_only(running_lab: Lab, listener: str, case: str, evidence) -> None:
    lab = running_lab
    server, _, client = listeners(lab)[listener]
    args, expected = OPENSSL_CASES[case]
    seen = _s_client(lab, client, server, args)
    evidence.update(listener=listener, client=client.name, seen=seen)
    assert {k: seen.get(k) for k in expected} == expected, seen


@pytest.mark.control("C-DAT-02")
@pytest.mark.parametrize("listener", ["pacs", "ris-worklist"])
def test_pynetdicom_capped_at_tls_1_2_is_answered(running_lab: Lab, listener: str, evidence) -> None:
    """A modality whose TLS stops at 1.2 (many installed ones) associates and is answered."""
    lab = running_lab
    server, _, client = listeners(lab)[listener]
    result = im.dicomsim(lab, client.name, "echo", "--peer", "ris" if listener == "ris-worklist" else "pacs", "--tls-version", "TLSv1_2")
    evidence.update(listener=listener, outcome=result["outcome"], tls=result.get("tls_version"))
    assert (result["outcome"], result.get("tls_version"), result.get("status")) == ("established", "TLSv1.2", "0x0000"), result


# DCMTK 3.6.7's echoscu (/usr/bin: pynetdicom's own echoscu is first on PATH) with each of its TLS
# profiles: the three BCP 195 ones are answered, the AES profile (TLS_RSA with CBC) and the null
# profile (no encryption) are refused. What it printed (-d), written out.
DCMTK_PROFILES: dict[str, dict[str, str]] = {
    "+py": {"result": "Received Echo Response (Success)", "protocol": "TLSv1.3"},  # non-downgrading BCP 195, the default
    "+px": {"result": "Received Echo Response (Success)", "protocol": "TLSv1.3"},  # BCP 195
    "+pz": {"result": "Received Echo Response (Success)", "protocol": "TLSv1.2"},  # extended BCP 195: TLS 1.2, four AEAD suites
    "+pa": {"result": "TLS error: sslv3 alert handshake failure"},  # AES profile: TLS_RSA_WITH_AES_128_CBC_SHA
    "+pn": {"result": "TLS error: sslv3 alert handshake failure"},  # authenticated, unencrypted
}


@pytest.mark.control("C-DAT-02")
@pytest.mark.parametrize("profile", list(DCMTK_PROFILES))
@pytest.mark.parametrize("listener", ["pacs", "ris-worklist"])
def test_dcmtk_tls_profiles(running_lab: Lab, listener: str, profile: str, evidence) -> None:
    lab = running_lab
    server, _, client = listeners(lab)[listener]
    out = im.exec_in(lab, client.name, "sh", "-c", '/usr/bin/echoscu "$@" 2>&1', "echoscu", "-d", "-aet", str(client.ae_title),
                     "-aec", str(server.ae_title), "+tls", f"{TLS}/node.key", f"{TLS}/chain.pem", "+cf", f"{TLS}/trusted.pem", profile,
                     str(server.address), str(server.dicom_port), check=False, timeout=60)
    seen = {"result": next((r for r in ("Received Echo Response (Success)", "TLS error: sslv3 alert handshake failure") if r in out), "")}
    if m := re.search(r"Protocol\s+: (\S+)", out):
        seen["protocol"] = m[1]
    if m := re.search(r"Ciphersuite : ([^\s,]+)", out):
        seen["cipher"] = m[1]
    evidence.update(listener=listener, profile=profile, seen=seen)
    expected = DCMTK_PROFILES[profile]
    assert {k: seen.get(k) for k in expected} == expected, out[-1500:]
    if seen.get("protocol") == "TLSv1.2":
        assert seen["cipher"] in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384"), seen


# nmap's grade (ssl-enum-ciphers) per DICOM TLS port. nmap runs in a tools container that joins the
# listener's own network namespace and scans the address its peers use: the grade is the listener's
# TLS configuration, and from there no fw rate limit (C-PRT-05) drops the script's many short
# connections (from a modality, one scan met 21 rate-limit drops, and two at once lost TLS 1.2 now
# and then). The peers' own path is what the openssl, DCMTK and pynetdicom cases above take.
# What nmap 7.93 must report, written out: the lab's keys are ECDSA P-256.
NMAP_EXPECTED = {
    "state": "open",
    "least strength": "A",
    "protocols": {
        "TLSv1.2": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"],
        "TLSv1.3": ["TLS_AKE_WITH_AES_128_GCM_SHA256", "TLS_AKE_WITH_AES_256_GCM_SHA384", "TLS_AKE_WITH_CHACHA20_POLY1305_SHA256"],
    },
    "warnings": [],
}


@pytest.fixture(scope="module")
def nmap_grades(running_lab: Lab, plan) -> dict[str, tlsgrade.TlsGrade]:
    """listener -> nmap's grade, the four scans at once."""
    lab = running_lab
    targets = listeners(lab)
    with ThreadPoolExecutor(len(targets)) as pool:
        grades = {name: pool.submit(tlsgrade.scan, lab.container_name(server.name), plan.tools_image, str(server.address),
                                    int(server.dicom_port or 0)) for name, (server, _, _) in targets.items()}
        return {name: g.result() for name, g in grades.items()}


@pytest.mark.control("C-DAT-02")
@pytest.mark.parametrize("listener", ["pacs", "ris-worklist", "vna", "ws-rad-storage"])
def test_nmap_grades_each_dicom_tls_port_a_with_tls_1_2_aead_and_1_3(nmap_grades, listener: str, evidence) -> None:
    seen = nmap_grades[listener].summary()
    evidence.update(listener=listener, nmap=seen)
    assert seen == NMAP_EXPECTED, seen


# The throwaway weak listener, on its own loopback (no network at all), on the DICOM TLS port number:
# ssl-enum-ciphers runs only on ports nmap knows as TLS (2762 is "dicom-tls" in its services table).
WEAK_SERVER = 2762


def _listening(container: str, port: int) -> bool:
    """A socket of ``container`` listens on ``port`` (the kernel's table: state 0A is LISTEN)."""
    table = docker("exec", container, "cat", "/proc/net/tcp", "/proc/net/tcp6").stdout.splitlines()
    return any(f[1].endswith(f":{port:04X}") and f[3] == "0A" for f in (ln.split() for ln in table) if len(f) > 3)


@pytest.mark.control("C-DAT-02")
def test_nmap_grade_check_fails_on_a_listener_with_the_old_suites(plan, running_lab: Lab, evidence) -> None:
    """Negative twin: an OpenSSL server with no cipher or version policy (every suite at security
    level 0, TLS 1.0 to 1.2, as stunnel's defaults offered CBC and SHA-1 suites before the fronts
    were restricted) in a container with no network; nmap from its namespace grades it F, lists TLS
    1.0 and 1.1 and CBC suites, and the same comparison as above fails."""
    image = next(c.image for c in plan.containers if c.host == listeners(running_lab)["pacs"][2].name)  # has the openssl CLI
    name = f"{running_lab.prefix}-tlsgrade-weak"
    docker("rm", "-f", name, check=False)
    docker("run", "-d", "--name", name, "--network", "none", "--label", f"{LABEL_LAB}={running_lab.name}", image, "sh", "-c",
           "cd /tmp && openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=weak -keyout k.pem -out c.pem -days 1 2>/dev/null"
           f' && exec openssl s_server -quiet -accept {WEAK_SERVER} -cert c.pem -key k.pem -no_tls1_3 -cipher "ALL:@SECLEVEL=0"')
    try:
        im.wait_for("the weak listener", lambda: _listening(name, WEAK_SERVER) or None, timeout=60, every=0.5)
        seen = tlsgrade.scan(name, plan.tools_image, "127.0.0.1", WEAK_SERVER).summary()
    finally:
        docker("rm", "-f", name, check=False)
    evidence.update(nmap=seen)
    protocols = seen["protocols"]
    assert isinstance(protocols, dict)
    assert seen["least strength"] == "F" and {"TLSv1.0", "TLSv1.1", "TLSv1.2"} <= set(protocols), seen
    assert "TLS_RSA_WITH_AES_128_CBC_SHA" in protocols["TLSv1.2"], protocols["TLSv1.2"]
    assert seen != NMAP_EXPECTED


# ---------------------------------------------------------------------------------------------
# Item 11: an association flood from one modality (C-PRT-05)

FLOOD = 40  # associations opened at once by the flooding modality
FLOOD_HOLD = 5  # seconds each is held
SERIES = 20  # instances the other modality stores meanwhile


@pytest.mark.control("C-PRT-05")
def test_a_flood_from_one_modality_is_limited_and_logged_while_another_stores(running_lab: Lab, evidence) -> None:
    """One modality opens FLOOD associations at once to the PACS while another stores a series: the
    fw drops the flooding source's excess SYNs with the rate-limit prefix (PREFIX_RATE, its NFLOG
    line names the source), never the other's; the other modality's series is stored in full on its
    first association (no retry needed). The time ratio to an unflooded store is bench/availability.py's."""
    lab = running_lab
    steady, flooder = tls_stations(lab)[:2]
    offset = standins.drop_log_mark(lab)
    with ThreadPoolExecutor(1) as pool:
        flood = pool.submit(im.dicomsim, lab, flooder.name, "flood", "--count", str(FLOOD), "--hold", str(FLOOD_HOLD))
        time.sleep(0.5)
        stored = im.dicomsim(lab, steady.name, "store", "--images", str(SERIES), "--accession", f"FLOOD{int(time.time()) % 10**6}")
        flooded = flood.result()
    entries = im.wait_for("the fw's rate-limit lines", lambda: [e for e in seg.parse_drop_log(standins.read_drop_log(lab, offset))
                                                                if e.get("oob.prefix") == PREFIX_RATE] or None, timeout=15, every=1)
    sources = {e.get("src_ip") for e in entries}
    evidence.update(flood=flooded, stored=len(stored["stored"]), attempts=stored["attempts"], seconds=stored["seconds"],
                    rate_limited_sources=sorted(str(s) for s in sources), lines=len(entries))
    assert sources == {str(flooder.address)}, sources
    assert {e.get("dest_port") for e in entries} == {server_port(lab)}
    assert len(stored["stored"]) == SERIES and stored["unacknowledged"] == [] and len(stored["attempts"]) == 1, stored["attempts"]


def server_port(lab: Lab) -> int:
    return int(the(lab, "pacs_servers").dicom_port or 0)
