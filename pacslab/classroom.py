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

Beyond one Docker host: a class file is an Ansible inventory whose group ``docker_hosts`` lists the
Docker engines (``docker_host``: the DOCKER_HOST URL the controller reaches the engine at; the
host's Ansible connection: how to reach the machine the engine runs on, for its host rules).
playbooks/class.yml spreads the students over them (student i on host i mod H, in the group's
order), copies the lab's images to each engine from the controller's, and runs `pacslab up` or
`down` for each student with that engine's DOCKER_HOST and PACSLAB_ENGINE_HOST (pacslab.engine).
Without a class file the class has one Docker host: this machine's engine. ``placement.json``
records each student's engine for `class status` and `class down`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .engine import SECRET_VARS
from .plan import Plan, state_dir
from .topology import Lab, LabDefinitionError, Problem, lab_vars_files, load_lab, read_vars_file, write_vars_file

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
    # Every YAML file, and every vars file Ansible reads whatever its suffix (.json, none).
    read = {target / vf.relative_to(lab.path) for vf in lab_vars_files(lab)}
    for path in sorted({*target.rglob("*.yml"), *target.rglob("*.yaml"), *read}):
        data = read_vars_file(path)
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
        write_vars_file(path, data, header)
    return target


DOCKER_HOSTS_GROUP = "docker_hosts"
DOCKER_URL = re.compile(r"^(unix:///\S+|tcp://[A-Za-z0-9.:\[\]-]+|ssh://\S+)$")
# The Ansible variables of a Docker host that say how to reach its machine; PACSLAB_ENGINE_HOST
# carries them to `pacslab up` (pacslab.engine). No password: it would travel in an environment.
CONNECTION_VARS = ("ansible_connection", "ansible_host", "ansible_port", "ansible_user", "ansible_python_interpreter",
                   "ansible_docker_extra_args", "ansible_ssh_private_key_file", "ansible_ssh_common_args",
                   "ansible_become", "ansible_become_user", "ansible_become_method")
LOCAL = "local"


@dataclass(frozen=True)
class DockerHost:
    """One Docker engine of a class: its inventory name, the DOCKER_HOST URL the controller uses,
    and the Ansible connection variables of the machine it runs on."""

    name: str
    docker_host: str
    connection: dict[str, str] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        """DOCKER_HOST and PACSLAB_ENGINE_HOST for a pacslab command on this engine (the second
        empty for this machine: pacslab.engine's default, a local connection)."""
        from .engine import ENGINE_HOST_ENV, engine_host_value

        return {"DOCKER_HOST": self.docker_host, ENGINE_HOST_ENV: engine_host_value(self.name, self.connection)}


def this_machine() -> DockerHost:
    """The one Docker host of a class without a class file: the engine pacslab uses here."""
    from .docker import engine_location

    return DockerHost(LOCAL, engine_location(), {"ansible_connection": "local"})


def load_docker_hosts(path: Path) -> list[DockerHost]:
    """The Docker hosts of a class file (an Ansible inventory, read by Ansible), in the group's
    order. ClassError with file, key and reason for each problem: no such file or group, a host
    without docker_host or with one that is not a unix://, tcp:// or ssh:// URL, one engine listed
    twice, a password among the connection variables."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    file = str(path)
    if not path.is_file():
        raise ClassError("the class file was refused; nothing was changed", [Problem(file, "(file)", "no such file")])
    loader = DataLoader()
    try:
        inventory = InventoryManager(loader=loader, sources=[file])
    except Exception as exc:  # Ansible's own parse errors, whatever their class
        raise ClassError("the class file was refused; nothing was changed", [Problem(file, "(document)", str(exc))]) from exc
    group = inventory.groups.get(DOCKER_HOSTS_GROUP)
    if group is None or not group.get_hosts():
        raise ClassError("the class file was refused; nothing was changed",
                         [Problem(file, DOCKER_HOSTS_GROUP, "no such group, or it lists no host: the class's Docker hosts go there")])
    variables = VariableManager(loader=loader, inventory=inventory)
    problems: list[Problem] = []
    hosts: list[DockerHost] = []
    seen: dict[str, str] = {}
    for host in group.get_hosts():
        hv = variables.get_vars(host=host, include_hostvars=False)
        url = hv.get("docker_host")
        if not isinstance(url, str) or not DOCKER_URL.match(url):
            problems.append(Problem(file, f"{host.name}.docker_host", f"{url!r}: the engine's URL, like unix:///var/run/docker.sock, "
                                                                       "tcp://docker2:2376 or ssh://root@docker2"))
        elif url in seen:
            problems.append(Problem(file, f"{host.name}.docker_host", f"{url}: the engine of {seen[url]} too; a Docker host is listed once"))
        else:
            seen[url] = host.name
        for key in SECRET_VARS:  # pacslab.engine's list
            if key in hv:
                problems.append(Problem(file, f"{host.name}.{key}", "no password here: it would travel in an environment; use an SSH key"))
        hosts.append(DockerHost(host.name, str(url), {k: str(hv[k]) for k in CONNECTION_VARS if k in hv}))
    if problems:
        raise ClassError("the class file was refused; nothing was changed", problems)
    return hosts


@contextlib.contextmanager
def on_engine(host: DockerHost) -> Iterator[None]:
    """Run the body (and what it starts) against ``host``'s engine: DOCKER_HOST and
    PACSLAB_ENGINE_HOST set, then put back as they were."""
    saved = {k: os.environ.get(k) for k in host.environment()}
    os.environ.update(host.environment())
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _taken_subnets(exclude_labs: set[str], hosts: list[DockerHost] | None = None) -> dict[ipaddress.IPv4Network, str]:
    """Subnets of the Docker networks, on every engine of ``hosts`` (this machine's by default),
    that no lab in ``exclude_labs`` owns: network name by subnet (an engine that does not answer
    adds none: `up` then meets its own refusal)."""
    taken: dict[ipaddress.IPv4Network, str] = {}
    for host in hosts or [this_machine()]:
        with on_engine(host):
            taken |= {net: f"{name} on {host.name}" if host.name != LOCAL else name for net, name in _engine_subnets(exclude_labs).items()}
    return taken


def _engine_subnets(exclude_labs: set[str]) -> dict[ipaddress.IPv4Network, str]:
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


def derive_class(lab: Lab, count: int, hosts: list[DockerHost] | None = None) -> list[Lab]:
    """Derive and load ``count`` student labs (1..count); nothing is started. ClassError (nothing
    changed) with every refused student's problems, for a count out of 1..MAX_STUDENTS, for a class
    smaller than the one that exists, or for subnets another Docker network uses on any of
    ``hosts`` (the class's Docker hosts; this machine's engine by default)."""
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
        taken = _taken_subnets({s.name for s in derived} | {lab.name}, hosts)
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


def hosts_file(lab: Lab) -> Path:
    """The class's inventory of Docker hosts: the class file given to `class up`, copied, or one
    with this machine's engine alone."""
    return class_dir(lab) / "docker-hosts.yml"


def docker_hosts(lab: Lab, source: Path | None) -> tuple[list[DockerHost], str]:
    """The class's Docker hosts (``source``, a class file; else the class's own; else this machine
    alone) and the inventory text to keep for them (keep_docker_hosts). ClassError, nothing
    changed, for a class file that is refused, or that lacks a host a student lab of the class runs
    on, or gives it another URL (the lab would be left running there). New hosts may join."""
    if source is None and hosts_file(lab).is_file():  # the class's own, from its first `class up`
        source = hosts_file(lab)
    if source is not None:
        hosts = load_docker_hosts(source)
        text = source.read_text()
    else:
        here = this_machine()
        hosts = [here]
        text = yaml.safe_dump({"all": {"children": {DOCKER_HOSTS_GROUP: {"hosts": {here.name: {"docker_host": here.docker_host,
                                                                                             **here.connection}}}}}})
    before = {h.name: h.docker_host for h in placement(lab).values()}
    now = {h.name: h.docker_host for h in hosts}
    if any(now.get(name) != url for name, url in before.items()):
        raise ClassError(f"lab {lab.name!r} has a class on {', '.join(f'{n} ({u})' for n, u in sorted(before.items()))}: "
                         "`pacslab class down` first, or keep those hosts in the class file")
    return hosts, text


def keep_docker_hosts(lab: Lab, text: str) -> None:
    hosts_file(lab).parent.mkdir(parents=True, exist_ok=True)
    hosts_file(lab).write_text(text)


def placement_file(lab: Lab) -> Path:
    return class_dir(lab) / "placement.json"


def place(students: list[Lab], hosts: list[DockerHost], placed: dict[str, DockerHost] | None = None) -> dict[str, DockerHost]:
    """Student lab folder -> its Docker host: student i (0-based) on host i mod len(hosts), but a
    student lab already ``placed`` stays on its host (docker_hosts refused a class file without it;
    its connection is the file's now)."""
    placed = placed or {}
    by_name = {h.name: h for h in hosts}
    fresh = {str(s.path): hosts[i % len(hosts)] for i, s in enumerate(students)}
    return {path: by_name.get(placed[path].name, placed[path]) if path in placed else host for path, host in fresh.items()}


def placement(lab: Lab) -> dict[str, DockerHost]:
    """Where each student lab of the class runs: placement.json, or this machine for every member
    of a class from before class files (class.json alone); {} without a class."""
    record = placement_file(lab)
    if record.is_file():
        return {path: DockerHost(p["host"], p["docker_host"], p["connection"]) for path, p in json.loads(record.read_text()).items()}
    members = class_dir(lab) / "class.json"
    if members.is_file() and not hosts_file(lab).is_file():  # brought up before class files, on this machine
        return {path: this_machine() for path in json.loads(members.read_text())["students"]}
    return {}


def keep_placement(lab: Lab) -> None:
    """Write down where a class from before class files runs (this machine), before `class up`
    keeps a hosts file and derives the class again: its labs then stay where they are."""
    if not placement_file(lab).is_file():
        placed = placement(lab)
        if placed:
            placement_file(lab).write_text(json.dumps({path: {"host": h.name, "docker_host": h.docker_host, "connection": h.connection}
                                                       for path, h in placed.items()}, indent=1))


def engine_of(lab: Lab, student: Lab) -> DockerHost:
    return placement(lab).get(str(student.path)) or this_machine()


def class_images(plan: Plan) -> list[str]:
    """The image tags a student lab of ``plan`` runs, as `class up` copies them to an engine that
    lacks one (playbooks/class.yml): the root file system, the base and every image of the plan."""
    return [plan.rootfs, plan.base.tag] + [i.tag for i in plan.images]


def run_class(lab: Lab, students: list[Lab], action: str) -> int:
    """Run playbooks/class.yml: each Docker host's students brought ``action`` (up or down) on its
    engine, the hosts in parallel. Placement is recorded first (up), so a failed run can be
    re-run or taken down. Returns ansible-playbook's exit status."""
    import subprocess
    import sys

    from .engine import PLAYBOOKS, ansible_playbook
    from .plan import build_plan
    from .topology import REPO_ROOT

    hosts = {h.name: h for h in load_docker_hosts(hosts_file(lab))}
    placed = placement(lab)
    where = (placed or place(students, list(hosts.values()))) if action == "down" else place(students, list(hosts.values()), placed)
    if action == "up":
        placement_file(lab).write_text(json.dumps({path: {"host": h.name, "docker_host": h.docker_host, "connection": h.connection}
                                                   for path, h in where.items()}, indent=1))
    students_of: dict[str, list[str]] = {}
    for path, host in where.items():
        students_of.setdefault(host.name, []).append(path)
    beside = Path(sys.executable).parent / "pacslab"
    plan = build_plan(lab)
    variables = plan.to_vars() | {
        "class_action": action,
        "class_students_of": students_of,
        "class_environment": {name: h.environment() for name, h in hosts.items()} | {h.name: h.environment() for h in where.values()},
        "class_images": class_images(plan),
        "class_controller_engine": this_machine().docker_host,
        "class_pacslab": [str(beside)] if beside.is_file() else [shutil.which("pacslab") or "pacslab"],
    }
    plan_file = class_dir(lab) / "class-plan.json"
    plan_file.write_text(json.dumps(variables, indent=1))
    exe = ansible_playbook()
    if exe is None:
        raise ClassError("ansible-playbook not found: pip install -r requirements.txt")
    env = os.environ | {"ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"), "ANSIBLE_LOG_PATH": str(class_dir(lab) / "ansible.log"),
                        "PACSLAB_SUMMARY": str(class_dir(lab) / f"summary-{action}.json")}
    cmd = [exe, "-i", str(hosts_file(lab)), "-e", f"@{plan_file}", str(PLAYBOOKS / "class.yml")]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, check=False).returncode
