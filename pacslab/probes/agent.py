"""Probe agent, run inside lab containers with ``python3 -c`` (standard library only).

listen  NAME --tcp P,P --udp P [--bind ADDR]: answer each TCP connect with a banner naming the stand-in, echo
        each UDP datagram with the same banner. A probe that reads the banner knows it reached the
        intended host, not merely some open port.
connect: read a JSON list of {id, addr, port, proto[, bind]} on stdin, try them all concurrently, print
        {id: "open" | "refused" | "dropped" | "error:<reason>"} as JSON. "dropped" means no answer
        within the timeout, which is what a firewall drop looks like from the source. addr may be
        IPv4 or IPv6 (a link-local one with its %interface). proto "icmp" sends one ICMP or ICMPv6
        echo request (port ignored) through an unprivileged ping socket: "open:echo-reply" or "dropped".
scan    TIMEOUT FIRST-LAST ADDR...: a TCP connect scan of every port in the range of each address,
        print {addr: {"open": [...], "dropped": [...], "error": [...]}} as JSON (refused ports are left out).
"""

import asyncio
import json
import socket
import struct
import sys
from typing import Any, cast

BANNER = b"pacslab-standin "


def _ports(text: str) -> list[int]:
    return [int(p) for p in text.split(",") if p]


async def _listen(name: str, tcp_ports: list[int], udp_ports: list[int], host: str = "0.0.0.0") -> None:
    banner = BANNER + name.encode() + b"\n"

    async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(banner)
        try:
            await writer.drain()
        finally:
            writer.close()

    class Echo(asyncio.DatagramProtocol):
        transport: asyncio.DatagramTransport

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            # asyncio's selector datagram transport does not subclass DatagramTransport: cast only
            self.transport = cast(asyncio.DatagramTransport, transport)

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(banner, addr)

    loop = asyncio.get_running_loop()
    servers = [await asyncio.start_server(on_tcp, host, p, reuse_address=True) for p in tcp_ports]
    for p in udp_ports:
        await loop.create_datagram_endpoint(Echo, local_addr=(host, p))
    print("listening", name, tcp_ports, udp_ports, flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers), asyncio.Event().wait())  # a source only listens on nothing


def _failure(exc: OSError) -> str:
    """No answer within the timeout is what a firewall drop looks like from the source."""
    if isinstance(exc, TimeoutError):
        return "dropped"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    return "error:" + (exc.strerror or type(exc).__name__)


def _answer(data: bytes) -> str:
    """open:<stand-in name> when the banner names it, open:? for any other listener."""
    return "open:" + data[len(BANNER):].decode(errors="replace").strip() if data.startswith(BANNER) else "open:?"


async def _try(target: dict[str, Any], timeout: float, sem: asyncio.Semaphore) -> str:
    async with sem:
        addr, port, proto = target["addr"], int(target["port"]), target["proto"]
        if proto == "udp":
            return await _try_udp(addr, port, timeout)
        if proto == "icmp":
            return await asyncio.get_running_loop().run_in_executor(None, _echo, addr, timeout)
        try:
            local = (target["bind"], 0) if target.get("bind") else None
            reader, writer = await asyncio.wait_for(asyncio.open_connection(addr, port, local_addr=local), timeout)
        except OSError as exc:  # TimeoutError and ConnectionRefusedError are OSErrors too
            return _failure(exc)
        try:
            line = await asyncio.wait_for(reader.readline(), timeout)
        except OSError:
            line = b""
        writer.close()
        return _answer(line)


async def _try_udp(addr: str, port: int, timeout: float) -> str:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, _: tuple[str, int]) -> None:
            if not answer.done():
                answer.set_result(data)

        def error_received(self, exc: Exception) -> None:
            if not answer.done():
                answer.set_exception(exc)

    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(addr, port), family=family)
    try:
        transport.sendto(b"pacslab-probe\n")
        data = await asyncio.wait_for(answer, timeout)
    except OSError as exc:
        return _failure(exc)
    finally:
        transport.close()
    return _answer(data)


def _checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum."""
    data += b"\0" * (len(data) % 2)
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _echo(addr: str, timeout: float) -> str:
    """One ICMP (type 8) or ICMPv6 (type 128) echo request: "open:echo-reply" or a failure.

    Through a ping socket where net.ipv4.ping_group_range allows it (Docker opens it in containers;
    the kernel sets identifier and checksum and hands back only this socket's replies), else
    through a raw socket (root on the Docker host), matching the reply by source and identifier."""
    family, _, _, _, sockaddr = socket.getaddrinfo(addr, None, type=socket.SOCK_DGRAM)[0]
    v6 = family == socket.AF_INET6
    proto, request_type, reply_type = (socket.IPPROTO_ICMPV6, 128, 129) if v6 else (socket.IPPROTO_ICMP, 8, 0)
    ident = 0x5043
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM, proto)
        raw = False
    except PermissionError:
        sock = socket.socket(family, socket.SOCK_RAW, proto)
        raw = True
    request = struct.pack("!BBHHH", request_type, 0, 0, ident, 1) + b"pacslab-probe"
    if raw and not v6:  # the kernel computes ICMPv6 checksums of raw sockets itself
        request = request[:2] + struct.pack("!H", _checksum(request)) + request[4:]
    try:
        with sock:
            sock.settimeout(timeout)
            sock.sendto(request, sockaddr)
            while True:
                reply, source = sock.recvfrom(2048)
                if raw and not v6:
                    reply = reply[(reply[0] & 0x0F) * 4:]  # past the IPv4 header
                same = str(source[0]).split("%")[0] == str(sockaddr[0]).split("%")[0] and reply[4:6] == request[4:6]
                if not raw or (same and reply[:1] == bytes([reply_type])):  # a raw socket also sees requests
                    break
    except OSError as exc:  # socket.timeout is TimeoutError
        return _failure(exc)
    return "open:echo-reply" if reply[:1] == bytes([reply_type]) else f"error:icmp type {reply[0]}"


async def _connect(targets: list[dict[str, Any]], timeout: float) -> dict[str, str]:
    sem = asyncio.Semaphore(128)
    results = await asyncio.gather(*(_try(t, timeout, sem) for t in targets))
    return {t["id"]: r for t, r in zip(targets, results, strict=True)}


async def _scan(addrs: list[str], ports: range, timeout: float, workers: int = 256) -> dict[str, dict[str, list[int]]]:
    """A pool of workers draws (address, port) pairs from one generator: memory stays flat.
    Refused ports are closed; any other failure (no route, ...) is reported, never taken as closed.
    Bare non-blocking sockets (no streams, no task per connect): the scan is bound by this
    process's CPU, and a connect costs about half of what asyncio.open_connection costs."""
    loop = asyncio.get_running_loop()
    todo = ((a, p) for a in addrs for p in ports)
    found: dict[str, dict[str, list[int]]] = {a: {"open": [], "dropped": [], "error": []} for a in addrs}

    async def worker() -> None:
        for addr, port in todo:
            sock = None
            try:
                sock = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                async with asyncio.timeout(timeout):
                    await loop.sock_connect(sock, (addr, port))
            except ConnectionRefusedError:
                continue
            except OSError as exc:  # TimeoutError too; a socket that could not be made is an error
                found[addr]["dropped" if isinstance(exc, TimeoutError) else "error"].append(port)
                continue
            finally:
                if sock is not None:
                    sock.close()
            found[addr]["open"].append(port)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return {a: {k: sorted(v) for k, v in r.items()} for a, r in found.items()}


def main(argv: list[str]) -> int:
    if argv[:1] == ["listen"]:
        name = argv[1]
        opts = dict(zip(argv[2::2], argv[3::2], strict=False))
        asyncio.run(_listen(name, _ports(opts.get("--tcp", "")), _ports(opts.get("--udp", "")), opts.get("--bind", "0.0.0.0")))
    elif argv[:1] == ["connect"]:
        timeout = float(argv[1]) if len(argv) > 1 else 2.0
        targets = json.load(sys.stdin)
        print(json.dumps(asyncio.run(_connect(targets, timeout))))
    elif argv[:1] == ["scan"] and len(argv) > 3:
        first, last = (int(p) for p in argv[2].split("-"))
        print(json.dumps(asyncio.run(_scan(argv[3:], range(first, last + 1), float(argv[1])))))
    else:
        print("usage: listen NAME [--tcp P,P] [--udp P] [--bind ADDR] | connect [TIMEOUT] < targets.json"
              " | scan TIMEOUT FIRST-LAST ADDR...", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
