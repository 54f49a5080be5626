"""orders.py send against a TLS 1.3 front that requires a client certificate (as the RIS's stunnel does):
the refused sender reads the server's alert every time, the accepted one gets its ACK.

In TLS 1.3 the server judges the client certificate after the client's handshake is done; a sender
that wrote at once could lose the alert to the server's close. A real TLS server on loopback.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pacslab import dicomsim, orders

from .test_dicomsim import _cfg, pki  # noqa: F401 (the certificates fixture)


@pytest.fixture
def front(pki: Path) -> Iterator[int]:  # noqa: F811
    """Accepts TLS connections that present a certificate from pki's root and answers each order
    with an ACK; its port."""
    ctx = dicomsim.server_context(_cfg(pki, 0, "server"))
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    data = b""
                    while orders.FS + orders.CR not in data:
                        chunk = tls.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    block = data[data.index(orders.VT) + 1 : data.index(orders.FS)]
                    tls.sendall(orders.frame(orders.ack(orders.header(block), "AA").encode()))
            except (ssl.SSLError, OSError):
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    listener.close()


ORDER = {"patient_id": "P1", "patient_name": "PACSLAB^TEST", "accession": "A1", "modality": "CT", "station": "CT01",
         "procedure": "p", "birth_date": "19700101", "sex": "O"}


@pytest.mark.parametrize("attempt", range(5))
def test_a_sender_without_certificate_reads_the_alert(pki: Path, front: int, attempt: int) -> None:  # noqa: F811
    with pytest.raises(ssl.SSLError) as refused:
        orders.send("127.0.0.1", front, orders.build_orm(ORDER, f"{attempt}"), str(pki / "root.crt"), None, None)
    assert refused.value.reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED"


def test_a_sender_with_its_certificate_gets_the_ack(pki: Path, front: int) -> None:  # noqa: F811
    answer = orders.send("127.0.0.1", front, orders.build_orm(ORDER, "9"), str(pki / "root.crt"), str(pki / "device.crt"), str(pki / "device.key"))
    assert "\rMSA|AA|" in answer
