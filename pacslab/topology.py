"""Load and validate a lab definition (ARCHITECTURE section 1).

A lab is an ordinary Ansible inventory folder: ``hosts.yml`` (hosts, their groups and ``lab_*``
host keys), ``group_vars/all/*.yml`` (zones, flows, waivers) and optional ``host_vars/<host>.yml``.
This module is the only reader of that folder; every command validates first, and a broken
definition is refused with the file, the key and the reason before anything on the host changes.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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
}
ZONE_KEYS = {"subnet", "router", "probe", "purpose", "exposed"}
# Role switches that turn controls off -> (the role, its default listing those controls): false is
# refused unless the lab waives every one. The role's list is the only one; the role asserts it too.
CONTROL_SWITCHES = {"orthanc_controls": ("orthanc", "orthanc_controls_waived")}


def switched_off(switch: str) -> tuple[str, ...]:
    """The controls a role switch turns off when false, as the role's defaults list them."""
    role, key = CONTROL_SWITCHES[switch]
    defaults = yaml.safe_load((REPO_ROOT / "roles" / role / "defaults" / "main.yml").read_text())
    return tuple(defaults[key])
FLOW_KEYS = {"id", "from", "to", "proto", "ports", "purpose", "csf"}
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

    @property
    def deployed(self) -> bool:
        return self.state == "deployed"

    @property
    def is_router(self) -> bool:
        return self.kind == "router"


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
    flows: tuple[Flow, ...]
    waivers: tuple[Waiver, ...] = field(default=())

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
        try:
            return yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark is not None else "(document)"
            self.fail(path, where, f"not valid YAML: {getattr(exc, 'problem', exc)}")
            return {}
        except OSError as exc:
            self.fail(path, "(file)", f"cannot read: {exc.strerror}")
            return {}


def _vars_files(folder: Path) -> Iterator[Path]:
    """group_vars/<name>.yml or group_vars/<name>/*.yml, in Ansible's order."""
    for suffix in (".yml", ".yaml"):
        if folder.with_suffix(suffix).is_file():
            yield folder.with_suffix(suffix)
    if folder.is_dir():
        yield from sorted(p for p in folder.iterdir() if p.suffix in (".yml", ".yaml"))


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
    host_var_files: dict[tuple[str, str], Path] = {}  # (host, variable) -> the host_vars file setting it
    for host in hosts_raw:
        for vf in _vars_files(root / "host_vars" / host):
            data = reader.load_yaml(vf)
            if isinstance(data, Mapping):
                hosts_raw[host].update(data)
                host_var_files.update({(host, str(k)): vf for k in data})
                if any(str(k).startswith("lab_") for k in data):  # role variables alone keep hosts.yml as the origin
                    origins[host] = (vf, "")

    if reader.problems:  # unreadable files: later checks would only echo the damage
        raise LabDefinitionError(reader.problems)
    lab = _build(reader, root, inventory, lab_vars, var_origin, hosts_raw, origins, membership)
    if lab is not None:
        switches: dict[tuple[str | None, str], Path] = {(None, k): var_origin[k] for k in CONTROL_SWITCHES if lab_vars.get(k) is False}
        for hname, hv in hosts_raw.items():
            for k in CONTROL_SWITCHES:
                if hv.get(k) is False:
                    switches[(hname, k)] = host_var_files.get((hname, k), inventory)
        _check_control_switches(reader, lab, switches)
    if reader.problems or lab is None:
        raise LabDefinitionError(reader.problems)
    return lab


def _check_control_switches(reader: _Reader, lab: Lab, switches: dict[tuple[str | None, str], Path]) -> None:
    """A switch set to false, lab-wide or on a host, needs a waiver for each control it turns off."""
    waived = {w.control for w in lab.waivers}
    for (hname, switch), file in switches.items():
        controls = switched_off(switch)
        missing = [c for c in controls if c not in waived]
        if missing:
            reader.fail(file, f"{hname}.{switch}" if hname else switch,
                        f"false turns off {', '.join(controls)}; lab_waivers does not waive {', '.join(missing)}")


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
    origins: dict[str, tuple[Path, str]],
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
    hosts = _build_hosts(reader, inventory, hosts_raw, origins, membership, zones)
    _check_addresses(reader, var_origin.get("lab_zones", default_vars), zones, hosts, origins)
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
        flows=tuple(flows),
        waivers=tuple(waivers),
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
    origins: dict[str, tuple[Path, str]],
    membership: dict[str, list[str]],
    zones: dict[str, Zone],
) -> dict[str, Host]:
    hosts: dict[str, Host] = {}
    ae_seen: dict[str, str] = {}
    routers: list[str] = []
    for hname, hv in hosts_raw.items():
        file, base = origins.get(hname, (inventory, f"all.hosts.{hname}"))
        key = base or hname

        def fail(sub: str, reason: str, file: Path = file, key: str = key) -> None:
            reader.fail(file, f"{key}.{sub}" if sub else key, reason)

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
            address = _ip(reader, file, f"{key}.lab_address", hv["lab_address"])
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
        )
    if len(routers) != 1:
        reader.fail(inventory, "lab_kind", f"exactly one host must have lab_kind: router (found {len(routers)}: {', '.join(routers) or 'none'})")
    return hosts


def _check_addresses(
    reader: _Reader,
    zones_file: Path,
    zones: dict[str, Zone],
    hosts: dict[str, Host],
    origins: dict[str, tuple[Path, str]],
) -> None:
    """Every address inside its zone, not reserved, and used once."""
    seen: dict[ipaddress.IPv4Address, str] = {}
    zfile_key: list[tuple[Path, str, ipaddress.IPv4Address, str, str]] = []
    for z in zones.values():
        zfile_key.append((zones_file, f"lab_zones.{z.name}.router", z.router, z.name, f"router of zone {z.name}"))
        zfile_key.append((zones_file, f"lab_zones.{z.name}.probe", z.probe, z.name, f"probe address of zone {z.name}"))
    for h in hosts.values():
        if h.address is not None and h.zone is not None:
            file, key = origins[h.name]
            zfile_key.append((file, f"{key}.lab_address", h.address, h.zone, f"host {h.name}"))
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

    def endpoint(value: Any, key: str) -> Endpoint | None:
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
        if hosts[text].is_router:
            reader.fail(ffile, key, f"{text} is the router; flows pass through it, they do not start or end there")
            return None
        return Endpoint("host", text)

    def zone_of(ep: Endpoint) -> str | None:
        return ep.name if ep.kind == "zone" else hosts[ep.name].zone

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
        sources = [endpoint(s, f"{key}.from") for s in sources_raw]
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
        for s in srcs:
            if s == dest:
                reader.fail(ffile, f"{key}.from", f"{s} is also the destination")
            elif zone_of(s) == zone_of(dest):
                reader.fail(
                    ffile,
                    f"{key}.from",
                    f"{s} and {dest} are both in zone {zone_of(dest)}: traffic inside a zone never crosses the firewall",
                )
        flows.append(
            Flow(
                id=str(fid),
                sources=srcs,
                dest=dest,
                proto=str(proto),
                ports=ports,
                purpose=str(body["purpose"]),
                csf=tuple(str(c) for c in body.get("csf") or ()),
            )
        )
    return flows


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
