"""Containment (C-RSP-02, CSF RS.MI-1 and RS.MI-2): a lab host put in the fw's quarantine set, and
released from it, through roles/firewall's pacslab-quarantine on the fw.

A quarantined host keeps only the security zone (pacslab.firewall QUARANTINE_REACH); every other
packet from or to it is rejected (TCP, with a reset, so an open association ends at its next
segment) or dropped, and logged with the prefix "pacslab quarantine ". Each change is one JSON line
of the fw's /var/log/pacslab/fw-response.json (time, action, address, host, by, reason, changed).
"""

from __future__ import annotations

import contextlib
import getpass
import ipaddress
import json
from collections.abc import Iterator
from typing import Any

from .docker import docker
from .firewall import QUARANTINE_REACH
from .plan import SIEM_USER, SIEMS
from .topology import Lab

COMMAND = "pacslab-quarantine"  # roles/firewall/files, on the fw


class ContainmentError(ValueError):
    """A host that cannot be quarantined: unknown, not deployed, the fw, a host of the reach zones."""


class FirewallError(RuntimeError):
    """pacslab-quarantine failed on the fw (its message, nft's when nft refused)."""


def target(lab: Lab, name: str) -> str:
    """The address to quarantine for the lab host ``name``; ContainmentError says why there is none."""
    host = lab.hosts.get(name)
    if host is None:
        raise ContainmentError(f"{name!r} is not a host of lab {lab.name!r} (see `pacslab status`)")
    if host.is_router:
        raise ContainmentError(f"{name} is the zone firewall: it enforces the quarantine, it cannot be in it")
    if not host.deployed or host.address is None:
        raise ContainmentError(f"{name} is planned, not deployed: nothing runs at its address to contain")
    if host.zone in QUARANTINE_REACH:
        raise ContainmentError(f"{name} is in the {host.zone} zone, which a quarantined host keeps: the fw cannot isolate it")
    return str(host.address)


def release_target(lab: Lab, name: str) -> str:
    """The address to release for ``name``: a lab host's (``target``), or an IPv4 address no host
    has inside one of the lab's zones (a rogue device the siem had quarantined: unknown-device);
    ContainmentError says why there is none."""
    if name in lab.hosts:
        return target(lab, name)
    try:
        address = ipaddress.IPv4Address(name)
    except ValueError:
        return target(lab, name)  # no host, no address: target names the error
    owner = next((h.name for h in lab.hosts.values() if h.address == address), None)
    if owner is not None:
        return target(lab, owner)
    if not any(address in zone.subnet for zone in lab.zones.values()):
        raise ContainmentError(f"{address} is in no zone of lab {lab.name!r}: nothing of the lab's to release")
    return str(address)


def _run(lab: Lab, *args: str) -> dict[str, Any]:
    proc = docker("exec", lab.container_name(lab.router.name), COMMAND, *args, check=False, timeout=60)
    try:
        said: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        said = {"error": (proc.stderr or proc.stdout).strip()[-300:] or f"{COMMAND} exited {proc.returncode}"}
    if proc.returncode != 0:
        raise FirewallError(f"{lab.router.name}: {COMMAND} {args[0]} failed: {said.get('nft_error') or said.get('error') or said}")
    return said


def quarantine(lab: Lab, name: str, reason: str, by: str | None = None) -> dict[str, Any]:
    """Put ``name`` in the quarantine set. Returns the fw's log entry: {time, action: "quarantine",
    address, host, by, reason, changed} (changed false when it already was)."""
    return _run(lab, "add", target(lab, name), "--host", name, "--by", by or getpass.getuser(), "--reason", reason)


def release(lab: Lab, name: str, reason: str, by: str | None = None) -> dict[str, Any]:
    """Take ``name`` (a lab host, or an address no host has in a lab zone: ``release_target``) out of
    the quarantine set; the fw's log entry (action "release")."""
    return _run(lab, "release", release_target(lab, name), "--by", by or getpass.getuser(), "--reason", reason)


def release_address(lab: Lab, address: str, reason: str, by: str | None = None) -> dict[str, Any]:
    """Take ``address`` out of the quarantine set, whoever's it is (a scenario's reset); the fw's log entry."""
    return _run(lab, "release", address, "--by", by or getpass.getuser(), "--reason", reason)


def quarantined(lab: Lab) -> dict[str, dict[str, Any]]:
    """The fw's record: {address: {host, by, reason, since (UTC), enforced (in the live set)}}."""
    return _run(lab, "list")


def _siem(lab: Lab, host: str, *args: str) -> dict[str, Any]:
    """pacslab-siem ``args`` on the siem ``host``, as the store's user; its JSON answer."""
    answer: dict[str, Any] = json.loads(docker("exec", "-u", SIEM_USER, lab.container_name(host), "pacslab-siem", *args, timeout=60).stdout)
    return answer


@contextlib.contextmanager
def authorised(lab: Lab, reason: str, addresses: list[str] | None = None, minutes: float = 30, by: str | None = None) -> Iterator[None]:
    """A window of authorised activity on every deployed siem while the block runs (the lab's own
    segmentation check, a scheduled scan), for the activity of ``addresses`` (None: any address):
    the alerts it causes are raised, the hosts are not quarantined (their decision is withheld,
    naming the window). A lab without a siem: nothing to tell; a siem gone when the block ends (the
    lab taken down inside it): nothing to end."""
    who = by or getpass.getuser()
    covered = [arg for a in addresses or [] for arg in ("--address", a)]
    windows = {h.name: int(_siem(lab, h.name, "authorise", "--minutes", str(minutes), "--reason", reason, "--by", who, *covered)["window"])
               for h in lab.deployed_hosts() if SIEMS in h.groups}
    try:
        yield
    finally:
        for host, window in windows.items():
            if docker("inspect", "--type", "container", lab.container_name(host), check=False).returncode != 0:
                continue  # the lab was taken down meanwhile (a session's last check): no window left to end
            _siem(lab, host, "authorise", "--end", str(window), "--reason", reason, "--by", who)
