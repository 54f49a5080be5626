"""The probe agent on loopback: TCP and UDP answers carry the stand-in's name; silence is 'dropped'."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from pacslab.probes.standins import AGENT


def free_port(kind: int, host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextmanager
def agent_listening(name: str, host: str) -> Iterator[tuple[int, int]]:
    """The agent answering as ``name`` on a free TCP and UDP port of ``host``."""
    tcp, udp = free_port(socket.SOCK_STREAM, host), free_port(socket.SOCK_DGRAM, host)
    proc = subprocess.Popen([sys.executable, "-c", AGENT, "listen", name, "--tcp", str(tcp), "--udp", str(udp), "--bind", host],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().startswith(f"listening {name}")
    try:
        yield tcp, udp
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def listener() -> Iterator[tuple[int, int]]:
    with agent_listening("unit", "127.0.0.1") as ports:
        yield ports


@pytest.fixture
def listener6() -> Iterator[tuple[int, int]]:
    with agent_listening("unit6", "::1") as ports:
        yield ports


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


# IPv6 and ICMP (issue 9 item 10 probes the host's IPv6 addresses and echo)


def test_tcp_and_udp_over_ipv6_name_the_listener(listener6: tuple[int, int]) -> None:
    tcp, udp = listener6
    got = connect([{"id": "t", "addr": "::1", "port": tcp, "proto": "tcp"}, {"id": "u", "addr": "::1", "port": udp, "proto": "udp"}])
    assert got == {"t": "open:unit6", "u": "open:unit6"}


def test_a_closed_ipv6_udp_port_is_refused() -> None:
    """ICMPv6 port unreachable reaches the connected socket: the agent says refused, not dropped."""
    assert connect([{"id": "u", "addr": "::1", "port": free_port(socket.SOCK_DGRAM, "::1"), "proto": "udp"}]) == {"u": "refused"}


def ping_allowed() -> bool:
    low, high = (int(v) for v in open("/proc/sys/net/ipv4/ping_group_range").read().split())
    return os.geteuid() == 0 or low <= os.getegid() <= high


@pytest.mark.skipif(not ping_allowed(), reason="neither root (raw socket) nor in net.ipv4.ping_group_range (ping socket)")
def test_echo_to_loopback_is_answered_over_ipv4_and_ipv6() -> None:
    got = connect([{"id": "4", "addr": "127.0.0.1", "port": 0, "proto": "icmp"}, {"id": "6", "addr": "::1", "port": 0, "proto": "icmp"}])
    assert got == {"4": "open:echo-reply", "6": "open:echo-reply"}
