"""The probe agent on loopback, IPv6 and ICMP (issue 9 item 10 probes the host's IPv6 and echo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from pacslab.probes.standins import AGENT


def free_port6(kind: int) -> int:
    with socket.socket(socket.AF_INET6, kind) as s:
        s.bind(("::1", 0))
        return int(s.getsockname()[1])


def connect(targets: list[dict[str, object]], timeout: float = 1.0) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-c", AGENT, "connect", str(timeout)], input=json.dumps(targets),
                         capture_output=True, text=True, check=True, timeout=30)
    result: dict[str, str] = json.loads(out.stdout)
    return result


@pytest.fixture
def listener6() -> Iterator[tuple[int, int]]:
    tcp, udp = free_port6(socket.SOCK_STREAM), free_port6(socket.SOCK_DGRAM)
    proc = subprocess.Popen([sys.executable, "-c", AGENT, "listen", "unit6", "--tcp", str(tcp), "--udp", str(udp), "--bind", "::1"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().startswith("listening unit6")
    try:
        yield tcp, udp
    finally:
        proc.kill()
        proc.wait()


def test_tcp_and_udp_over_ipv6_name_the_listener(listener6: tuple[int, int]) -> None:
    tcp, udp = listener6
    got = connect([{"id": "t", "addr": "::1", "port": tcp, "proto": "tcp"}, {"id": "u", "addr": "::1", "port": udp, "proto": "udp"}])
    assert got == {"t": "open:unit6", "u": "open:unit6"}


def test_a_closed_ipv6_udp_port_is_refused() -> None:
    """ICMPv6 port unreachable reaches the connected socket: the agent says refused, not dropped."""
    assert connect([{"id": "u", "addr": "::1", "port": free_port6(socket.SOCK_DGRAM), "proto": "udp"}]) == {"u": "refused"}


def ping_allowed() -> bool:
    low, high = (int(v) for v in open("/proc/sys/net/ipv4/ping_group_range").read().split())
    return os.geteuid() == 0 or low <= os.getegid() <= high


@pytest.mark.skipif(not ping_allowed(), reason="neither root (raw socket) nor in net.ipv4.ping_group_range (ping socket)")
def test_echo_to_loopback_is_answered_over_ipv4_and_ipv6() -> None:
    got = connect([{"id": "4", "addr": "127.0.0.1", "port": 0, "proto": "icmp"}, {"id": "6", "addr": "::1", "port": 0, "proto": "icmp"}])
    assert got == {"4": "open:echo-reply", "6": "open:echo-reply"}
