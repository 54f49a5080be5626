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
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from .docker import docker
from .firewall import QUARANTINE_REACH
from .plan import SIEM_USER, SIEMS
from .topology import Lab

COMMAND = "pacslab-quarantine"  # roles/firewall/files, on the fw
FOLLOW = 3.0  # seconds: the fw asks the siem for its containment decisions every 2 s (roles/firewall firewall_follow_every)
EVALUATED = "/var/lib/pacslab-siem/evaluated.json"  # the siem evaluator's last finished pass: {"started", "finished"} (UTC)
PASS_TIMEOUT = 60.0  # seconds a pass of the siem's evaluator is waited for at most (it runs every 2 s)


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


def _siem(lab: Lab, host: str, *args: str) -> Any:
    """pacslab-siem ``args`` on the siem ``host``, as the store's user; its JSON, parsed (an answer's
    object, or a listing's list when ``args`` ask for --json)."""
    return json.loads(docker("exec", "-u", SIEM_USER, lab.container_name(host), "pacslab-siem", *args, timeout=60).stdout)


def evaluated_after(lab: Lab, host: str, stamp: str) -> None:
    """Return once the evaluator of the siem ``host`` has finished a pass that started after the UTC
    time ``stamp`` (RFC 3339): what was stored before ``stamp``, that pass weighed. TimeoutError
    after PASS_TIMEOUT seconds (the evaluator stopped, or the siem is gone)."""
    deadline = time.monotonic() + PASS_TIMEOUT
    while True:
        proc = docker("exec", lab.container_name(host), "cat", EVALUATED, check=False, timeout=60)
        if proc.returncode == 0 and str(json.loads(proc.stdout).get("started", "")) > stamp:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{host}: no pass of the detections started after {stamp} within {PASS_TIMEOUT:.0f} s")
        time.sleep(0.5)


def release_when_settled(lab: Lab, address: str, reason: str, by: str | None = None, rounds: int = 5) -> int:
    """Release ``address`` once every deployed siem has weighed all it sent: an event of the alert
    stored after a release decides again (a scan's; a sequence's, when those after the release form
    it on their own). For a device the lab no longer runs (a rogue the siem quarantined, removed),
    or a host whose part in the alert is over (a check's own break-in from it). Each round waits
    for a pass of each siem's detections that started after the round, gives the fw FOLLOW seconds
    to pull what they decided, and releases the address if it is quarantined; the rounds go on
    while one brings a new decision about the address, ``rounds`` at most. Returns how many
    releases were made (each one of the fw's log entries)."""
    siems = [h.name for h in lab.deployed_hosts() if SIEMS in h.groups]
    released, before = 0, None
    for _ in range(rounds):
        for host in siems:
            evaluated_after(lab, host, datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"))
        decided = sorted(int(d["id"]) for host in siems for d in _siem(lab, host, "containment", "--json") if d["address"] == address)
        if decided == before:
            break
        time.sleep(FOLLOW)
        if address in quarantined(lab):
            release_address(lab, address, reason, by=by)
            released += 1
        before = decided
    return released


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
