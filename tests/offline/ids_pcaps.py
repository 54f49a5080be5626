"""Crafted captures for the sensor's rules (roles/sensor/files/pacslab.rules), written with dpkt.

Each capture is one thing the IDS must see or must let pass: a cleartext DICOM association (DICOM
PS3.8 9.3.2 A-ASSOCIATE-RQ and 9.3.3 A-ASSOCIATE-AC over a whole TCP connection), TLS ClientHellos
of 1.1, 1.2 and 1.3 (RFC 8446 4.1.2: a 1.3 ClientHello carries legacy_version 0x0303 and lists
0x0304 in supported_versions), a ServerHello that chooses TLS 1.0, a SYN sweep of 25 ports and five
SYNs. Addresses are the reference lab's kind (the sensor sees only what crosses the fw).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dpkt

T0 = 1796200000.0  # 2026-12-02, a fixed start: the captures are the same bytes on every run
MAC_A = b"\x02\x42\x0a\x4d\x00\x01"
MAC_B = b"\x02\x42\x0a\x4d\x00\x02"
APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"  # DICOM Application Context Name (PS3.7 A.2.1)
VERIFICATION = b"1.2.840.10008.1.1"
IMPLICIT_LE = b"1.2.840.10008.1.2"


def _ip(address: str) -> bytes:
    return bytes(int(x) for x in address.split("."))


def _frame(src: str, dst: str, sport: int, dport: int, flags: int, seq: int, ack: int, payload: bytes = b"") -> bytes:
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, win=64240, data=payload)
    ip = dpkt.ip.IP(src=_ip(src), dst=_ip(dst), p=dpkt.ip.IP_PROTO_TCP, ttl=63, data=tcp)
    ip.len = len(ip)
    return bytes(dpkt.ethernet.Ethernet(src=MAC_A, dst=MAC_B, type=dpkt.ethernet.ETH_TYPE_IP, data=ip))


@dataclass
class Connection:
    """One TCP connection, its segments in order with their times (0.01 s apart)."""

    client: str
    server: str
    sport: int
    dport: int
    at: float = T0
    frames: list[tuple[float, bytes]] = field(default_factory=list)
    cseq: int = 1000
    sseq: int = 5000

    def _emit(self, frame: bytes) -> None:
        self.frames.append((self.at, frame))
        self.at += 0.01

    def open(self) -> Connection:
        A, S = dpkt.tcp.TH_ACK, dpkt.tcp.TH_SYN
        self._emit(_frame(self.client, self.server, self.sport, self.dport, S, self.cseq, 0))
        self._emit(_frame(self.server, self.client, self.dport, self.sport, S | A, self.sseq, self.cseq + 1))
        self.cseq += 1
        self.sseq += 1
        self._emit(_frame(self.client, self.server, self.sport, self.dport, A, self.cseq, self.sseq))
        return self

    def client_sends(self, data: bytes) -> Connection:
        A, P = dpkt.tcp.TH_ACK, dpkt.tcp.TH_PUSH
        self._emit(_frame(self.client, self.server, self.sport, self.dport, A | P, self.cseq, self.sseq, data))
        self.cseq += len(data)
        self._emit(_frame(self.server, self.client, self.dport, self.sport, A, self.sseq, self.cseq))
        return self

    def server_sends(self, data: bytes) -> Connection:
        A, P = dpkt.tcp.TH_ACK, dpkt.tcp.TH_PUSH
        self._emit(_frame(self.server, self.client, self.dport, self.sport, A | P, self.sseq, self.cseq, data))
        self.sseq += len(data)
        self._emit(_frame(self.client, self.server, self.sport, self.dport, A, self.cseq, self.sseq))
        return self

    def close(self) -> Connection:
        A, F = dpkt.tcp.TH_ACK, dpkt.tcp.TH_FIN
        self._emit(_frame(self.client, self.server, self.sport, self.dport, F | A, self.cseq, self.sseq))
        self._emit(_frame(self.server, self.client, self.dport, self.sport, F | A, self.sseq, self.cseq + 1))
        self._emit(_frame(self.client, self.server, self.sport, self.dport, A, self.cseq + 1, self.sseq + 1))
        return self


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def associate(pdu_type: int, called: str, calling: str) -> bytes:
    """An A-ASSOCIATE-RQ (pdu_type 1, PS3.8 9.3.2) or -AC (2, 9.3.3) proposing or accepting Verification."""
    if pdu_type == 1:
        context = _item(0x20, bytes([1, 0, 0, 0]) + _item(0x30, VERIFICATION) + _item(0x40, IMPLICIT_LE))
    else:
        context = _item(0x21, bytes([1, 0, 0, 0]) + _item(0x40, IMPLICIT_LE))
    user = _item(0x50, _item(0x51, struct.pack(">I", 16384)) + _item(0x52, b"1.2.826.0.1.3680043.9.3811.3.0.4"))
    body = (struct.pack(">HH", 1, 0) + called.encode().ljust(16) + calling.encode().ljust(16) + bytes(32)
            + _item(0x10, APPLICATION_CONTEXT) + context + user)
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


def _extension(kind: int, body: bytes) -> bytes:
    return struct.pack(">HH", kind, len(body)) + body


def client_hello(version: int, record_version: int = 0x0301, tls13: bool = False, sni: str = "pacs") -> bytes:
    """A TLS record holding one ClientHello (RFC 5246 7.4.1.2, RFC 8446 4.1.2)."""
    suites = [0x1301, 0x1302, 0xC02F, 0xC030] if tls13 else [0xC02F, 0xC030, 0x002F, 0x0035]
    name = sni.encode()
    extensions = _extension(0x0000, struct.pack(">HBH", len(name) + 3, 0, len(name)) + name)
    extensions += _extension(0x000A, struct.pack(">HHH", 4, 0x001D, 0x0017))  # supported_groups
    extensions += _extension(0x000D, struct.pack(">HHH", 4, 0x0403, 0x0804))  # signature_algorithms
    if tls13:
        extensions += _extension(0x002B, bytes([4]) + struct.pack(">HH", 0x0304, 0x0303))  # supported_versions
        extensions += _extension(0x0033, struct.pack(">HHH", 36, 0x001D, 32) + bytes(range(32)))  # key_share (x25519)
    body = (struct.pack(">H", version) + bytes(range(32)) + bytes([0]) + struct.pack(">H", 2 * len(suites))
            + b"".join(struct.pack(">H", s) for s in suites) + bytes([1, 0]) + struct.pack(">H", len(extensions)) + extensions)
    handshake = bytes([1]) + struct.pack(">I", len(body))[1:] + body
    return bytes([22]) + struct.pack(">HH", record_version, len(handshake)) + handshake


def server_hello(version: int) -> bytes:
    """A TLS record holding one ServerHello choosing ``version`` (RFC 5246 7.4.1.3)."""
    body = struct.pack(">H", version) + bytes(range(32, 64)) + bytes([0]) + struct.pack(">H", 0x002F) + bytes([0])
    handshake = bytes([2]) + struct.pack(">I", len(body))[1:] + body
    return bytes([22]) + struct.pack(">HH", version, len(handshake)) + handshake


def syns(src: str, dst: str, ports: list[int], every: float = 0.1) -> list[tuple[float, bytes]]:
    """One SYN to each port, ``every`` seconds apart, as a scanner sends them (no answer: the fw drops them)."""
    return [(T0 + i * every, _frame(src, dst, 40000 + i, port, dpkt.tcp.TH_SYN, 7000 + i, 0)) for i, port in enumerate(ports)]


# name -> (frames, the sids that must fire, nothing else)
def captures() -> dict[str, tuple[list[tuple[float, bytes]], set[int]]]:
    legacy, pacs, ws, attacker = "10.77.31.10", "10.77.40.10", "10.77.20.10", "10.77.90.66"
    dicom = Connection(legacy, pacs, 40100, 104).open().client_sends(associate(1, "PACS", "LEGACY01"))
    dicom.server_sends(associate(2, "PACS", "LEGACY01")).close()
    tls11 = Connection(ws, pacs, 40200, 443).open().client_sends(client_hello(0x0302)).close()
    tls12 = Connection(ws, pacs, 40300, 2762).open().client_sends(client_hello(0x0303)).close()
    tls13 = Connection(ws, pacs, 40400, 2762).open().client_sends(client_hello(0x0303, tls13=True)).close()
    tls10_chosen = Connection(ws, pacs, 40500, 443).open().client_sends(client_hello(0x0303)).server_sends(server_hello(0x0301)).close()
    return {
        "cleartext-dicom-association": (dicom.frames, {9000001, 9000002}),
        "tls1.1-client-hello": (tls11.frames, {9000011}),
        "tls1.2-client-hello": (tls12.frames, set()),
        "tls1.3-client-hello": (tls13.frames, set()),
        "tls1.0-chosen-by-the-server": (tls10_chosen.frames, {9000012}),
        "syn-sweep-25-ports": (syns(attacker, pacs, list(range(20, 45))), {9000021}),
        "five-syns": (syns(attacker, pacs, [22, 80, 104, 443, 2762]), set()),
    }


def write(folder: Path) -> Iterator[tuple[str, Path, set[int]]]:
    """Each capture as <name>.pcap in ``folder``, with the sids it must fire."""
    for name, (frames, sids) in captures().items():
        path = folder / f"{name}.pcap"
        with path.open("wb") as f:
            writer = dpkt.pcap.Writer(f, linktype=dpkt.pcap.DLT_EN10MB)
            for at, frame in frames:
                writer.writepkt(frame, ts=at)
        yield name, path, sids
