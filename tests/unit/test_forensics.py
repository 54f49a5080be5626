"""The capture around an alert (C-RSP-03): pacslab.forensics cuts the fw's ring files (pcap, Linux
cooked capture) to the alert's span and addresses, and the siem keeps the alert's window and the
captures recorded in its case (roles/siem/files/pacslab_siem.py window, record_capture). Ring files
here are written with dpkt, packet by packet, with times and addresses written out; the live ring is
tests/integration/test_capture.py."""

from __future__ import annotations

import io
import json
from pathlib import Path

import dpkt
import pytest

from pacslab import forensics

from .test_detections import ASSETS, siem

VENDOR, BASTION, CT, PACS = "10.77.90.11", "10.77.70.10", "10.77.30.10", "10.77.40.10"
T = 1_780_000_000.0  # epoch seconds


def frame(src: str, dst: str, sport: int, dport: int, linktype: int) -> bytes:
    ip = dpkt.ip.IP(src=bytes(int(x) for x in src.split(".")), dst=bytes(int(x) for x in dst.split(".")), p=dpkt.ip.IP_PROTO_TCP,
                    data=dpkt.tcp.TCP(sport=sport, dport=dport, flags=dpkt.tcp.TH_SYN))
    if linktype == dpkt.pcap.DLT_LINUX_SLL2:
        return bytes(dpkt.sll2.SLL2(ethtype=0x0800, data=ip))
    return bytes(dpkt.sll.SLL(ethtype=0x0800, data=ip))


def ring(packets: list[tuple[float, str, str, int, int]], linktype: int = dpkt.pcap.DLT_LINUX_SLL2) -> io.BytesIO:
    out = io.BytesIO()
    writer = dpkt.pcap.Writer(out, linktype=linktype)
    for ts, src, dst, sport, dport in packets:
        writer.writepkt(frame(src, dst, sport, dport, linktype), ts=ts)
    out.seek(0)
    return out


def read(stream: io.BytesIO) -> list[tuple[float, str, str, int]]:
    stream.seek(0)
    reader = dpkt.pcap.Reader(stream)
    rows = []
    for ts, raw in reader:
        cooked = dpkt.sll2.SLL2(raw) if reader.datalink() == dpkt.pcap.DLT_LINUX_SLL2 else dpkt.sll.SLL(raw)
        ip = cooked.data
        rows.append((round(ts, 3), ".".join(map(str, ip.src)), ".".join(map(str, ip.dst)), ip.data.sport))
    return rows


@pytest.mark.parametrize("linktype", [dpkt.pcap.DLT_LINUX_SLL2, dpkt.pcap.DLT_LINUX_SLL])
def test_the_capture_keeps_the_span_s_packets_to_or_from_the_alert_s_address_in_time_order(linktype: int) -> None:
    """Two ring files, the newer first: packets before, in and after the span, of the vendor's
    computer and of others. What is kept: the vendor's packets inside [T, T+10] (its edges
    included), from both files, in time order; the earliest time any file holds is reported."""
    older = ring([(T - 5, VENDOR, BASTION, 40000, 22), (T, VENDOR, BASTION, 40001, 22), (T + 1, CT, PACS, 40002, 2762),
                  (T + 2, BASTION, VENDOR, 22, 40001)], linktype)
    newer = ring([(T + 4, VENDOR, BASTION, 40003, 22), (T + 10, VENDOR, BASTION, 40004, 22), (T + 10.5, VENDOR, BASTION, 40005, 22)],
                 linktype)
    out = io.BytesIO()
    kept, earliest = forensics.select([newer, older], out, frozenset({VENDOR}), T, T + 10)
    assert (kept, earliest) == (4, T - 5)
    assert read(out) == [(T, VENDOR, BASTION, 40001), (T + 2, BASTION, VENDOR, 22), (T + 4, VENDOR, BASTION, 40003),
                         (T + 10, VENDOR, BASTION, 40004)]
    out.seek(0)
    assert dpkt.pcap.Reader(out).datalink() == linktype


def test_nothing_of_the_span_left_keeps_nothing_and_says_how_far_back_the_ring_reaches() -> None:
    out = io.BytesIO()
    kept, earliest = forensics.select([ring([(T + 100, VENDOR, BASTION, 40000, 22)])], out, frozenset({VENDOR}), T, T + 10)
    assert (kept, earliest) == (0, T + 100)
    assert read(out) == []


def test_ring_files_of_two_link_types_are_refused() -> None:
    with pytest.raises(forensics.CaptureError, match="different link types"):
        forensics.select([ring([(T, VENDOR, BASTION, 1, 22)], dpkt.pcap.DLT_LINUX_SLL2),
                          ring([(T, VENDOR, BASTION, 2, 22)], dpkt.pcap.DLT_LINUX_SLL)], io.BytesIO(), frozenset({VENDOR}), T - 1, T + 1)


def _store_with_alert(entities: dict[str, str]) -> tuple[object, int]:
    db = siem.connect(Path(":memory:"))
    ids = [siem.store(db, {"time": t, "host": "bastion", "event_type": "ssh-login-failure", "src_ip": VENDOR, "message": "m"})
           for t in ("2026-12-02T10:00:05.000Z", "2026-12-02T10:00:01.000Z", "2026-12-02T10:00:09.500Z")]
    db.execute("INSERT INTO cases (id, host, severity, opened, updated) VALUES (7, 'vendor-eng', 'medium', 'o', 'u')")
    db.execute("INSERT INTO alerts (id, rule_id, rule, title, severity, entities, events, first_seen, last_seen, raised, updated, case_id)"
               " VALUES (3, 'x', 'ssh-brute-force', 't', 'medium', ?, ?, '2026-12-02T09:50:09.500Z', 'l', 'r', 'u', 7)",
               (json.dumps(entities), json.dumps(ids)))
    return db, 3


def test_an_alert_s_window_spans_its_first_and_last_event_and_names_its_address() -> None:
    db, alert = _store_with_alert({"src_ip": VENDOR})
    assert siem.window(db, alert, ASSETS) == {"alert": 3, "case": 7, "entities": {"src_ip": VENDOR}, "start": "2026-12-02T10:00:01.000Z",
                                              "end": "2026-12-02T10:00:09.500Z", "addresses": [VENDOR]}
    assert siem.window(db, 4, ASSETS) is None


def test_an_alert_about_a_host_gets_the_host_s_lab_address() -> None:
    assets = ASSETS | {"hosts": {"mod-legacy": ASSETS["addresses"]["10.77.31.10"]}}
    db, alert = _store_with_alert({"host": "mod-legacy"})
    assert siem.window(db, alert, assets)["addresses"] == ["10.77.31.10"]
    db, alert = _store_with_alert({"host": "no-such-host"})
    assert siem.window(db, alert, assets)["addresses"] == []


def test_a_recorded_capture_is_in_the_alert_s_case() -> None:
    db, alert = _store_with_alert({"src_ip": VENDOR})
    digest = "ab" * 32
    siem.record_capture(db, alert, "alert-3.pcap", digest, 12, 3400, "2026-12-02T09:55:01.000Z", "2026-12-02T10:05:09.500Z", False)
    (case,) = siem.cases(db)
    assert [{k: c[k] for k in ("alert", "case", "file", "sha256", "packets", "bytes", "start", "end", "complete")} for c in case["captures"]] == [
        {"alert": 3, "case": 7, "file": "alert-3.pcap", "sha256": digest, "packets": 12, "bytes": 3400,
         "start": "2026-12-02T09:55:01.000Z", "end": "2026-12-02T10:05:09.500Z", "complete": False}]
    with pytest.raises(LookupError, match="no alert 9"):
        siem.record_capture(db, 9, "x.pcap", digest, 1, 1, "s", "e", True)


def test_a_ring_file_being_written_gives_what_it_holds_so_far() -> None:
    """tcpdump writes the ring while it is copied: a file just opened (no header yet, or not all of
    it) holds nothing, and a last record whose header is cut short ends the file."""
    one = ring([(T, VENDOR, BASTION, 40001, 22)]).getvalue()
    whole = ring([(T, VENDOR, BASTION, 40001, 22), (T + 1, VENDOR, BASTION, 40002, 22)]).getvalue()
    out = io.BytesIO()
    kept, earliest = forensics.select([io.BytesIO(whole[:len(one) + 10]), io.BytesIO(b""), io.BytesIO(whole[:10])], out,
                                      frozenset({VENDOR}), T, T + 10)
    assert (kept, earliest) == (1, T)
    assert read(out) == [(T, VENDOR, BASTION, 40001)]
