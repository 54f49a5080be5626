"""What a lab host may listen on, outside loopback: least functionality (C-PRT-02; CSF PR.PT-3,
SP 800-53 CM-7, "configure the system to provide only essential capabilities").

A deployed host listens on the ports of every flow of the lab definition whose destination is the
host or its zone (flows inside one zone included: the VNA's DICOM port for the PACS, the overlay
gateway's cleartext ports on the legacy segment), except flows whose service comes with a later
change (``service: planned``) and flows that allow any port (the scanner's), which name no
listener. To these come the few listeners a role declares it cannot move to loopback, each with
its reason (``<role>_extra_listeners`` in the role's defaults), and the inner DICOM port of an
Orthanc behind its transparent TLS front (``front_inner_port``: the same number the plan routes
back to the front). Loopback listeners are not counted: no other host can reach them.

A listener is a pair ``(proto, port)``: proto ``"tcp"`` or ``"udp"``, port 1-65535. IPv4 and IPv6
sockets on the same port are one listener (a host reachable on either is reachable).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .topology import REPO_ROOT, Host, Lab, safe_load

log = logging.getLogger(__name__)

Listener = tuple[str, int]  # ("tcp" | "udp", port)

ROLES_DIR = REPO_ROOT / "roles"
UP_PLAYBOOK = REPO_ROOT / "playbooks" / "up.yml"


def service_roles(playbook: Path = UP_PLAYBOOK) -> dict[str, Callable[[Host], bool]]:
    """Which hosts each service role configures, as the configure play of ``playbook`` decides it:
    role -> whether it applies to a host, from the play's ``pacslab_service_roles`` (each entry's
    ``by``: "image:<image>" or "group:<inventory group>", a group the host is listed in itself, as
    Host.groups holds them), in the play's order. ValueError naming the file when no play lists
    them, a role is listed twice, or an entry's ``by`` is neither."""
    listed = [p["vars"]["pacslab_service_roles"] for p in safe_load(playbook.read_text()) or []
              if "pacslab_service_roles" in (p.get("vars") or {})]
    if len(listed) != 1:
        raise ValueError(f"{playbook}: one play lists pacslab_service_roles, not {len(listed)}")

    def applies(by: str) -> Callable[[Host], bool]:
        kind, _, value = by.partition(":")
        if kind == "image" and value:
            return lambda h: h.image == value
        if kind == "group" and value:
            return lambda h: value in h.groups
        raise ValueError(f"{playbook}: pacslab_service_roles: by {by!r} is neither image:<image> nor group:<group>")

    found: dict[str, Callable[[Host], bool]] = {}
    for entry in listed[0]:
        if entry["role"] in found:
            raise ValueError(f"{playbook}: pacslab_service_roles: {entry['role']} is listed twice")
        found[entry["role"]] = applies(str(entry["by"]))
    return found


ROLE_APPLIES = service_roles()


@dataclass(frozen=True)
class ExtraListener:
    """A listener outside loopback that no flow names, declared by the role that opens it."""

    role: str
    proto: str
    port: int
    reason: str


def role_default(role: str, name: str, roles_dir: Path = ROLES_DIR) -> Any:
    """A variable's value in ``roles/<role>/defaults/main.yml``; KeyError naming the file when it is absent."""
    path = roles_dir / role / "defaults" / "main.yml"
    defaults = safe_load(path.read_text()) or {}
    if name not in defaults:
        raise KeyError(f"{path}: no {name}")
    return defaults[name]


def role_var(lab: Lab, host: str, role: str, name: str) -> Any:
    """A role variable as ``host`` gets it: its host variable, else the role's default."""
    return lab.host_vars.get(host, {}).get(name, role_default(role, name))


def declared_extras(role: str, roles_dir: Path = ROLES_DIR) -> tuple[ExtraListener, ...]:
    """``<role>_extra_listeners`` from ``roles/<role>/defaults/main.yml``: () when absent.

    Raises ValueError naming the role when an entry lacks proto (tcp|udp), port (1-65535) or a reason.
    """
    path = roles_dir / role / "defaults" / "main.yml"
    defaults = safe_load(path.read_text()) if path.is_file() else None
    entries = (defaults or {}).get(f"{role}_extra_listeners") or []
    extras = []
    for i, e in enumerate(entries):
        proto, port, reason = e.get("proto"), e.get("port"), str(e.get("reason", "")).strip()
        if proto not in ("tcp", "udp") or not isinstance(port, int) or not 0 < port < 65536 or not reason:
            raise ValueError(f"{path}: {role}_extra_listeners[{i}]: needs proto tcp|udp, a port 1-65535 and a reason")
        extras.append(ExtraListener(role, proto, port, reason))
    return tuple(extras)


def front_inner_port(lab: Lab, host: Host) -> int | None:
    """Orthanc's cleartext DICOM port behind ``host``'s transparent stunnel front
    (orthanc_dicom_inner_port: the host variable, else the role's default), or None when the host
    has no such front (not an Orthanc host, or orthanc_controls or orthanc_dicom_tls false, where
    Orthanc listens on the DICOM port itself). Orthanc 1.10.1 binds it on every address (no bind option); its answers are
    routed back to the front (pacslab.plan front_ports), so a peer dialling it directly never
    completes a TCP handshake."""
    hv = lab.host_vars.get(host.name, {})
    if not ROLE_APPLIES["orthanc"](host) or False in (hv.get("orthanc_controls", True), hv.get("orthanc_dicom_tls", True)):
        return None
    return int(role_var(lab, host.name, "orthanc", "orthanc_dicom_inner_port"))


def expected_listeners(lab: Lab, host: str) -> set[Listener]:
    """The (proto, port) pairs the deployed ``host`` listens on outside loopback, per the lab definition.

    Raises KeyError for a host the lab does not define and ValueError for a planned host (it has no
    container, so nothing listens).
    """
    h = lab.hosts[host]
    if not h.deployed:
        raise ValueError(f"{host} is planned: it has no container, nothing listens")
    expected: set[Listener] = set()
    for flow in lab.all_flows:  # routed and inside a zone alike: a listener is reachable either way
        reaches = (flow.dest.kind == "host" and flow.dest.name == host) or (flow.dest.kind == "zone" and flow.dest.name == h.zone)
        if not reaches or flow.ports is None or flow.planned or flow.proto not in ("tcp", "udp"):
            continue
        expected |= {(flow.proto, port) for port in flow.ports}
    for role, applies in ROLE_APPLIES.items():
        if applies(h):
            expected |= {(e.proto, e.port) for e in declared_extras(role)}
    if (inner := front_inner_port(lab, h)) is not None:
        expected.add(("tcp", inner))
    return expected


def outside_loopback(sockets: Iterable[str]) -> set[Listener]:
    """Listeners from socket specs as pytest-testinfra's ``host.socket.get_listening_sockets()``
    gives them (``tcp://0.0.0.0:2762``, ``udp://:::4444``, ``unix:///run/x.sock``), without unix
    sockets and without those bound to a loopback address (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104).

    Raises ValueError on a spec that is neither unix nor tcp/udp with an IP address and a port.
    """
    found: set[Listener] = set()
    for spec in sockets:
        proto, _, rest = spec.partition("://")
        if proto == "unix":
            continue
        address, _, port = rest.rpartition(":")
        if proto not in ("tcp", "udp") or not port.isdigit():
            raise ValueError(f"not a listening socket spec: {spec!r}")
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])  # ss adds %<interface> to scoped addresses
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        if ip.is_loopback or (mapped is not None and mapped.is_loopback):
            continue
        found.add((proto, int(port)))
    return found


@dataclass(frozen=True)
class Drift:
    """How observed listeners differ from the expected ones: unexpected (open, not declared) and
    missing (declared, not open), each sorted."""

    unexpected: tuple[Listener, ...]
    missing: tuple[Listener, ...]

    def __bool__(self) -> bool:
        return bool(self.unexpected or self.missing)

    def __str__(self) -> str:
        def fmt(items: tuple[Listener, ...]) -> str:
            return ", ".join(f"{port}/{proto}" for proto, port in items) or "none"

        return f"listening but not in the lab definition: {fmt(self.unexpected)}; in the lab definition but not listening: {fmt(self.missing)}"


def compare(observed: set[Listener], expected: set[Listener]) -> Drift:
    """The drift between what a host listens on and what the lab definition gives it (empty: none)."""
    return Drift(tuple(sorted(observed - expected)), tuple(sorted(expected - observed)))
