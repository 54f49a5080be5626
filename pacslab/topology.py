"""Load and validate a lab definition (docs/architecture.md section 1).

A lab is an ordinary Ansible inventory folder: ``hosts.yml`` (hosts, their groups and ``lab_*``
host keys), ``group_vars/all/*.yml`` (zones, flows, waivers) and optional ``host_vars/<host>.yml``.
This module is the only reader of that folder; every command validates first, and a broken
definition is refused with the file, the key and the reason before anything on the host changes.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .people import Person, ServiceAccount
from .people import check as people_check

# LibYAML's parser where PyYAML was built with it (the wheels are): the lab definition, the role
# defaults and the plan's digest read about 60 YAML files per load, 0.5 s of pure-Python parsing.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str | bytes) -> Any:
    """yaml.safe_load, with LibYAML when PyYAML has it: the same documents, the same errors
    (yaml.YAMLError, with problem_mark)."""
    return yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 (a safe loader)


log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = REPO_ROOT / "images"

BRIDGE_NAME_MAX = 15  # IFNAMSIZ - 1: Linux refuses longer interface names
AE_TITLE_MAX = 16  # DICOM PS3.5 6.2, value representation AE
CRITICALITIES = ("low", "medium", "high", "critical")
STATES = ("deployed", "planned")
PROTOCOLS = ("tcp", "udp", "any")
HOST_KEYS = {
    "lab_zone",
    "lab_address",
    "lab_image",
    "lab_state",
    "lab_ae_title",
    "lab_owner",
    "lab_criticality",
    "lab_purpose",
    "lab_kind",
    "lab_volumes",
    "lab_publish",
    "lab_services",
}
ZONE_KEYS = {"subnet", "router", "probe", "purpose", "exposed"}
# Role switches that turn controls off -> (the role, its default listing those controls): false is
# refused unless the lab waives every one. The role's list is the only one. roles/orthanc asserts it
# too (a playbook run without this loader); the other roles rely on the loader, which every command
# that converges a lab runs first.
CONTROL_SWITCHES = {"orthanc_controls": ("orthanc", "orthanc_controls_waived"),
                    "orthanc_dicom_allowlist": ("orthanc", "orthanc_dicom_allowlist_waived"),
                    "orthanc_dicom_peer_certificates": ("orthanc", "orthanc_dicom_peer_certificates_waived"),
                    "orthanc_md5": ("orthanc", "orthanc_md5_waived"),
                    "orthanc_dicom_tls": ("orthanc", "orthanc_dicom_tls_waived"),
                    "orthanc_malware_scan": ("orthanc", "orthanc_malware_scan_waived"),
                    "orthanc_hids": ("orthanc", "orthanc_hids_waived"),
                    "firewall_dicom_limits": ("firewall", "firewall_dicom_limits_waived"),
                    "idp_second_factor": ("idp", "idp_second_factor_waived"),
                    "bastion_vendor_controls": ("bastion", "bastion_vendor_controls_waived"),
                    "log_rotation_append_only": ("log_rotation", "log_rotation_append_only_waived"),
                    "log_shipping_dicom_audit": ("log_shipping", "log_shipping_dicom_audit_waived")}

# Switches that other hosts' roles read too (hostvars): a node dials a PACS without DICOM TLS in
# cleartext. Each counts in the converge inputs of its host and of the hosts that name that host as
# a peer (pacslab.plan host_inputs).
PEER_READ_SWITCHES = frozenset({"orthanc_dicom_tls"})


def switched_off(switch: str) -> tuple[str, ...]:
    """The controls a role switch turns off when false, as the role's defaults list them."""
    role, key = CONTROL_SWITCHES[switch]
    defaults = safe_load((REPO_ROOT / "roles" / role / "defaults" / "main.yml").read_text())
    return tuple(defaults[key])
FLOW_KEYS = {"id", "from", "to", "proto", "ports", "purpose", "csf", "service"}
# Variables of the lab as a whole: set once, in group_vars/all; a group or host that overrides one
# would give its hosts another lab than the rest.
LAB_WIDE_KEYS = ("lab_name", "lab_prefix", "lab_bridge_prefix", "lab_address_space", "lab_zones", "lab_flows", "lab_waivers",
                 "lab_people", "lab_service_accounts")
# Role variables that were removed: a lab definition that still sets one is refused, not ignored
# (its value would change nothing). Each names what took its place: one value every role reads,
# set for every lab in the playbooks' group_vars/all (which Ansible ranks above a lab's own
# group_vars/all: a lab that must move the file sets it in a group's group_vars or in host_vars).
_RETIRED = "removed, delete it: every role that reads {what} now reads the playbooks' {var} (playbooks/group_vars/all/{file})"
RETIRED_VARS = {
    "orthanc_hids_events": _RETIRED.format(what="the host watch's event file", var="pacslab_hids_events", file="monitoring.yml"),
    "orthanc_hids_user": _RETIRED.format(what="the host watch's user", var="pacslab_hids_user", file="monitoring.yml"),
    "maintenance_sudo_log": _RETIRED.format(what="sudo's log", var="pacslab_sudo_log", file="maintenance.yml"),
    "maintenance_sshd_log": _RETIRED.format(what="the maintenance sshd's log", var="pacslab_sshd_log", file="maintenance.yml"),
    "ris_hl7_record": _RETIRED.format(what="the HL7 record", var="pacslab_hl7_record", file="monitoring.yml"),
}
# The playbooks' group_vars/all: values every lab gets, which Ansible ranks above a lab's own
# group_vars/all and every group's vars in hosts.yml (a lab overrides one in a group's group_vars
# file or in host_vars, which rank above it).
PLAYBOOK_GROUP_VARS_ALL = REPO_ROOT / "playbooks" / "group_vars" / "all"
# Variables Ansible adds to every host (magic variables): not part of the definition.
MAGIC_VARS = {"group_names", "groups", "inventory_dir", "inventory_file", "inventory_hostname", "inventory_hostname_short", "playbook_dir"}
VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
FLOW_ID_RE = re.compile(r"^F[0-9]{2}[a-z]?$")
CONTROL_ID_RE = re.compile(r"^C-[A-Z]{3}-[0-9]{2}$")
AE_RE = re.compile(r"^[\x21-\x5b\x5d-\x7e][\x20-\x5b\x5d-\x7e]*$")  # no backslash, no control chars


@dataclass(frozen=True)
class Problem:
    """One reason a lab definition is refused."""

    file: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.reason}"


class LabDefinitionError(Exception):
    """The lab definition is broken; nothing has been changed."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class Zone:
    name: str
    subnet: ipaddress.IPv4Network
    bridge: str
    router: ipaddress.IPv4Address
    probe: ipaddress.IPv4Address
    purpose: str
    exposed: bool = False

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """The Docker bridge's own address (first host address); reserved, never a lab host."""
        return self.subnet.network_address + 1


@dataclass(frozen=True)
class Service:
    """A service the host listens for on every lab address: lab_services {name: port | "port/udp"}."""

    name: str
    proto: str  # tcp | udp
    port: int


@dataclass(frozen=True)
class Volume:
    name: str
    path: str


@dataclass(frozen=True)
class Host:
    name: str
    groups: tuple[str, ...]
    zone: str | None  # None for the router, which joins every zone
    address: ipaddress.IPv4Address | None
    image: str | None
    state: str
    owner: str
    criticality: str
    purpose: str
    kind: str = "host"
    ae_title: str | None = None
    volumes: tuple[Volume, ...] = ()
    publish: tuple[int, ...] = ()
    services: tuple[Service, ...] = ()

    @property
    def deployed(self) -> bool:
        return self.state == "deployed"

    @property
    def is_router(self) -> bool:
        return self.kind == "router"

    def service(self, name: str) -> Service:
        """The listening service called ``name`` (KeyError naming the host when it has none)."""
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(f"host {self.name} has no service {name!r} in lab_services")

    @property
    def dicom_port(self) -> int:
        """The port of the host's DICOM service (lab_services.dicom)."""
        return self.service("dicom").port


@dataclass(frozen=True)
class Endpoint:
    """A flow end: one host, or every address of a zone."""

    kind: str  # "host" | "zone"
    name: str

    def __str__(self) -> str:
        return self.name if self.kind == "host" else f"zone:{self.name}"


@dataclass(frozen=True)
class Flow:
    id: str
    sources: tuple[Endpoint, ...]
    dest: Endpoint
    proto: str
    ports: tuple[int, ...] | None  # None: any port (proto any)
    purpose: str
    csf: tuple[str, ...]
    planned: bool = False  # service: planned: the destination's service for it comes later
    intra_zone: bool = False  # source and destination share a zone: the fw never sees it


@dataclass(frozen=True)
class Waiver:
    control: str
    justification: str


@dataclass(frozen=True)
class Lab:
    path: Path
    name: str
    prefix: str
    bridge_prefix: str
    address_space: ipaddress.IPv4Network
    zones: dict[str, Zone]
    hosts: dict[str, Host]
    flows: tuple[Flow, ...]  # flows that cross the fw: its accept rules, the segmentation matrix
    waivers: tuple[Waiver, ...] = field(default=())
    zone_flows: tuple[Flow, ...] = field(default=())  # flows inside one zone: the hosts' own allow-lists enforce them
    host_vars: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)  # as Ansible resolves them
    people: tuple[Person, ...] = field(default=())  # group_vars/all lab_people (pacslab.people)
    service_accounts: tuple[ServiceAccount, ...] = field(default=())  # group_vars/all lab_service_accounts

    @property
    def all_flows(self) -> tuple[Flow, ...]:
        return self.flows + self.zone_flows

    def group(self, name: str) -> list[Host]:
        """The hosts of an inventory group, in definition order."""
        return [h for h in self.hosts.values() if name in h.groups]

    @property
    def router(self) -> Host:
        return next(h for h in self.hosts.values() if h.is_router)

    def container_name(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def network_name(self, zone: str) -> str:
        return f"{self.prefix}-{zone}"

    def deployed_hosts(self) -> list[Host]:
        return [h for h in self.hosts.values() if h.deployed]


# --------------------------------------------------------------------------------------------
# Reading the inventory folder


class _Reader:
    """Collects values with the file and key path they came from, and the problems found."""

    def __init__(self, root: Path):
        self.root = root
        self.problems: list[Problem] = []

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    def fail(self, file: Path | str, key: str, reason: str) -> None:
        self.problems.append(Problem(self.rel(file) if isinstance(file, Path) else file, key, reason))

    def load_yaml(self, path: Path) -> Any:
        """The file's data, read as Ansible reads a vars file: JSON first (YAML would refuse a tab in
        its indentation), else YAML."""
        try:
            text = path.read_text()
            try:
                return json.loads(text) or {}
            except ValueError:
                pass
            return safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark is not None else "(document)"
            self.fail(path, where, f"not valid YAML: {getattr(exc, 'problem', exc)}")
            return {}
        except OSError as exc:
            self.fail(path, "(file)", f"cannot read: {exc.strerror}")
            return {}


# The groups pacslab makes beside a lab's own (not in hosts.yml): Ansible would give a lab's
# group_vars file of that name to whatever pacslab puts there, the engine's machine or, during an
# up's configure play alone, every node, behind the lab definition's back.
ENGINE_GROUPS = {
    "pacslab_engine": "the machine of the Docker engine, pacslab.engine",
    "pacslab_containers": "the lab's containers, roles/lab_provision",
    "pacslab_deployed": "the deployed nodes, roles/lab_provision",
    "pacslab_configuring": "the nodes an up configures, playbooks/up.yml",
}

# The names Ansible reads as a vars file (ansible.constants YAML_FILENAME_EXTENSIONS), and none.
VARS_SUFFIXES = ("", ".yml", ".yaml", ".json")


def _vars_files(folder: Path) -> list[Path]:
    """The files Ansible reads for group_vars/<name> or host_vars/<name>, in its order
    (DataLoader.find_vars_files): the first of <name>, <name>.yml, <name>.yaml, <name>.json that
    exists, alone; a folder read through, its sub-folders too, name by name, each file with one of
    those suffixes or none, leaving out hidden files and backups (a trailing ~)."""
    source = _vars_source(folder)
    if source is None:
        return []
    return _vars_folder(source) if source.is_dir() else [source]


def _vars_source(folder: Path) -> Path | None:
    """The one of <name>, <name>.yml, <name>.yaml, <name>.json that Ansible reads: the first that exists."""
    return next((c for c in (folder.with_name(folder.name + s) for s in VARS_SUFFIXES) if c.exists()), None)


def _vars_names(folder: Path, known: set[str]) -> list[str]:
    """The names group_vars/ or host_vars/ holds vars for, as Ansible would match them with a host or
    a group (``known``): each entry, file or folder, less a .yml, .yaml or .json suffix; one with
    another suffix (README.md, or a host named ct.local) only when it is a known name. Hidden
    entries and backups are left out."""
    if not folder.is_dir():
        return []
    names = set()
    for entry in folder.iterdir():
        if entry.name.startswith(".") or entry.name.endswith("~"):
            continue
        if entry.suffix in VARS_SUFFIXES:
            names.add(entry.name.removesuffix(entry.suffix))
        elif entry.name in known:
            names.add(entry.name)
    return sorted(names)


def _group_names(node: Any) -> set[str]:
    """Every group hosts.yml names, from 'all' down, with Ansible's own 'ungrouped'."""
    names = {"all", "ungrouped"}
    for child, body in ((node.get("children") or {}).items() if isinstance(node, Mapping) else []):
        names |= {child} | _group_names(body)
    return names


def _vars_folder(folder: Path) -> list[Path]:
    found: list[Path] = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.name.endswith("~"):
            continue
        if entry.is_dir() and not entry.suffix:
            found += _vars_folder(entry)
        elif entry.is_file() and entry.suffix in VARS_SUFFIXES:
            found.append(entry)
    return found


def read_vars_file(path: Path) -> Any:
    """A vars file's data as Ansible reads it (JSON first, else YAML; None when empty). OSError,
    yaml.YAMLError as the reading raises them: for a file load_lab has already read."""
    text = path.read_text()
    try:
        return json.loads(text)
    except ValueError:
        return safe_load(text)


def write_vars_file(path: Path, data: Any, header: str = "") -> None:
    """Write ``data`` to a vars file in its own format: JSON for a .json file (which has no comments,
    so ``header``, a YAML comment, is left out), YAML otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        path.write_text(json.dumps(data, indent=2) + "\n")
    else:
        path.write_text(header + yaml.safe_dump(data, sort_keys=False, width=160))


def lab_vars_files(lab: Lab) -> list[Path]:
    """Every file of the lab's folder Ansible reads variables from, less the inventory: for each
    name in group_vars/ and host_vars/ that is one of the lab's hosts or groups, the files
    DataLoader.find_vars_files reads for it (``_vars_files``), in its order. load_lab refuses a lab
    with any other vars file, so these are all of them."""
    inventory = next((lab.path / n for n in ("hosts.yml", "hosts.yaml") if (lab.path / n).is_file()), lab.path / "hosts.yml")
    top = read_vars_file(inventory)
    known = set(lab.hosts) | _group_names(top.get("all") if isinstance(top, Mapping) else None)
    return [vf for folder in ("group_vars", "host_vars") for name in _vars_names(lab.path / folder, known)
            for vf in _vars_files(lab.path / folder / name)]


def vars_file_for(lab_path: Path, folder: str, name: str, key: str, default: str) -> Path:
    """The file of the lab folder ``lab_path`` to write ``key`` of ``folder``/``name`` (host_vars/pacs,
    group_vars/all) in, for Ansible to use it: what Ansible reads for that name when it is a file
    (``_vars_source``: .yml, .yaml, .json or no suffix); in a folder, the last file that sets the key
    (a later file's value replaces an earlier one's), else the folder's last file, else a new
    overlay.yml in it; ``folder``/``default`` (a path under ``folder``) when Ansible reads nothing
    for the name."""
    source = _vars_source(lab_path / folder / name)
    if source is None:
        return lab_path / folder / default
    if not source.is_dir():
        return source
    files = _vars_folder(source)
    setting = [f for f in files if key in (read_vars_file(f) or {})]
    return (setting or files or [source / "overlay.yml"])[-1]


def _walk_groups(
    reader: _Reader,
    path: Path,
    name: str,
    group: Any,
    keypath: str,
    hosts: dict[str, dict[str, Any]],
    origins: dict[str, tuple[Path, str]],
    membership: dict[str, list[str]],
) -> None:
    if group is None:
        return
    if not isinstance(group, Mapping):
        reader.fail(path, keypath, "a group must be a mapping with hosts, children or vars")
        return
    for host, hvars in (group.get("hosts") or {}).items():
        hkey = f"{keypath}.hosts.{host}"
        if hvars is not None and not isinstance(hvars, Mapping):
            reader.fail(path, hkey, "host variables must be a mapping")
            continue
        hosts.setdefault(host, {}).update(hvars or {})
        origins.setdefault(host, (path, hkey))
        if name != "all":
            membership.setdefault(host, []).append(name)
    for child, body in (group.get("children") or {}).items():
        _walk_groups(reader, path, child, body, f"{keypath}.children.{child}", hosts, origins, membership)


def load_lab(path: str | Path) -> Lab:
    """Read and validate the lab folder; raise LabDefinitionError listing every problem."""
    root = Path(path).resolve()
    reader = _Reader(root)
    if not root.is_dir():
        raise LabDefinitionError([Problem(str(path), "(folder)", "no such lab folder")])
    inventory = next((root / n for n in ("hosts.yml", "hosts.yaml") if (root / n).is_file()), None)
    if inventory is None:
        raise LabDefinitionError([Problem(reader.rel(root), "hosts.yml", "missing: a lab needs hosts.yml")])

    hosts_raw: dict[str, dict[str, Any]] = {}
    origins: dict[str, tuple[Path, str]] = {}
    membership: dict[str, list[str]] = {}
    top = reader.load_yaml(inventory)
    if reader.problems:
        raise LabDefinitionError(reader.problems)
    if not isinstance(top, Mapping) or "all" not in top:
        reader.fail(inventory, "all", "missing: the inventory must start with the group 'all'")
    else:
        _walk_groups(reader, inventory, "all", top["all"], "all", hosts_raw, origins, membership)

    for name in sorted(ENGINE_GROUPS.keys() & _group_names(top.get("all") if isinstance(top, Mapping) else None)):
        reader.fail(inventory, name, f"{name} is pacslab's own group ({ENGINE_GROUPS[name]}): call the lab's group otherwise")
    # Lab-wide keys from group_vars/all, with the file each came from.
    lab_vars: dict[str, Any] = {}
    var_origin: dict[str, Path] = {}
    for vf in _vars_files(root / "group_vars" / "all"):
        data = reader.load_yaml(vf)
        if not isinstance(data, Mapping):
            reader.fail(vf, "(document)", "must be a mapping of variables")
            continue
        for key, value in data.items():
            lab_vars[key] = value
            var_origin[key] = vf
    # Every other vars file, as Ansible finds it: it must be a mapping, be read, and name a host or group.
    entities = {"host_vars": set(hosts_raw), "group_vars": _group_names(top.get("all") if isinstance(top, Mapping) else None)}
    for folder, known in entities.items():
        for name in _vars_names(root / folder, known):
            source = _vars_source(root / folder / name)
            for vf in _vars_files(root / folder / name) if (folder, name) != ("group_vars", "all") else []:  # read above
                if not isinstance(reader.load_yaml(vf), Mapping):
                    reader.fail(vf, "(document)", "must be a mapping of variables")
            for suffix in VARS_SUFFIXES:  # Ansible reads the first that exists, and only that one
                unread = root / folder / (name + suffix)
                if unread.exists() and source is not None and unread != source:
                    reader.fail(unread, "(file)", f"Ansible does not read it: for {name} it reads {source.relative_to(root)} alone; "
                                                  "move its variables there")
            if folder == "group_vars" and name in ENGINE_GROUPS:
                reader.fail(source or root / folder / name, "(file)",
                            f"{name} is pacslab's own group ({ENGINE_GROUPS[name]}): a lab does not set its variables; "
                            f"set them for a group of {inventory.name}")
            elif name not in known:
                what = "host" if folder == "host_vars" else "group"
                reader.fail(source or root / folder / name, "(file)",
                            f"no {what} of {inventory.name} is called {name}: Ansible never reads it")
    if reader.problems:  # unreadable files: later checks would only echo the damage
        raise LabDefinitionError(reader.problems)

    # What Ansible itself makes of the folder (every group's group_vars, host_vars, group vars in
    # hosts.yml): the values every check below looks at, so no switch hides where pacslab does not read.
    try:
        resolved = ansible_host_vars(inventory)
    except Exception as exc:  # AnsibleError and what its plugins raise: refuse, never crash
        raise LabDefinitionError([Problem(reader.rel(inventory), "(inventory)", f"Ansible cannot read the inventory: {exc}")]) from exc
    where = _Origins(reader, root, inventory, membership, origins)
    retired: set[tuple[Path, str]] = set()  # one refusal per place, not one per host it reaches
    shadowed: set[tuple[Path, str]] = set()
    playbook_vars = _playbook_vars()
    lab_all_files = set(_vars_files(root / "group_vars" / "all"))
    for hname in hosts_raw:
        hv = resolved.get(hname, {})
        for key in sorted(RETIRED_VARS.keys() & hv.keys()):
            if (place := where.of(hname, key)) not in retired:
                retired.add(place)
                reader.fail(*place, RETIRED_VARS[key])
        for key in sorted(playbook_vars.keys() & hv.keys()):
            file, keypath = place = where.of(hname, key)
            outranked = file in lab_all_files or where.is_inventory_group_vars(hname, place)
            if outranked and place not in shadowed:
                shadowed.add(place)
                reader.fail(file, keypath, f"changes nothing: the playbooks' {playbook_vars[key]} sets {key} for every lab, and "
                                           "Ansible ranks it above a lab's group_vars/all and the group vars of hosts.yml; "
                                           "set it in a group's group_vars file or in host_vars")
        for key in LAB_WIDE_KEYS:
            if key in hv and hv[key] != lab_vars.get(key):
                file, keypath = where.of(hname, key)
                reader.fail(file, keypath, f"{key} belongs to the whole lab: set it in group_vars/all only (here it changes it for {hname})")
        hosts_raw[hname] = {k: v for k, v in hv.items() if k not in MAGIC_VARS and k not in LAB_WIDE_KEYS}

    if reader.problems:
        raise LabDefinitionError(reader.problems)
    lab = _build(reader, root, inventory, lab_vars, var_origin, hosts_raw, where, membership)
    if lab is not None:
        people, services, people_problems = people_check(lab_vars)
        for key, keypath, reason in people_problems:
            reader.fail(var_origin.get(key, root / "group_vars" / "all"), keypath, reason)
        lab = Lab(**{**lab.__dict__, "host_vars": hosts_raw, "people": people, "service_accounts": services})
        _check_control_switches(reader, lab, where)
        _check_peers(reader, lab, where)
        _check_dicom_threads(reader, lab, where)
        _check_silence(reader, lab, where)
    if reader.problems or lab is None:
        raise LabDefinitionError(reader.problems)
    return lab


def _playbook_vars() -> dict[str, str]:
    """Each variable the playbooks' group_vars/all sets, with the file (relative to the repository) that sets it."""
    found: dict[str, str] = {}
    for vf in _vars_files(PLAYBOOK_GROUP_VARS_ALL):
        found |= dict.fromkeys(safe_load(vf.read_text()) or {}, str(vf.relative_to(REPO_ROOT)))
    return found


def _plain(value: Any) -> Any:
    """Ansible's tagged values (ansible-core 2.19 data tagging) as plain Python values."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


def ansible_host_vars(inventory: Path) -> dict[str, dict[str, Any]]:
    """Each host's variables as ansible-core resolves them from the inventory file and the
    group_vars/host_vars folders beside it (InventoryManager + VariableManager), untemplated."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    inventory_manager = InventoryManager(loader=loader, sources=[str(inventory)])
    variables = VariableManager(loader=loader, inventory=inventory_manager)
    return {h.name: _plain(variables.get_vars(host=h, include_hostvars=False)) for h in inventory_manager.get_hosts()}


class _Origins:
    """Where a host's variable is set, most specific first, in Ansible's precedence: host_vars,
    the host's entry in hosts.yml, group_vars of its groups, group_vars/all, group vars in hosts.yml."""

    def __init__(self, reader: _Reader, root: Path, inventory: Path, membership: dict[str, list[str]], origins: dict[str, tuple[Path, str]]):
        self.reader, self.root, self.inventory = reader, root, inventory
        self.membership, self.host_entries = membership, dict(origins)
        self._cache: dict[Path, Any] = {}
        # The group tree of hosts.yml: each group's parents, and its depth as Ansible counts it (a
        # child one deeper than its deepest parent; 'all' is 0).
        self.parents: dict[str, set[str]] = {}
        self.depth: dict[str, int] = {}

        def walk(node: Any, name: str, depth: int) -> None:
            for child, body in ((node.get("children") or {}).items() if isinstance(node, Mapping) else ()):
                self.parents.setdefault(child, set()).add(name)
                self.depth[child] = max(self.depth.get(child, 0), depth + 1)
                walk(body, child, depth + 1)

        top = self._data(inventory)
        walk(top.get("all") if isinstance(top, Mapping) else None, "all", 0)

    def groups_of(self, host: str) -> list[str]:
        """The host's groups, their parents too, 'all' left out, in the order Ansible combines their
        variables (inventory.helpers.sort_groups: depth, then name): a later group's value wins."""
        found: set[str] = set()
        todo = list(self.membership.get(host, []))
        while todo:
            group = todo.pop()
            if group != "all" and group not in found:
                found.add(group)
                todo += self.parents.get(group, ())
        return sorted(found, key=lambda g: (self.depth.get(g, 1), g))

    def is_inventory_group_vars(self, host: str, place: tuple[Path, str]) -> bool:
        """Whether ``place`` (from ``of``) is a group's vars: in hosts.yml, not the host's own entry
        (a host may be called "vars")."""
        file, keypath = place
        entry = self.host_entries.get(host, (self.inventory, f"all.hosts.{host}"))[1]
        return file == self.inventory and not keypath.startswith(f"{entry}.") and ".vars." in f".{keypath}"

    def _data(self, path: Path) -> Any:
        if path not in self._cache:
            self._cache[path] = self.reader.load_yaml(path) if path.is_file() else {}
        return self._cache[path]

    def _group_vars_in_inventory(self, group: str) -> Mapping[str, Any]:
        def find(node: Any, name: str) -> Any:
            if not isinstance(node, Mapping):
                return None
            if name == "all" and node is self._data(self.inventory).get("all"):
                return node
            for child, body in (node.get("children") or {}).items():
                if child == name:
                    return body
                found = find(body, name)
                if found is not None:
                    return found
            return None

        top = self._data(self.inventory)
        body = find(top.get("all") if isinstance(top, Mapping) else None, group)
        return (body.get("vars") or {}) if isinstance(body, Mapping) else {}

    def of(self, host: str | None, key: str) -> tuple[Path, str]:
        """(file, key path) of the most specific place that sets ``key`` for ``host``."""
        if host is not None:
            for vf in reversed(_vars_files(self.root / "host_vars" / host)):  # in a folder, the last file that sets it wins
                if isinstance(self._data(vf), Mapping) and key in self._data(vf):
                    return vf, f"{host}.{key}"
            file, keypath = self.host_entries.get(host, (self.inventory, f"all.hosts.{host}"))
            if file == self.inventory:
                entry = self._data(self.inventory)
                for part in keypath.split("."):
                    entry = (entry.get(part) if isinstance(entry, Mapping) else None) or {}
                if isinstance(entry, Mapping) and key in entry:
                    return self.inventory, f"{keypath}.{key}"
        # Every group_vars file, of any group, ranks above every group's vars in hosts.yml (Ansible's
        # precedence 4 and 6 against 3); among groups, the deepest (then the last by name) wins.
        groups = list(reversed(self.groups_of(host))) if host else []
        for group in [*groups, "all"]:
            for vf in reversed(_vars_files(self.root / "group_vars" / group)):
                if isinstance(self._data(vf), Mapping) and key in self._data(vf):
                    return vf, key
        for group in [*groups, "all"]:
            if key in self._group_vars_in_inventory(group):
                return self.inventory, f"{group}.vars.{key}"
        return self.inventory, f"{host}.{key}" if host else key


def _check_control_switches(reader: _Reader, lab: Lab, where: _Origins) -> None:
    """A switch set to false, wherever Ansible finds it (any group's vars, a host), needs a waiver
    for each control it turns off; a switch is a boolean, never a string that templates as one."""
    waived = {w.control for w in lab.waivers}
    found: dict[tuple[Path, str, str], list[str]] = {}
    for hname, hv in lab.host_vars.items():
        for switch in CONTROL_SWITCHES:
            if switch not in hv:
                continue
            file, key = where.of(hname, switch)
            if not isinstance(hv[switch], bool):
                reader.fail(file, key, f"{hv[switch]!r}: must be true or false")
            elif hv[switch] is False:
                found.setdefault((file, key, switch), []).append(hname)
    for (file, key, switch), hosts in found.items():
        controls = switched_off(switch)
        missing = [c for c in controls if c not in waived]
        if missing:
            reader.fail(file, key, f"false turns off {', '.join(controls)} on {', '.join(hosts)}; lab_waivers does not waive {', '.join(missing)}")


def _check_dicom_threads(reader: _Reader, lab: Lab, where: _Origins) -> None:
    """C-PRT-05 rests on one inequality: the fw lets one source hold DICOM_HELD connections to a DICOM
    port at once (pacslab.firewall), and each Orthanc serves orthanc_dicom_threads associations at
    once; with threads <= DICOM_HELD one flooding device takes every thread. Checked for each Orthanc
    host, on its host variable or else the role's default."""
    from .firewall import DICOM_HELD
    from .listeners import ROLE_APPLIES, ROLES_DIR, role_var

    for host in lab.deployed_hosts():
        if not ROLE_APPLIES["orthanc"](host):
            continue
        hv = lab.host_vars.get(host.name, {})
        threads = role_var(lab, host.name, "orthanc", "orthanc_dicom_threads")
        if isinstance(threads, int) and not isinstance(threads, bool) and threads > DICOM_HELD:
            continue
        file, key = where.of(host.name, "orthanc_dicom_threads") if "orthanc_dicom_threads" in hv else (
            ROLES_DIR / "orthanc" / "defaults" / "main.yml", "orthanc_dicom_threads")
        reader.fail(file, key, f"{threads!r}: {host.name} must serve more DICOM associations at once than the {DICOM_HELD} the fw lets "
                    "one source hold (C-PRT-05), or one flooding device takes every one")


def _check_silence(reader: _Reader, lab: Lab, where: _Origins) -> None:
    """A log source, or the siem itself, is silent for the siem (log-source-silent, C-PRT-01) once
    no heartbeat of its watch over its programs came for siem_silent_after seconds; the watch writes
    one every pacslab_supervision_heartbeat seconds (roles/log_shipping). Each is a whole number of
    seconds, the heartbeat at least 1, and the silence longer than two heartbeats of any watch it
    judges, its own included (a heartbeat late by one tick must not make a host silent); 0 turns the
    silence off."""
    default = (safe_load((PLAYBOOK_GROUP_VARS_ALL / "monitoring.yml").read_text()) or {})["pacslab_supervision_heartbeat"]

    def whole(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    beats: dict[str, int] = {}
    for name, hv in lab.host_vars.items():
        beat = hv.get("pacslab_supervision_heartbeat", default)
        if not whole(beat) or beat < 1:
            file, key = where.of(name, "pacslab_supervision_heartbeat")
            reader.fail(file, key, f"{beat!r}: a whole number of seconds, at least 1")
            continue
        beats[name] = beat
    sources = [h for h in (lab.host_vars.get(next(iter(lab.host_vars), ""), {}).get("siem_sources") or []) if h in beats]
    for host in lab.deployed_hosts():
        if "siem_servers" not in host.groups or host.name not in beats:
            continue
        hv = lab.host_vars.get(host.name, {})
        after = hv.get("siem_silent_after", 3 * beats[host.name])
        longest = max(beats[s] for s in [*sources, host.name])
        if not whole(after) or (after != 0 and after <= 2 * longest):
            file, key = where.of(host.name, "siem_silent_after") if "siem_silent_after" in hv else where.of(
                host.name, "pacslab_supervision_heartbeat")
            reader.fail(file, key, f"{after!r}: {host.name} must wait longer than two heartbeats of its slowest watch "
                        f"({2 * longest} s) before it calls a host silent, or 0 to call none")


DIMSE_ALLOW = ("echo", "store", "find", "worklist", "move", "get")


def flow_between(lab: Lab, src: str, dst: str, proto: str, port: int) -> Flow | None:
    """The flow (routed or inside a zone) that lets host src reach host dst on port/proto."""
    s, d = lab.hosts[src], lab.hosts[dst]
    for flow in lab.all_flows:
        if flow.proto not in (proto, "any") or (flow.ports is not None and port not in flow.ports):
            continue
        dest_ok = flow.dest == Endpoint("host", dst) or flow.dest == Endpoint("zone", str(d.zone))
        if dest_ok and any(e == Endpoint("host", src) or e == Endpoint("zone", str(s.zone)) for e in flow.sources):
            return flow
    return None


def _check_peers(reader: _Reader, lab: Lab, where: _Origins) -> None:
    """What restates a flow (DICOM peers, gateway tunnels, HL7 senders, log sources) must agree with lab_flows,
    both ways: every peer needs a flow to the port the peer really listens on (lab_services), and
    every flow to a DICOM or HL7 service names only peers its destination accepts."""
    flows_file, _ = where.of(None, "lab_flows")

    def fail(host: str, var: str, sub: str, reason: str) -> None:
        file, key = where.of(host, var)
        reader.fail(file, key + sub, reason)

    def known(host: str, var: str, sub: str, name: Any, router: bool = False) -> bool:
        """``name`` is a lab host (the router only where ``router``: a log source, not a DICOM peer)."""
        if str(name) not in lab.hosts or (lab.hosts[str(name)].is_router and not router):
            fail(host, var, sub, f"unknown host {name!r}")
            return False
        return True

    def port_of(host: str, service: str, var: str, sub: str, owner: str) -> int | None:
        try:
            return lab.hosts[host].service(service).port
        except KeyError:
            fail(owner, var, sub, f"{host} has no {service!r} service in lab_services: its port cannot be derived")
            return None

    def need_flow(owner: str, var: str, sub: str, src: str, dst: str, port: int) -> None:
        if flow_between(lab, src, dst, "tcp", port) is None:
            fail(owner, var, sub, f"no flow in lab_flows lets {src} reach {dst}:{port}/tcp")

    def reverse(server: str, port: int, accepted: set[str], what: str) -> None:
        for flow in lab.all_flows:
            if flow.dest != Endpoint("host", server) or flow.proto != "tcp" or flow.ports is None or port not in flow.ports:
                continue
            for src in flow.sources:
                members = [src.name] if src.kind == "host" else [h.name for h in lab.hosts.values() if h.zone == src.name]
                if not set(members) & accepted:
                    reader.fail(flows_file, f"lab_flows ({flow.id}).from", f"{src} may reach {server}:{port} but is not one of its {what}")

    for hname, hv in lab.host_vars.items():
        host = lab.hosts.get(hname)
        if host is None or not host.deployed:
            continue
        peers = hv.get("orthanc_peers") or []
        if peers or host.image == "orthanc":
            port = port_of(hname, "dicom", "lab_services", "", hname)
            carriers: set[str] = set()
            for i, peer in enumerate(peers if isinstance(peers, list) else []):
                sub = f"[{i}]"
                if not isinstance(peer, Mapping) or "host" not in peer:
                    fail(hname, "orthanc_peers", sub, "each peer is a mapping with host and allow")
                    continue
                for extra in sorted(set(peer) - {"host", "via", "allow"}):
                    fail(hname, "orthanc_peers", f"{sub}.{extra}", "unknown key (known: allow, host, via); ports come from lab_services")
                allow = peer.get("allow")
                if not isinstance(allow, list) or [a for a in allow if a not in DIMSE_ALLOW]:
                    fail(hname, "orthanc_peers", f"{sub}.allow", f"a list of {', '.join(DIMSE_ALLOW)} ([]: a destination that requests nothing)")
                    continue
                if not known(hname, "orthanc_peers", f"{sub}.host", peer["host"]):
                    continue
                carrier = str(peer.get("via", peer["host"]))
                if not known(hname, "orthanc_peers", f"{sub}.via", carrier):
                    continue
                if not allow:  # a destination only (forward target): it needs the flow the other way
                    continue
                carriers.add(carrier)
                if port is not None:
                    need_flow(hname, "orthanc_peers", sub, carrier, hname, port)
            target = hv.get("orthanc_forward_to")
            if target:
                listed = {str(p.get("host")) for p in peers if isinstance(p, Mapping)}
                if target not in listed:
                    fail(hname, "orthanc_forward_to", "", f"{target!r} is not one of the host's orthanc_peers")
                elif (tport := port_of(str(target), "dicom", "orthanc_forward_to", "", hname)) is not None:
                    need_flow(hname, "orthanc_forward_to", "", hname, str(target), tport)
            if port is not None:
                reverse(hname, port, carriers, "orthanc_peers")
        if hv.get("dicom_node_mode") == "workstation":  # its storage SCP listens on lab_services.dicom
            port_of(hname, "dicom", "lab_services", "", hname)
        for i, peer in enumerate(hv.get("dicom_node_peers") or []):
            sub = f"[{i}]"
            if not isinstance(peer, Mapping) or "host" not in peer or "name" not in peer:
                fail(hname, "dicom_node_peers", sub, "each peer is a mapping with name and host")
                continue
            for extra in sorted(set(peer) - {"name", "host", "via", "service"}):
                fail(hname, "dicom_node_peers", f"{sub}.{extra}", "unknown key (known: host, name, service, via); ports come from lab_services")
            if not known(hname, "dicom_node_peers", f"{sub}.host", peer["host"]):
                continue
            service = str(peer.get("service", "dicom"))
            via = peer.get("via")
            if via is None:
                if (pport := port_of(str(peer["host"]), service, "dicom_node_peers", sub, hname)) is not None:
                    need_flow(hname, "dicom_node_peers", sub, hname, str(peer["host"]), pport)
                continue
            if not known(hname, "dicom_node_peers", f"{sub}.via", via):
                continue
            tunnels = [t for t in lab.host_vars.get(str(via), {}).get("dicom_node_tunnels") or [] if isinstance(t, Mapping)]
            tunnel = next((t for t in tunnels if t.get("host") == peer["host"]), None)
            if tunnel is None:
                fail(hname, "dicom_node_peers", f"{sub}.via", f"{via} has no dicom_node_tunnels entry for {peer['host']}")
            elif isinstance(tunnel.get("listen"), int):
                need_flow(hname, "dicom_node_peers", sub, hname, str(via), tunnel["listen"])
        for i, tunnel in enumerate(hv.get("dicom_node_tunnels") or []):
            sub = f"[{i}]"
            if not isinstance(tunnel, Mapping) or "host" not in tunnel or "listen" not in tunnel:
                fail(hname, "dicom_node_tunnels", sub, "each tunnel is a mapping with listen and host")
                continue
            for extra in sorted(set(tunnel) - {"listen", "host"}):
                fail(hname, "dicom_node_tunnels", f"{sub}.{extra}", "unknown key (known: host, listen); the far port comes from lab_services")
            if tunnel["listen"] not in {s.port for s in host.services if s.proto == "tcp"}:
                fail(hname, "dicom_node_tunnels", f"{sub}.listen", f"{tunnel['listen']!r} is not a TCP port of {hname}'s lab_services")
            if known(hname, "dicom_node_tunnels", f"{sub}.host", tunnel["host"]):
                if (tport := port_of(str(tunnel["host"]), "dicom", "dicom_node_tunnels", sub, hname)) is not None:
                    need_flow(hname, "dicom_node_tunnels", sub, hname, str(tunnel["host"]), tport)
        if "ris_hl7_senders" in hv or "ris_servers" in host.groups:
            hl7 = port_of(hname, "hl7", "lab_services", "", hname)
            senders = [str(x) for x in hv.get("ris_hl7_senders") or []]
            for i, sender in enumerate(senders):
                if known(hname, "ris_hl7_senders", f"[{i}]", sender) and hl7 is not None:
                    need_flow(hname, "ris_hl7_senders", f"[{i}]", sender, hname, hl7)
            if hl7 is not None:
                reverse(hname, hl7, set(senders), "ris_hl7_senders")

    # The log sources (group_vars siem_sources, roles/log_shipping): known hosts, each with a flow to
    # every deployed siem's syslog-tls port (the fw would drop their records otherwise); the router
    # needs none (it has an address in the siem's own zone).
    anyone = next(iter(lab.host_vars), None)
    sources = lab.host_vars.get(anyone, {}).get("siem_sources") if anyone else None
    if sources is not None and not isinstance(sources, list):
        fail(str(anyone), "siem_sources", "", "a list of host names")
        sources = []
    siems = [h.name for h in lab.deployed_hosts() if "siem_servers" in h.groups]
    for i, source in enumerate(sources or []):
        if not known(str(anyone), "siem_sources", f"[{i}]", source, router=True) or not lab.hosts[str(source)].deployed:
            continue
        image = lab.hosts[str(source)].image
        dockerfile = IMAGES_DIR / str(image) / "Dockerfile"
        if dockerfile.is_file() and "rsyslog-gnutls" not in dockerfile.read_text():
            fail(str(anyone), "siem_sources", f"[{i}]", f"{source}'s image {image} has no rsyslog with its TLS driver (rsyslog-gnutls) to ship with")
        for siem in siems if not lab.hosts[str(source)].is_router else ():
            if (port := port_of(siem, "syslog-tls", "siem_sources", f"[{i}]", str(anyone))) is not None:
                need_flow(str(anyone), "siem_sources", f"[{i}]", str(source), siem, port)


# --------------------------------------------------------------------------------------------
# Building typed objects, with validation


def _ip(reader: _Reader, file: Path, key: str, value: Any) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(str(value))
    except ValueError:
        reader.fail(file, key, f"{value!r} is not an IPv4 address")
        return None


def _build(
    reader: _Reader,
    root: Path,
    inventory: Path,
    lab_vars: dict[str, Any],
    var_origin: dict[str, Path],
    hosts_raw: dict[str, dict[str, Any]],
    where: _Origins,
    membership: dict[str, list[str]],
) -> Lab | None:
    default_vars = root / "group_vars" / "all"

    def lab_key(key: str) -> tuple[Any, Path]:
        where = var_origin.get(key, default_vars)
        if key not in lab_vars:
            reader.fail(where, key, "missing required key")
        return lab_vars.get(key), where

    name, name_file = lab_key("lab_name")
    if name is not None and not (isinstance(name, str) and NAME_RE.match(name)):
        reader.fail(name_file, "lab_name", f"{name!r}: use lower-case letters, digits and '-'")
    prefix, prefix_file = lab_key("lab_prefix")
    if prefix is not None and not (isinstance(prefix, str) and PREFIX_RE.match(prefix)):
        reader.fail(prefix_file, "lab_prefix", f"{prefix!r}: 1-12 lower-case letters or digits, starting with a letter")
    bridge_prefix, bp_file = lab_key("lab_bridge_prefix")
    if bridge_prefix is not None and not (isinstance(bridge_prefix, str) and re.match(r"^[a-z][a-z0-9-]{0,9}$", bridge_prefix)):
        reader.fail(bp_file, "lab_bridge_prefix", f"{bridge_prefix!r}: 1-10 lower-case letters, digits or '-'")
    space_raw, space_file = lab_key("lab_address_space")
    space: ipaddress.IPv4Network | None = None
    if space_raw is not None:
        try:
            space = ipaddress.IPv4Network(str(space_raw))
        except ValueError as exc:
            reader.fail(space_file, "lab_address_space", f"{space_raw!r} is not an IPv4 network: {exc}")

    zones = _build_zones(reader, lab_vars, var_origin, default_vars, space, bridge_prefix)
    hosts = _build_hosts(reader, inventory, hosts_raw, where, membership, zones)
    _check_addresses(reader, var_origin.get("lab_zones", default_vars), zones, hosts, where)
    flows = _build_flows(reader, lab_vars, var_origin, default_vars, zones, hosts)
    waivers = _build_waivers(reader, lab_vars, var_origin, default_vars)

    if reader.problems:
        return None
    assert space is not None
    return Lab(
        path=root,
        name=str(name),
        prefix=str(prefix),
        bridge_prefix=str(bridge_prefix),
        address_space=space,
        zones=zones,
        hosts=hosts,
        flows=tuple(f for f in flows if not f.intra_zone),
        waivers=tuple(waivers),
        zone_flows=tuple(f for f in flows if f.intra_zone),
    )


def _build_zones(
    reader: _Reader,
    lab_vars: dict[str, Any],
    var_origin: dict[str, Path],
    default_vars: Path,
    space: ipaddress.IPv4Network | None,
    bridge_prefix: Any,
) -> dict[str, Zone]:
    zfile = var_origin.get("lab_zones", default_vars)
    raw = lab_vars.get("lab_zones")
    zones: dict[str, Zone] = {}
    if raw is None:
        reader.fail(zfile, "lab_zones", "missing required key")
        return zones
    if not isinstance(raw, Mapping) or not raw:
        reader.fail(zfile, "lab_zones", "must be a non-empty mapping of zone name to zone")
        return zones
    for zname, body in raw.items():
        key = f"lab_zones.{zname}"
        if not isinstance(zname, str) or not NAME_RE.match(zname):
            reader.fail(zfile, key, "zone names use lower-case letters, digits and '-'")
            continue
        if not isinstance(body, Mapping):
            reader.fail(zfile, key, "must be a mapping with subnet, router, probe, purpose")
            continue
        for unknown in sorted(set(body) - ZONE_KEYS):
            reader.fail(zfile, f"{key}.{unknown}", f"unknown key (known: {', '.join(sorted(ZONE_KEYS))})")
        missing = [k for k in ("subnet", "router", "probe", "purpose") if k not in body]
        for k in missing:
            reader.fail(zfile, f"{key}.{k}", "missing required key")
        if missing:
            continue
        try:
            subnet = ipaddress.IPv4Network(str(body["subnet"]))
        except ValueError as exc:
            reader.fail(zfile, f"{key}.subnet", f"{body['subnet']!r} is not an IPv4 network: {exc}")
            continue
        if space is not None and not subnet.subnet_of(space):
            reader.fail(zfile, f"{key}.subnet", f"{subnet} is outside lab_address_space {space}")
        bridge = f"{bridge_prefix}{zname}"
        if len(bridge) > BRIDGE_NAME_MAX:
            reader.fail(zfile, key, f"bridge name {bridge!r} is {len(bridge)} characters; Linux allows at most {BRIDGE_NAME_MAX}")
        router = _ip(reader, zfile, f"{key}.router", body["router"])
        probe = _ip(reader, zfile, f"{key}.probe", body["probe"])
        if router is None or probe is None:
            continue
        zones[zname] = Zone(
            name=zname,
            subnet=subnet,
            bridge=bridge,
            router=router,
            probe=probe,
            purpose=str(body["purpose"]),
            exposed=bool(body.get("exposed", False)),
        )
    names = list(zones)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if zones[a].subnet.overlaps(zones[b].subnet):
                reader.fail(zfile, f"lab_zones.{b}.subnet", f"{zones[b].subnet} overlaps zone {a} ({zones[a].subnet})")
    return zones


def _build_hosts(
    reader: _Reader,
    inventory: Path,
    hosts_raw: dict[str, dict[str, Any]],
    where: _Origins,
    membership: dict[str, list[str]],
    zones: dict[str, Zone],
) -> dict[str, Host]:
    hosts: dict[str, Host] = {}
    ae_seen: dict[str, str] = {}
    routers: list[str] = []
    for hname, hv in hosts_raw.items():
        file, key = where.host_entries.get(hname, (inventory, f"all.hosts.{hname}"))

        def fail(sub: str, reason: str, hname: str = hname, file: Path = file, key: str = key) -> None:
            if not sub:
                reader.fail(file, key, reason)
                return
            var = re.split(r"[.\[]", sub, maxsplit=1)[0]
            at, keypath = where.of(hname, var)
            reader.fail(at, keypath + sub[len(var):], reason)

        if not NAME_RE.match(hname) or len(hname) > 40:
            fail("", "host names use lower-case letters, digits and '-' (at most 40)")
            continue
        for bad in sorted(str(k) for k in hv if not VAR_RE.match(str(k))):
            fail(bad, "not a variable name (letters, digits, '_'): a quoting slip in the YAML?")
        for unknown in sorted(k for k in hv if k.startswith("lab_") and k not in HOST_KEYS):
            fail(unknown, f"unknown lab key (known: {', '.join(sorted(HOST_KEYS))})")
        kind = hv.get("lab_kind", "host")
        if kind not in ("host", "router"):
            fail("lab_kind", f"{kind!r}: must be host or router")
            continue
        state = hv.get("lab_state", "deployed")
        if state not in STATES:
            fail("lab_state", f"{state!r}: must be one of {', '.join(STATES)}")
            continue
        required = ["lab_owner", "lab_criticality"]
        if kind == "host":
            required += ["lab_zone", "lab_address"]
        if state == "deployed":
            required.append("lab_image")
        missing = [k for k in required if hv.get(k) in (None, "")]
        for k in missing:
            fail(k, "missing required key")
        if missing:
            continue
        if hv["lab_criticality"] not in CRITICALITIES:
            fail("lab_criticality", f"{hv['lab_criticality']!r}: must be one of {', '.join(CRITICALITIES)}")
        zone = address = None
        if kind == "router":
            routers.append(hname)
            for k in ("lab_zone", "lab_address"):
                if k in hv:
                    fail(k, "the router joins every zone at each zone's router address; do not set it")
        else:
            zone = str(hv["lab_zone"])
            if zone not in zones:
                fail("lab_zone", f"unknown zone {zone!r} (zones: {', '.join(zones) or 'none'})")
            address = _ip(reader, *where.of(hname, "lab_address"), hv["lab_address"])
        image = hv.get("lab_image")
        if image is not None and not (IMAGES_DIR / str(image) / "Dockerfile").is_file():
            fail("lab_image", f"no images/{image}/Dockerfile in the repository")
        ae = hv.get("lab_ae_title")
        if ae is not None:
            ae = str(ae)
            if len(ae) > AE_TITLE_MAX or not AE_RE.match(ae) or ae != ae.strip():
                fail("lab_ae_title", f"{ae!r}: an AE title is 1-16 printable characters, no backslash, no padding")
            elif ae in ae_seen:
                fail("lab_ae_title", f"{ae!r} is already the AE title of {ae_seen[ae]}")
            else:
                ae_seen[ae] = hname
        volumes: list[Volume] = []
        for i, vol in enumerate(hv.get("lab_volumes") or []):
            if not isinstance(vol, Mapping) or not NAME_RE.match(str(vol.get("name", ""))) or not str(vol.get("path", "")).startswith("/"):
                fail(f"lab_volumes[{i}]", "each volume needs a name (lower-case) and an absolute path")
                continue
            volumes.append(Volume(str(vol["name"]), str(vol["path"])))
        publish: list[int] = []
        for i, port in enumerate(hv.get("lab_publish") or []):
            if not isinstance(port, int) or not 0 < port < 65536:
                fail(f"lab_publish[{i}]", f"{port!r} is not a TCP port")
                continue
            publish.append(port)
        if publish and (zone is None or zone not in zones or not zones[zone].exposed):
            fail("lab_publish", "ports may be published only by hosts in a zone marked exposed (the DMZ)")
        services: list[Service] = []
        raw_services = hv.get("lab_services") or {}
        if not isinstance(raw_services, Mapping):
            fail("lab_services", "a mapping of service name to port (2762) or port/udp (\"123/udp\")")
            raw_services = {}
        for sname, value in raw_services.items():
            m = re.fullmatch(r"([0-9]{1,5})/(tcp|udp)", value) if isinstance(value, str) else None
            port, proto = (value, "tcp") if isinstance(value, int) and not isinstance(value, bool) else ((int(m[1]), m[2]) if m else (0, ""))
            if not NAME_RE.match(str(sname)) or not 0 < port < 65536:
                fail(f"lab_services.{sname}", f"{value!r}: a service is name: port (1-65535) or name: \"port/udp\"")
                continue
            if any(x.proto == proto and x.port == port for x in services):
                fail(f"lab_services.{sname}", f"{port}/{proto} is already another service of {hname}")
                continue
            services.append(Service(str(sname), proto, port))
        hosts[hname] = Host(
            name=hname,
            groups=tuple(membership.get(hname, [])),
            zone=zone,
            address=address,
            image=str(image) if image is not None else None,
            state=state,
            owner=str(hv["lab_owner"]),
            criticality=str(hv["lab_criticality"]),
            purpose=str(hv.get("lab_purpose", "")),
            kind=kind,
            ae_title=ae,
            volumes=tuple(volumes),
            publish=tuple(publish),
            services=tuple(services),
        )
    if len(routers) != 1:
        reader.fail(inventory, "lab_kind", f"exactly one host must have lab_kind: router (found {len(routers)}: {', '.join(routers) or 'none'})")
    return hosts


def _check_addresses(
    reader: _Reader,
    zones_file: Path,
    zones: dict[str, Zone],
    hosts: dict[str, Host],
    where: _Origins,
) -> None:
    """Every address inside its zone, not reserved, and used once."""
    seen: dict[ipaddress.IPv4Address, str] = {}
    zfile_key: list[tuple[Path, str, ipaddress.IPv4Address, str, str]] = []
    for z in zones.values():
        zfile_key.append((zones_file, f"lab_zones.{z.name}.router", z.router, z.name, f"router of zone {z.name}"))
        zfile_key.append((zones_file, f"lab_zones.{z.name}.probe", z.probe, z.name, f"probe address of zone {z.name}"))
    for h in hosts.values():
        if h.address is not None and h.zone is not None:
            file, key = where.of(h.name, "lab_address")
            zfile_key.append((file, key, h.address, h.zone, f"host {h.name}"))
    for file, key, addr, zname, owner in zfile_key:
        zone = zones.get(zname)
        if zone is None:
            continue
        if addr not in zone.subnet:
            reader.fail(file, key, f"{addr} is outside zone {zname} ({zone.subnet})")
            continue
        if addr in (zone.subnet.network_address, zone.subnet.broadcast_address, zone.gateway):
            reader.fail(file, key, f"{addr} is reserved in {zone.subnet} (network, broadcast or the Docker bridge)")
            continue
        if addr in seen:
            reader.fail(file, key, f"duplicate address {addr}: already used by {seen[addr]}")
            continue
        seen[addr] = owner


def _build_flows(
    reader: _Reader,
    lab_vars: dict[str, Any],
    var_origin: dict[str, Path],
    default_vars: Path,
    zones: dict[str, Zone],
    hosts: dict[str, Host],
) -> list[Flow]:
    ffile = var_origin.get("lab_flows", default_vars)
    raw = lab_vars.get("lab_flows")
    flows: list[Flow] = []
    if raw is None:
        reader.fail(ffile, "lab_flows", "missing required key")
        return flows
    if not isinstance(raw, list):
        reader.fail(ffile, "lab_flows", "must be a list of flows")
        return flows
    ids: set[str] = set()

    def endpoint(value: Any, key: str, source: bool = False) -> Endpoint | None:
        """A flow's end; the router only as a source (its own connection, out of one of its addresses)."""
        text = str(value)
        if text.startswith("zone:"):
            zname = text[5:]
            if zname not in zones:
                reader.fail(ffile, key, f"unknown zone {zname!r}")
                return None
            return Endpoint("zone", zname)
        if text not in hosts:
            reader.fail(ffile, key, f"unknown host {text!r} (a host of hosts.yml, or zone:<zone>)")
            return None
        if hosts[text].is_router and not source:
            reader.fail(ffile, key, f"{text} is the router; flows pass through it, they do not end there")
            return None
        return Endpoint("host", text)

    def zone_of(ep: Endpoint) -> str | None:
        return ep.name if ep.kind == "zone" else hosts[ep.name].zone

    def is_router(ep: Endpoint) -> bool:
        return ep.kind == "host" and hosts[ep.name].is_router

    for i, body in enumerate(raw):
        key = f"lab_flows[{i}]"
        if not isinstance(body, Mapping):
            reader.fail(ffile, key, "each flow is a mapping")
            continue
        fid = body.get("id")
        if fid is not None:
            key = f"lab_flows[{i}] ({fid})"
        for unknown in sorted(set(body) - FLOW_KEYS):
            reader.fail(ffile, f"{key}.{unknown}", f"unknown key (known: {', '.join(sorted(FLOW_KEYS))})")
        missing = [k for k in ("id", "from", "to", "proto", "ports", "purpose") if k not in body]
        for k in missing:
            reader.fail(ffile, f"{key}.{k}", "missing required key")
        if missing:
            continue
        if not FLOW_ID_RE.match(str(fid)):
            reader.fail(ffile, f"{key}.id", f"{fid!r}: flow ids look like F01 or F05b")
        elif fid in ids:
            reader.fail(ffile, f"{key}.id", f"duplicate flow id {fid}")
        ids.add(str(fid))
        sources_raw = body["from"] if isinstance(body["from"], list) else [body["from"]]
        sources = [endpoint(s, f"{key}.from", source=True) for s in sources_raw]
        dest = endpoint(body["to"], f"{key}.to")
        proto = body["proto"]
        if proto not in PROTOCOLS:
            reader.fail(ffile, f"{key}.proto", f"{proto!r}: must be one of {', '.join(PROTOCOLS)}")
            continue
        ports_raw = body["ports"]
        ports: tuple[int, ...] | None
        if ports_raw == "any":
            if proto != "any":
                reader.fail(ffile, f"{key}.ports", "ports: any needs proto: any")
                continue
            ports = None
        else:
            if proto == "any":
                reader.fail(ffile, f"{key}.ports", "proto: any takes ports: any")
                continue
            if not isinstance(ports_raw, list) or not ports_raw or not all(isinstance(p, int) and 0 < p < 65536 for p in ports_raw):
                reader.fail(ffile, f"{key}.ports", f"{ports_raw!r}: a non-empty list of ports 1-65535, or any")
                continue
            ports = tuple(ports_raw)
        if dest is None or any(s is None for s in sources) or not sources:
            if not sources:
                reader.fail(ffile, f"{key}.from", "needs at least one source")
            continue
        srcs = tuple(s for s in sources if s is not None)
        # The router's own connection leaves from its address in the destination's zone: like a flow
        # inside that zone, it never crosses the forward chain (pacslab.firewall renders no rule for it).
        inside = [s for s in srcs if zone_of(s) == zone_of(dest) or is_router(s)]
        for s in srcs:
            if s == dest:
                reader.fail(ffile, f"{key}.from", f"{s} is also the destination")
            elif s in inside and (s.kind == "zone" or dest.kind == "zone"):
                reader.fail(ffile, f"{key}.from", f"{s} and {dest} are in one zone: a flow inside a zone names its hosts")
        if inside and len(inside) != len(srcs):
            reader.fail(ffile, f"{key}.from", f"mixes sources inside zone {zone_of(dest)} ({', '.join(map(str, inside))}) with others: "
                        "split it (a flow inside a zone never crosses the fw; the hosts' own allow-lists enforce it)")
        service = body.get("service", "deployed")
        if service not in ("deployed", "planned"):
            reader.fail(ffile, f"{key}.service", f"{service!r}: deployed (default) or planned (the destination's service comes later)")
        flows.append(
            Flow(
                id=str(fid),
                sources=srcs,
                dest=dest,
                proto=str(proto),
                ports=ports,
                purpose=str(body["purpose"]),
                csf=tuple(str(c) for c in body.get("csf") or ()),
                planned=service == "planned",
                intra_zone=bool(inside),
            )
        )
    _check_services(reader, ffile, hosts, flows)
    return flows


def _check_services(reader: _Reader, ffile: Path, hosts: dict[str, Host], flows: list[Flow]) -> None:
    """A flow to a deployed host reaches one of its lab_services (or says its service is planned),
    and each service of a deployed host is reached by a flow that names its port."""
    for flow in flows:
        dest = hosts.get(flow.dest.name) if flow.dest.kind == "host" else None
        if dest is None or not dest.deployed or flow.ports is None:
            continue
        offered = {(s.proto, s.port) for s in dest.services}
        missing = [p for p in flow.ports if (flow.proto, p) not in offered]
        if flow.planned and not missing:
            reader.fail(ffile, f"lab_flows ({flow.id}).service", f"planned, but {dest.name} already offers {flow.proto}/{flow.ports}")
        elif missing and not flow.planned:
            reader.fail(ffile, f"lab_flows ({flow.id}).ports", f"{dest.name} has no service on {flow.proto} {missing} in lab_services "
                        "(add it there, or mark the flow service: planned if its service comes later)")
    for host in hosts.values():
        if not host.deployed:
            continue
        for svc in host.services:
            reached = any(
                f.ports is not None and svc.port in f.ports and f.proto == svc.proto
                and (f.dest == Endpoint("host", host.name) or f.dest == Endpoint("zone", str(host.zone)))
                for f in flows
            )
            if not reached:
                reader.fail(ffile, "lab_flows", f"no flow reaches {host.name}'s service {svc.name} ({svc.port}/{svc.proto}): "
                            "a service nobody may use is one to remove")


def _build_waivers(
    reader: _Reader, lab_vars: dict[str, Any], var_origin: dict[str, Path], default_vars: Path
) -> list[Waiver]:
    wfile = var_origin.get("lab_waivers", default_vars)
    waivers: list[Waiver] = []
    for i, body in enumerate(lab_vars.get("lab_waivers") or []):
        key = f"lab_waivers[{i}]"
        if not isinstance(body, Mapping) or not CONTROL_ID_RE.match(str(body.get("control", ""))):
            reader.fail(wfile, f"{key}.control", "each waiver names a control id like C-DAT-01")
            continue
        if not str(body.get("justification", "")).strip():
            reader.fail(wfile, f"{key}.justification", "a waived control needs a written justification")
            continue
        waivers.append(Waiver(str(body["control"]), str(body["justification"]).strip()))
    return waivers
