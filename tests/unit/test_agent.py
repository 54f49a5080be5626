"""The probe agent on loopback: TCP and UDP answers carry the stand-in's name; silence is 'dropped'."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from pacslab.probes.standins import AGENT


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def listener() -> Iterator[tuple[int, int]]:
    tcp, udp = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen([sys.executable, "-c", AGENT, "listen", "unit", "--tcp", str(tcp), "--udp", str(udp), "--bind", "127.0.0.1"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().startswith("listening unit")
    try:
        yield tcp, udp
    finally:
        proc.kill()
        proc.wait()


def connect(targets: list[dict[str, object]], timeout: float = 1.0) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-c", AGENT, "connect", str(timeout)], input=json.dumps(targets),
                         capture_output=True, text=True, check=True, timeout=30)
    result: dict[str, str] = json.loads(out.stdout)
    return result


def test_tcp_and_udp_answers_name_the_listener(listener: tuple[int, int]) -> None:
    tcp, udp = listener
    got = connect([{"id": "t", "addr": "127.0.0.1", "port": tcp, "proto": "tcp"},
                   {"id": "u", "addr": "127.0.0.1", "port": udp, "proto": "udp"}])
    assert got == {"t": "open:unit", "u": "open:unit"}


def test_closed_tcp_is_refused_and_silent_udp_is_dropped(listener: tuple[int, int]) -> None:
    """Loopback only: a closed TCP port, and a UDP socket that reads but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        start = time.monotonic()
        got = connect([{"id": "t", "addr": "127.0.0.1", "port": free_port(socket.SOCK_STREAM), "proto": "tcp"},
                       {"id": "u", "addr": "127.0.0.1", "port": silent.getsockname()[1], "proto": "udp"}], timeout=0.5)
    assert got == {"t": "refused", "u": "dropped"}
    assert time.monotonic() - start < 10
