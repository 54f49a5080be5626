"""A class of labs (issue 11): N student labs derived from one lab definition, side by side on
one Docker host.

Student ``i`` (1..N) of lab ``L`` is a copy of L's folder under ``.pacslab/<L>/class/<L>-s<i>/``,
changed in exactly these ways:

- ``lab_name`` ``<L>-s<i>``, ``lab_prefix`` ``<prefix>s<i>`` (containers, networks and volumes),
  ``lab_bridge_prefix`` ``<b>s<i>-`` where ``b`` is the first letter of L's bridge prefix (Linux
  bridge names, at most 15 characters with the zone name);
- every IPv4 address and network inside L's ``lab_address_space`` (zone subnets, routers, probe
  addresses, hosts) moved by ``i`` times the size of that space: 10.77.0.0/16 becomes 10.78.0.0/16
  for student 1, so no two labs share an address and each keeps its own internal networks;
- every published host port (``lab_publish``) moved up by ``1000 * i``: two labs cannot both
  publish 443 on the Docker host.

The class is derived into a scratch folder and each student loaded there (pacslab.topology) before
any existing student folder is replaced or any lab is brought up: a derivation the loader refuses
is reported with file, key and reason, and nothing changes. So is one whose subnets another Docker
network already uses, one that leaves an address of L's space in a value it cannot move (an address
inside a URL, say), and a smaller class while the larger one exists. ``class.json`` beside the
folders lists the members.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from .plan import state_dir
from .topology import Lab, LabDefinitionError, Problem, load_lab

PORT_STEP = 1000  # a student lab's published ports: the source's + PORT_STEP * its index
ADDRESS = re.compile(r"(?<![\d.])(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})(?![\d.])")
MAX_STUDENTS = 50


class ClassError(Exception):
    """The class cannot be derived as asked; nothing was started. ``problems``: file, key, reason."""

    def __init__(self, message: str, problems: list[Problem] | None = None):
        self.problems = problems or []
        super().__init__(message + "".join(f"\n  {p}" for p in self.problems))


def class_dir(lab: Lab) -> Path:
    return state_dir(lab) / "class"


def _shift(value: Any, space: ipaddress.IPv4Network, offset: int) -> Any:
    """``value`` with every IPv4 address or network inside ``space`` moved by ``offset`` addresses."""
    if isinstance(value, dict):
        return {k: _shift(v, space, offset) for k, v in value.items()}
    if isinstance(value, list):
        return [_shift(v, space, offset) for v in value]
    if isinstance(value, str):
        try:
            if "/" in value:
                iface = ipaddress.IPv4Interface(value)  # an address with its prefix keeps its host bits
                if iface.network.subnet_of(space):
                    return f"{ipaddress.IPv4Address(int(iface.ip) + offset)}/{iface.network.prefixlen}"
            else:
                ip = ipaddress.IPv4Address(value)
                if ip in space:
                    return str(ipaddress.IPv4Address(int(ip) + offset))
        except (ValueError, TypeError):
            return value
    return value


def _publish(value: Any, step: int) -> Any:
    """lab_publish lists moved up by ``step``, wherever they are in a vars tree."""
    if isinstance(value, dict):
        return {k: ([int(p) + step for p in v] if k == "lab_publish" and isinstance(v, list) else _publish(v, step)) for k, v in value.items()}
    if isinstance(value, list):
        return [_publish(v, step) for v in value]
    return value


def student_name(lab: Lab, index: int) -> str:
    return f"{lab.name}-s{index}"


def derive(lab: Lab, index: int, out: Path) -> Path:
    """Write student ``index``'s lab folder into ``out``/<name> (see the module docstring); its path.
    ClassError when the derived space leaves the private 10.0.0.0/8 (or the space of its kind)."""
    space = lab.address_space
    offset = index * space.num_addresses
    shifted = ipaddress.IPv4Network(f"{ipaddress.IPv4Address(int(space.network_address) + offset)}/{space.prefixlen}")
    ten = ipaddress.IPv4Network("10.0.0.0/8")
    if not shifted.is_private or (space.subnet_of(ten) and not shifted.subnet_of(ten)):
        raise ClassError(f"student {index}: {space} moved by {index} spaces is {shifted}, outside the private range it started in")
    target = out / student_name(lab, index)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(lab.path, target)
    names = {"lab_name": student_name(lab, index), "lab_prefix": f"{lab.prefix}s{index}", "lab_bridge_prefix": f"{lab.bridge_prefix[0]}s{index}-"}
    for path in sorted(target.rglob("*.yml")) + sorted(target.rglob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if data is None:
            continue
        data = _publish(_shift(data, space, offset), PORT_STEP * index)
        if isinstance(data, dict):
            data.update({k: v for k, v in names.items() if k in data})
        text = yaml.safe_dump(data, sort_keys=False, width=160)
        left = [m for m in ADDRESS.findall(text) if ipaddress.IPv4Address(m) in space]
        if left:
            raise ClassError(f"student {index}: {path.relative_to(target)} still holds {left[0]} of {space} where it cannot be moved "
                             "(inside a longer value): write it as an address or a network of its own")
        header = f"# Derived by pacslab class from {lab.path} (student {index}); rewritten by `pacslab class up`.\n"
        path.write_text(header + text)
    return target


def _taken_subnets(exclude_labs: set[str]) -> dict[ipaddress.IPv4Network, str]:
    """Subnets of the Docker networks that no lab in ``exclude_labs`` owns: network name by subnet
    (empty when no engine answers: `up` then meets Docker's own refusal)."""
    from .docker import docker, engine_version
    from .plan import LABEL_LAB

    if engine_version() is None:
        return {}
    ids = docker("network", "ls", "-q").stdout.split()
    taken = {}
    for net in json.loads(docker("network", "inspect", *ids).stdout) if ids else []:
        if (net.get("Labels") or {}).get(LABEL_LAB) in exclude_labs:
            continue
        for cfg in (net.get("IPAM") or {}).get("Config") or []:
            if cfg.get("Subnet") and ":" not in cfg["Subnet"]:
                taken[ipaddress.IPv4Network(cfg["Subnet"])] = net["Name"]
    return taken


def derive_class(lab: Lab, count: int) -> list[Lab]:
    """Derive and load ``count`` student labs (1..count); nothing is started. ClassError (nothing
    changed) with every refused student's problems, for a count out of 1..MAX_STUDENTS, for a class
    smaller than the one that exists, or for subnets another Docker network uses."""
    if not 1 <= count <= MAX_STUDENTS:
        raise ClassError(f"--count {count}: a class has 1 to {MAX_STUDENTS} student labs")
    out = class_dir(lab)
    record = out / "class.json"
    existing = json.loads(record.read_text())["students"] if record.is_file() else []
    if len(existing) > count:
        raise ClassError(f"lab {lab.name!r} has a class of {len(existing)} student labs: `pacslab class down` before a smaller one")
    scratch = out / ".derive"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        problems: list[Problem] = []
        derived = []
        for i in range(1, count + 1):
            folder = derive(lab, i, scratch)
            try:
                derived.append(load_lab(folder))
            except LabDefinitionError as exc:
                problems += exc.problems
        if problems:
            raise ClassError(f"the class of lab {lab.name!r} was refused; nothing was changed", problems)
        taken = _taken_subnets({s.name for s in derived} | {lab.name})
        clashes = [f"{s.name} zone {z.name} {z.subnet} overlaps Docker network {taken[t]} ({t})"
                   for s in derived for z in s.zones.values() for t in taken if z.subnet.overlaps(t)]
        if clashes:
            raise ClassError(f"the class of lab {lab.name!r} was refused; nothing was changed: " + "; ".join(clashes))
        for s in derived:
            final = out / s.path.name
            shutil.rmtree(final, ignore_errors=True)
            s.path.rename(final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    students = [load_lab(out / student_name(lab, i)) for i in range(1, count + 1)]
    record.write_text(json.dumps({"lab": lab.name, "students": [str(s.path) for s in students]}, indent=1))
    return students


def members(lab: Lab) -> list[Lab]:
    """The student labs of the class last derived from ``lab`` (none when there is no class).
    ClassError when a member's folder is gone or no longer loads (its lab may still run: take it
    down with `pacslab down --lab` on a copy of its definition)."""
    record = class_dir(lab) / "class.json"
    if not record.is_file():
        return []
    students = []
    for path in json.loads(record.read_text())["students"]:
        try:
            students.append(load_lab(path))
        except (LabDefinitionError, FileNotFoundError) as exc:
            raise ClassError(f"student lab {path} of the class of {lab.name!r} cannot be read: {exc}") from exc
    return students


def forget(lab: Lab, students: list[Lab]) -> None:
    """Drop the class's folders and each student lab's state folder (secrets, records, snapshots)."""
    for s in students:
        shutil.rmtree(state_dir(s), ignore_errors=True)
    shutil.rmtree(class_dir(lab), ignore_errors=True)


_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "kB": 1000, "MB": 1000**2, "GB": 1000**3}


def memory_mib(lab: Lab) -> float:
    """The memory the lab's containers use now (docker stats, one sample), in MiB."""
    from .docker import docker
    from .plan import LABEL_LAB

    ids = docker("ps", "-q", "--filter", f"label={LABEL_LAB}={lab.name}").stdout.split()
    if not ids:
        return 0.0
    total = 0.0
    for line in docker("stats", "--no-stream", "--format", "{{.MemUsage}}", *ids, timeout=120).stdout.splitlines():
        used = line.split("/")[0].strip()
        number = used.rstrip("BKMGikb")
        total += float(number) * _UNITS[used[len(number):]]
    return round(total / 1024**2, 1)
