"""dicomsim reports why an association failed, as the integration checks assert it: the TLS alert
the server sent, the A-ASSOCIATE-RJ result/source/reason (PS3.8 9.3.4), a reset, a timeout.

Real peers on loopback, no mocks: a pynetdicom SCP with dicomsim's own mutual-TLS server context
(the workstation's storage SCP), certificates made here. The expected outcomes are written out.
"""

from __future__ import annotations

import datetime as dt
import errno
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from pacslab import dicomsim
from pacslab.topology import REPO_ROOT

NOW = dt.datetime.now(dt.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey, *,
           ca: bool = False, days: tuple[int, int] = (-1, 30)) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer)).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=days[0])).not_valid_after(NOW + dt.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(folder: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    (folder / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        (folder / f"{name}.key").write_bytes(pem)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root -> server, device, expired device; rogue (self-signed, same subject as the device)."""
    folder = tmp_path_factory.mktemp("pki")
    root_key, rogue_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = _issue("root", root_key, "root", root_key, ca=True)
    _write(folder, "root", root)
    for name, days in (("server", (-1, 30)), ("device", (-1, 30)), ("expired", (-30, -1))):
        key = ec.generate_private_key(ec.SECP256R1())
        _write(folder, name, _issue(name if name != "expired" else "device", key, "root", root_key, days=days), key)
    _write(folder, "rogue", _issue("device", rogue_key, "device", rogue_key), rogue_key)
    return folder


# The lab's TLS policy, as roles/dicom_node writes it into dicom.json.
TLS_POLICY = yaml.safe_load((REPO_ROOT / "playbooks" / "group_vars" / "all" / "tls.yml").read_text())["pacslab_tls12_ciphers"]


def _cfg(pki: Path, port: int, name: str = "device") -> dict[str, Any]:
    return {
        "ae_title": "CT01",
        "tls": {"cert": str(pki / f"{name}.crt"), "key": str(pki / f"{name}.key"), "trusted": str(pki / "root.crt"), "tls12_ciphers": TLS_POLICY},
        "peers": {"pacs": {"host": "127.0.0.1", "port": port, "ae_title": "PACS"}},
    }


@pytest.fixture(scope="module")
def scp(pki: Path) -> Iterator[int]:
    """A Verification SCP over mutual TLS (dicomsim.server_context) that knows only CT01 and
    checks the called AE title; its port."""
    ae = AE(ae_title="PACS")
    ae.add_supported_context(Verification)
    ae.require_calling_aet = ["CT01"]
    ae.require_called_aet = True
    server = ae.start_server(("127.0.0.1", 0), block=False, ssl_context=dicomsim.server_context(_cfg(pki, 0, "server")))
    yield server.server_address[1]
    server.shutdown()


def _echo(pki: Path, port: int, **kw: Any) -> dict[str, Any]:
    return dicomsim.echo(_cfg(pki, port), "pacs", **kw)


def test_a_device_with_its_certificate_is_answered(pki: Path, scp: int) -> None:
    out = _echo(pki, scp)
    assert (out["outcome"], out["status"], out["tls_version"]) == ("established", "0x0000", "TLSv1.3")


def test_a_probe_that_waits_for_the_verdict_is_still_answered_when_accepted(pki: Path, scp: int) -> None:
    """The negative probes' socket (VerdictSocket) listens after its handshake: a valid certificate
    given explicitly is accepted all the same."""
    out = _echo(pki, scp, tls=f"cert:{pki}/device.crt:{pki}/device.key")
    assert (out["outcome"], out["status"]) == ("established", "0x0000")


# case -> (dicomsim keyword arguments, what dicomsim must report), written out.
REFUSALS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "no-client-certificate": ({"tls": "nocert"}, {"outcome": "tls-alert", "tls_alert": "certificate-required"}),
    "rogue-ca": ({"tls": "cert:{pki}/rogue.crt:{pki}/rogue.key"}, {"outcome": "tls-alert", "tls_alert": "unknown-ca"}),
    "expired": ({"tls": "cert:{pki}/expired.crt:{pki}/expired.key"}, {"outcome": "tls-alert", "tls_alert": "certificate-expired"}),
    "tls-1.1": ({"tls_version": "TLSv1_1"}, {"outcome": "tls-alert", "tls_alert": "protocol-version"}),
    "unknown-calling-ae": ({"calling": "EVILMOD"}, {"outcome": "rejected", "reject": {
        "result": 1, "source": 1, "reason": 3,
        "result_name": "rejected-permanent", "source_name": "service-user", "reason_name": "calling-AE-title-not-recognized"}}),
    "wrong-called-ae": ({"called": "NOTPACS"}, {"outcome": "rejected", "reject": {
        "result": 1, "source": 1, "reason": 7,
        "result_name": "rejected-permanent", "source_name": "service-user", "reason_name": "called-AE-title-not-recognized"}}),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusal_is_reported_with_its_reason(pki: Path, scp: int, case: str) -> None:
    kw, expected = REFUSALS[case]
    out = _echo(pki, scp, **{k: v.format(pki=pki) for k, v in kw.items()})
    assert {k: out.get(k) for k in expected} == expected, out
    assert out["established"] is False and "status" not in out


@pytest.mark.parametrize("suite, expected", [
    ("ECDHE-ECDSA-AES128-GCM-SHA256", ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")),
    ("ECDHE-ECDSA-AES128-SHA256", "SSLV3_ALERT_HANDSHAKE_FAILURE"),  # CBC: not in the policy
    ("ECDHE-ECDSA-AES128-SHA", "SSLV3_ALERT_HANDSHAKE_FAILURE"),
])
def test_the_scp_takes_its_tls_1_2_suites_from_the_config(pki: Path, scp: int, suite: str, expected: object) -> None:
    """A TLS 1.2 client offering one suite: an AEAD suite of the lab's policy is negotiated, a CBC
    suite gets a handshake-failure alert."""
    ctx = ssl.create_default_context(cafile=str(pki / "root.crt"))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(pki / "device.crt"), str(pki / "device.key"))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(suite)
    with socket.create_connection(("127.0.0.1", scp), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw) as tls:
                seen: object = (tls.version(), tls.cipher()[0])
        except ssl.SSLError as exc:
            seen = exc.reason
    assert seen == expected


def test_cleartext_to_a_tls_port_is_closed_without_an_association(pki: Path, scp: int) -> None:
    out = _echo(pki, scp, tls="cleartext")
    assert (out["outcome"], out["pdus_received"]) == ("closed", []), out  # reset or not: when the SCP closes is its thread's timing


def test_a_closed_port_is_refused(pki: Path) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = _echo(pki, port)
    assert out["outcome"] == "refused" and "Connection refused" in out["error"], out


def test_a_reset_reported_by_the_connect_is_the_peers_cut(pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A listener that accepts and resets at once (the legacy overlay gateway's allow-list, stunnel's
    libwrap) can reach a loaded host's kernel before the connect returns: the connect itself then
    fails with ECONNRESET. That is the peer's cut, as after a connect: closed, reset, no PDU. A store
    tries again, as it did when this was reported as unreachable (a TLS front restarting may reset a
    handshake; dicomsim.RETRY_OUTCOMES). The reset is played by the socket's connect, which completes
    the TCP handshake with a real listener first."""
    real_connect = socket.socket.connect

    def reset_at_connect(self: socket.socket, address: Any) -> None:
        real_connect(self, address)
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        monkeypatch.setattr(socket.socket, "connect", reset_at_connect)
        out = _echo(pki, listener.getsockname()[1], tls="cleartext")
        stored = dicomsim.store(_cfg(pki, listener.getsockname()[1]), "pacs", _series(1), tls="cleartext", retries=2, backoff=0.05)
    assert {k: out.get(k) for k in ("outcome", "reset", "pdus_received", "phase", "error")} == {
        "outcome": "closed", "reset": True, "pdus_received": [], "phase": "connect",
        "error": "ConnectionResetError: [Errno 104] Connection reset by peer"}
    assert [a["outcome"] for a in stored["attempts"]] == ["closed"] * 3 and len(stored["unacknowledged"]) == 1


def test_silence_is_a_timeout_not_a_refusal(pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that completes TCP and then says nothing (a stalled front): the association times
    out, reported as such. The AE's timeouts are shortened so the test takes seconds."""
    real_ae = dicomsim._ae

    def quick(cfg: dict[str, Any], calling: str | None) -> AE:
        ae = real_ae(cfg, calling)
        ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 1
        return ae

    monkeypatch.setattr(dicomsim, "_ae", quick)
    held: list[socket.socket] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        accept = threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True)
        accept.start()
        out = _echo(pki, listener.getsockname()[1], tls="cleartext")
        for conn in held:
            conn.close()
    assert out["outcome"] == "timeout" and out["phase"] == "association", out


def test_an_alert_reason_is_named_as_the_alert() -> None:
    """OpenSSL's reason codes for received alerts (ssl.SSLError.reason) map to the alert's name;
    an error detected locally stays a tls-error with its reason."""
    import ssl

    alert = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required")
    alert.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    local = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    local.reason = "WRONG_VERSION_NUMBER"
    assert dicomsim.tls_failure(alert)["tls_alert"] == "certificate-required"
    assert (dicomsim.tls_failure(local)["outcome"], dicomsim.tls_failure(local)["tls_reason"]) == ("tls-error", "WRONG_VERSION_NUMBER")


# --- the modality keeps what was not acknowledged (issue 10, item 12) ---------------------------------------


@pytest.fixture
def breaking_scp() -> Iterator[tuple[int, dict[str, int], list[int]]]:
    """A cleartext CT storage SCP that keeps every instance it receives (SOP Instance UID -> times
    received) and, on the C-STOREs whose numbers are in ``breaks``, drops the connection before it
    answers, as a PACS killed mid-series does; (port, received, breaks)."""
    received: dict[str, int] = {}
    breaks: list[int] = []
    count = [0]

    def on_store(event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        received[uid] = received.get(uid, 0) + 1
        count[0] += 1
        if count[0] in breaks:
            event.assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)  # stored, and never acknowledged
        return 0x0000

    ae = AE(ae_title="PACS")
    ae.add_supported_context(dicomsim.STORAGE["CT"], ExplicitVRLittleEndian)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    yield server.server_address[1], received, breaks
    server.shutdown()


def _series(images: int) -> list[Any]:
    order = {"patient_name": "PACSLAB^RETRY", "patient_id": "P1", "accession": "A1", "study_uid": generate_uid()}
    return dicomsim.make_series(order, "CT", "CT01", images)


def test_instances_left_unanswered_are_sent_again_on_a_new_association(breaking_scp: tuple[int, dict[str, int], list[int]]) -> None:
    port, received, breaks = breaking_scp
    breaks += [4, 9]
    series = _series(12)
    out = dicomsim.store(_cfg(Path("/nonexistent"), port), "pacs", series, tls="cleartext", backoff=0.05)
    sent = [str(ds.SOPInstanceUID) for ds in series]
    assert [s["sop_instance_uid"] for s in out["stored"]] == sent  # each acknowledged once, in order
    assert out["unacknowledged"] == [] and out["failed"] == []
    assert [(a["outcome"], a["sent"], a["acknowledged"]) for a in out["attempts"]] == [
        ("established", 4, 3), ("established", 5, 4), ("established", 5, 5)]
    # the two in flight when the connection broke reached the SCP twice: the PACS's duplicate handling decides
    assert received == {u: 2 if u in (sent[3], sent[7]) else 1 for u in sent}


def test_without_retries_the_result_names_what_was_not_acknowledged(breaking_scp: tuple[int, dict[str, int], list[int]]) -> None:
    port, received, breaks = breaking_scp
    breaks += [4]
    series = _series(6)
    out = dicomsim.store(_cfg(Path("/nonexistent"), port), "pacs", series, tls="cleartext", retries=0)
    sent = [str(ds.SOPInstanceUID) for ds in series]
    assert [s["sop_instance_uid"] for s in out["stored"]] == sent[:3]
    assert [u["sop_instance_uid"] for u in out["unacknowledged"]] == sent[3:]
    assert len(out["attempts"]) == 1 and out["attempts"][0]["error"]


def test_a_refusal_is_not_retried(pki: Path, scp: int) -> None:
    """The SCP knows only CT01: another calling AE title gets an A-ASSOCIATE-RJ, an answer, not an
    outage; one association, the instance reported as not acknowledged."""
    out = dicomsim.store(_cfg(pki, scp), "pacs", _series(1), calling="EVILMOD", backoff=0.05)
    assert [a["outcome"] for a in out["attempts"]] == ["rejected"]
    assert len(out["unacknowledged"]) == 1 and out["stored"] == []


def test_a_stalled_handshake_holds_only_its_own_connection(pki: Path, scp: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10, item 9: a peer sends the first bytes of a TLS handshake and then nothing. Another
    peer is still answered, and the stalled connection is closed once HANDSHAKE_TIMEOUT has passed."""
    monkeypatch.setattr(dicomsim, "HANDSHAKE_TIMEOUT", 1.0)
    with socket.create_connection(("127.0.0.1", scp), timeout=10) as stalled:
        stalled.sendall(bytes.fromhex("1603010200010001fc0303"))  # a ClientHello's record and handshake headers, cut short
        out = _echo(pki, scp)
        assert (out["outcome"], out["status"]) == ("established", "0x0000"), out
        stalled.settimeout(10)
        try:
            cut = stalled.recv(1024)  # b"" (closed) or a TLS alert record, then closed
        except ConnectionResetError:
            cut = b""
    assert cut == b"" or cut[:1] == b"\x15", cut


def test_a_sop_class_the_peer_does_not_take_is_failed_not_retried(breaking_scp: tuple[int, dict[str, int], list[int]]) -> None:
    """The SCP takes CT only: of a CT and an MR instance on one association, the MR one has no accepted
    presentation context. That is the peer's answer: failed (status None), not left unacknowledged,
    and no second association."""
    port, received, _ = breaking_scp
    order = {"patient_name": "PACSLAB^MR", "patient_id": "P1", "accession": "A1", "study_uid": generate_uid()}
    ct, mr = dicomsim.make_series(order, "CT", "CT01", 1)[0], dicomsim.make_series(order, "MR", "MR01", 1)[0]
    out = dicomsim.store(_cfg(Path("/nonexistent"), port), "pacs", [ct, mr], tls="cleartext", backoff=0.05)
    assert [s["sop_instance_uid"] for s in out["stored"]] == [str(ct.SOPInstanceUID)]
    assert [(f["sop_instance_uid"], f["status"]) for f in out["failed"]] == [(str(mr.SOPInstanceUID), None)]
    assert out["unacknowledged"] == [] and len(out["attempts"]) == 1 and received == {str(ct.SOPInstanceUID): 1}


def test_a_record_is_one_line_whatever_was_read_off_the_wire(caplog: pytest.LogCaptureFixture) -> None:
    """The node's log is shipped line by line (dicom-node): a UID or an AE title holding a line
    feed and a quote stays inside its field of the one JSON line (the siem reads it back whole)."""
    with caplog.at_level("INFO", logger="dicomsim"):
        dicomsim.record("received", sop_instance_uid='1.2\n2026-12-05 00:00:00,000 dicomsim INFO {"event": "acquired"}', calling_ae='PA"CS')
    [line] = [r.getMessage() for r in caplog.records]
    assert "\n" not in line
    assert json.loads(line) == {"event": "received", "sop_instance_uid": '1.2\n2026-12-05 00:00:00,000 dicomsim INFO {"event": "acquired"}',
                                "calling_ae": 'PA"CS'}


def test_a_record_cuts_a_value_longer_than_any_dicom_field_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    """A UID of 100,000 characters (the VR allows 64) would make a line longer than the 64 KiB a
    syslog message holds, and rsyslog would split it into lines that are no record: the value is cut
    to 256 characters and the record names it as truncated. Twin: a 64-character UID is kept whole."""
    with caplog.at_level("INFO", logger="dicomsim"):
        dicomsim.record("received", sop_instance_uid="1." * 50_000, study_uid="1." * 32, calling_ae="PACS", stored=3)
    [line] = [r.getMessage() for r in caplog.records]
    assert len(line) < 1_000
    assert json.loads(line) == {"event": "received", "sop_instance_uid": "1." * 128, "study_uid": "1." * 32, "calling_ae": "PACS",
                                "stored": 3, "truncated": ["sop_instance_uid"]}


def test_the_storage_scp_records_each_caller_and_each_rejection_with_its_reason(pki: Path, tmp_path: Path,
                                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """The workstation's storage SCP (serve_storage, allowing PACS only) records every association
    request it receives with the calling and called AE titles and the caller's address, and a
    rejection with the reason it sent (PS3.8 9.3.4), as Orthanc's log does on the PACS (the siem's
    unknown-ae, C-AST-05): a title it does not allow, the allowed title naming another called AE
    title. Twin: the allowed caller naming the node's title is received, not rejected."""
    server = dicomsim.serve_storage(_cfg(pki, 0, "server") | {"ae_title": "WSRAD01"}, 0, tmp_path / "in", ["PACS"], block=False)
    port = server.server_address[1]
    try:
        with caplog.at_level("INFO", logger="dicomsim"):
            rogue = _echo(pki, port, calling="ROGUE01", called="WSRAD01")
            misnamed = _echo(pki, port, calling="PACS", called="WSRAD99")
            allowed = _echo(pki, port, calling="PACS", called="WSRAD01")
    finally:
        server.shutdown()
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "dicomsim" and r.getMessage().startswith("{")]
    assert (rogue["outcome"], misnamed["outcome"], allowed["outcome"]) == ("rejected", "rejected", "established")
    assert records == [
        {"event": "association-received", "calling_ae": "ROGUE01", "called_ae": "WSRAD01", "src_ip": "127.0.0.1"},
        {"event": "association-rejected", "calling_ae": "ROGUE01", "called_ae": "WSRAD01", "src_ip": "127.0.0.1",
         "reason": "calling-AE-title-not-recognized"},
        {"event": "association-received", "calling_ae": "PACS", "called_ae": "WSRAD99", "src_ip": "127.0.0.1"},
        {"event": "association-rejected", "calling_ae": "PACS", "called_ae": "WSRAD99", "src_ip": "127.0.0.1",
         "reason": "called-AE-title-not-recognized"},
        {"event": "association-received", "calling_ae": "PACS", "called_ae": "WSRAD01", "src_ip": "127.0.0.1"},
    ]


def test_connections_whose_handshake_fails_hold_no_association_of_the_storage_scp(pki: Path, tmp_path: Path) -> None:
    """Ten connections to the workstation's storage SCP without a client certificate (each ends
    with the certificate-required alert) leave it no association held: pynetdicom's acceptor alone
    would wait 30 s (its ACSE timeout) for each one's request and refuse the eleventh caller,
    the allowed PACS, as local-limit-exceeded (PS3.8 9.3.4: rejected-transient). The PACS's
    association right after them is established."""
    server = dicomsim.serve_storage(_cfg(pki, 0, "server") | {"ae_title": "WSRAD01"}, 0, tmp_path / "in", ["PACS"], block=False)
    port = server.server_address[1]
    try:
        failed = [_echo(pki, port, tls="nocert", calling="PACS", called="WSRAD01") for _ in range(10)]
        deadline = time.monotonic() + 5  # each ends in its own thread as its handshake fails; 30 s without the fix
        while server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        held = len(server.active_associations)
        allowed = _echo(pki, port, calling="PACS", called="WSRAD01")
    finally:
        server.shutdown()
    assert {(f["outcome"], f.get("tls_alert")) for f in failed} == {("tls-alert", "certificate-required")}
    assert (held, allowed["outcome"], allowed.get("reject")) == (0, "established", None)
