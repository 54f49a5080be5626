"""The roles take every port, address and AE title of a peer from the lab definition: their
templates, rendered by Ansible's own templar with the variables Ansible gives each host, say what
is written out below by hand for the reference lab and for the second lab (tests/labs/alt, other
subnets, AE titles and ports). A template that kept a copy of the reference lab's values (a fixed
2762, say) passes the first and fails the second."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from ansible.vars.hostvars import HostVars
from ansible.vars.manager import VariableManager

from pacslab.topology import REPO_ROOT

LABS = {"default": REPO_ROOT / "inventories" / "default", "alt": REPO_ROOT / "tests" / "labs" / "alt"}
# group_vars beside the playbooks (the lab's TLS policy): Ansible gives them to every host of every lab.
PLAYBOOK_VARS = {k: v for f in sorted((REPO_ROOT / "playbooks" / "group_vars" / "all").glob("*.yml"))
                 for k, v in yaml.safe_load(f.read_text()).items()}


def _trusted(value: Any) -> Any:
    """Role defaults as a play would see them: their Jinja expressions are templates."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {k: _trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_trusted(v) for v in value]
    return value


class Renderer:
    def __init__(self, lab: Path):
        self.loader = DataLoader()
        self.inventory = InventoryManager(loader=self.loader, sources=[str(lab / "hosts.yml")])
        self.variables = VariableManager(loader=self.loader, inventory=self.inventory)

    def __call__(self, host: str, role: str, template: str, **extra: Any) -> str:
        text = (REPO_ROOT / "roles" / role / "templates" / template).read_text()
        return self.expression(host, role, text, **extra)

    def expression(self, host: str, role: str, text: str, **extra: Any) -> str:
        """``text`` (a template or a Jinja expression) rendered for ``host`` with ``role``'s defaults."""
        defaults = _trusted(yaml.safe_load((REPO_ROOT / "roles" / role / "defaults" / "main.yml").read_text()))
        hostvars = HostVars(inventory=self.inventory, variable_manager=self.variables, loader=self.loader)
        own = self.variables.get_vars(host=self.inventory.get_host(host), include_hostvars=False)
        templar = Templar(loader=self.loader, variables={**defaults, **_trusted(PLAYBOOK_VARS), **own, "hostvars": hostvars, **extra})
        return str(templar.template(trust_as_template(text)))


@pytest.fixture(scope="module", params=list(LABS))
def lab(request: pytest.FixtureRequest) -> tuple[str, Renderer]:
    return request.param, Renderer(LABS[request.param])


# Written out by hand from each lab's hosts.yml (lab_address, lab_ae_title, lab_services).
PACS_PEERS = {
    "default": {"CT01": ("10.77.30.10", 104), "MR01": ("10.77.30.11", 104), "LEGACY01": ("10.77.31.20", 104),
                "WSRAD01": ("10.77.20.10", 2762), "VNA": ("10.77.40.11", 2762)},
    "alt": {"CTSCAN9": ("10.66.30.10", 104), "MRSCAN9": ("10.66.30.11", 104), "OLDCT9": ("10.66.31.20", 104),
            "READ7": ("10.66.20.10", 11112), "LONGTERM": ("10.66.40.11", 11112)},
}
# Orthanc's own DICOM port is the front's inner port; the front (stunnel) accepts TLS on the lab's.
PACS_LISTENS = {"default": ("PACS", 4242), "alt": ("ARCHIVE", 4242)}
PACS_FRONT = {"default": ("0.0.0.0:2762", "10.77.40.10:4242"), "alt": ("0.0.0.0:11112", "10.66.40.10:4242")}
LEGACY_PEERS = {  # the legacy device reaches both through its gateway's cleartext ports
    "default": {"pacs": ("10.77.31.20", 104, "PACS"), "ris": ("10.77.31.20", 105, "RIS")},
    "alt": {"pacs": ("10.66.31.20", 4104, "ARCHIVE"), "ris": ("10.66.31.20", 4105, "WORKLIST")},
}
ORDER_ENTRY_PEERS = {"default": {"ris-hl7": ("10.77.40.12", 2575, "RIS")}, "alt": {"ris-hl7": ("10.66.40.12", 2577, "WORKLIST")}}
GATEWAY_TUNNELS = {
    "default": [("10.77.31.20:104", "10.77.40.10:2762"), ("10.77.31.20:105", "10.77.40.12:2762")],
    "alt": [("10.66.31.20:4104", "10.66.40.10:11112"), ("10.66.31.20:4105", "10.66.40.12:11112")],
}


def test_orthanc_peers_and_port_come_from_the_definition(lab: tuple[str, Renderer]) -> None:
    name, render = lab
    config = json.loads(render("pacs", "orthanc", "orthanc.json.j2", orthanc_admin_password="unused", pacslab_plan={"secrets_dir": "/x"}))
    assert {ae: (m["Host"], m["Port"]) for ae, m in config["DicomModalities"].items()} == PACS_PEERS[name]
    assert (config["DicomAet"], config["DicomPort"]) == PACS_LISTENS[name]
    assert config["DicomTlsEnabled"] is False and config["DicomCheckModalityHost"] is True


# What each break-and-fix switch changes in Orthanc's configuration, and nothing else.
SWITCH_CHANGES = {
    "orthanc_dicom_allowlist": {"DicomCheckModalityHost": False, "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True,
                                "DicomAlwaysAllowFind": True, "DicomAlwaysAllowGet": True, "DicomAlwaysAllowMove": True},
    "orthanc_md5": {"StoreMD5ForAttachments": False},
    "orthanc_dicom_peer_certificates": {},
}


@pytest.mark.parametrize("switch", list(SWITCH_CHANGES))
def test_a_break_and_fix_switch_changes_only_its_keys(lab: tuple[str, Renderer], switch: str) -> None:
    _, render = lab
    extra = {"orthanc_admin_password": "unused", "pacslab_plan": {"secrets_dir": "/x"}}
    on = json.loads(render("pacs", "orthanc", "orthanc.json.j2", **extra))
    off = json.loads(render("pacs", "orthanc", "orthanc.json.j2", **extra, **{switch: False}))
    assert {k: v for k, v in off.items() if on.get(k) != v} == SWITCH_CHANGES[switch]
    assert {k: on[k] for k in SWITCH_CHANGES[switch]} == {k: not v for k, v in SWITCH_CHANGES[switch].items()}


# Written out by hand from each lab's hosts.yml: the PACS's lab_services.dicom and AE title.
PACS_DICOM = {"default": (2762, "PACS"), "alt": (11112, "ARCHIVE")}


def test_without_dicom_tls_orthanc_takes_the_lab_port_and_its_peers_dial_it_in_cleartext(lab: tuple[str, Renderer]) -> None:
    """orthanc_dicom_tls false (W5's break-and-fix run): Orthanc itself listens on the lab's DICOM
    port (no front), the nodes that dial the PACS directly do so in cleartext, the VNA's entry for
    the PACS drops TLS, and everything else stays as it was."""
    name, _ = lab
    render = Renderer(LABS[name])  # its own: the PACS's switch is set for every host below
    extra = {"orthanc_admin_password": "unused", "pacslab_plan": {"secrets_dir": "/x"}}
    on = json.loads(render("pacs", "orthanc", "orthanc.json.j2", **extra))
    off = json.loads(render("pacs", "orthanc", "orthanc.json.j2", **extra, orthanc_dicom_tls=False))
    assert {k: v for k, v in off.items() if on.get(k) != v} == {"DicomPort": PACS_DICOM[name][0]}
    transports = lambda host: {k: p["transport"] for k, p in json.loads(render(host, "dicom_node", "dicom.json.j2"))["peers"].items()}  # noqa: E731
    vna_tls = lambda: {ae: m["UseDicomTls"] for ae, m in json.loads(render("vna", "orthanc", "orthanc.json.j2", **extra))["DicomModalities"].items()}  # noqa: E731
    assert (transports("mod-ct"), transports("mod-legacy"), vna_tls()) == (
        {"pacs": "device", "ris": "device"}, {"pacs": "cleartext", "ris": "cleartext"}, {PACS_DICOM[name][1]: True})
    render.variables.set_host_variable("pacs", "orthanc_dicom_tls", False)
    assert (transports("mod-ct"), transports("ws-rad"), transports("mod-legacy"), vna_tls()) == (
        {"pacs": "cleartext", "ris": "device"}, {"pacs": "cleartext"}, {"pacs": "cleartext", "ris": "cleartext"}, {PACS_DICOM[name][1]: False})
    assert transports("ws-tech") == {"ris-hl7": "device"}  # HL7 to the RIS: not the PACS's DICOM port


def test_without_peer_certificates_the_front_asks_for_none(lab: tuple[str, Renderer]) -> None:
    _, render = lab
    lines = lambda **kw: [ln for ln in render("pacs", "orthanc", "stunnel-dicom.conf.j2", **kw).splitlines() if " = " in ln]  # noqa: E731
    on, off = lines(), lines(orthanc_dicom_peer_certificates=False)
    assert sorted(set(on) - set(off)) == ["requireCert = yes", "verifyChain = yes"]
    assert sorted(set(off) - set(on)) == ["requireCert = no", "verifyChain = no"]


def test_the_dicom_front_accepts_the_lab_port_and_hands_over_transparently(lab: tuple[str, Renderer]) -> None:
    name, render = lab
    conf = dict(line.split(" = ", 1) for line in render("pacs", "orthanc", "stunnel-dicom.conf.j2").splitlines() if " = " in line)
    assert (conf["accept"], conf["connect"]) == PACS_FRONT[name]
    assert (conf["transparent"], conf["requireCert"], conf["verifyChain"], conf["sslVersionMin"]) == ("source", "yes", "yes", "TLSv1.2")
    assert conf["ciphers"] == "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"


def test_the_ris_answers_each_modality_only_its_own_worklist_items(lab: tuple[str, Renderer]) -> None:
    _, render = lab
    config = json.loads(render("ris", "orthanc", "orthanc.json.j2", orthanc_admin_password="unused", pacslab_plan={"secrets_dir": "/x"}))
    assert config["Worklists"] == {"Enable": True, "Database": "/var/lib/orthanc/worklists", "FilterIssuerAet": True}


def test_dicom_node_peers_come_from_the_definition(lab: tuple[str, Renderer]) -> None:
    name, render = lab
    legacy = json.loads(render("mod-legacy", "dicom_node", "dicom.json.j2"))["peers"]
    assert {k: (p["host"], p["port"], p["ae_title"]) for k, p in legacy.items()} == LEGACY_PEERS[name]
    entry = json.loads(render("ws-tech", "dicom_node", "dicom.json.j2"))["peers"]
    assert {k: (p["host"], p["port"], p["ae_title"]) for k, p in entry.items()} == ORDER_ENTRY_PEERS[name]


def test_the_workstation_scp_and_the_fronts_share_one_tls_policy(lab: tuple[str, Renderer]) -> None:
    """The storage SCP of ws-rad (dicomsim, from dicom.json) offers the same TLS 1.2 suites as the
    PACS's DICOM front: both read pacslab_tls12_ciphers."""
    _, render = lab
    tls = json.loads(render("ws-rad", "dicom_node", "dicom.json.j2"))["tls"]
    front = dict(line.split(" = ", 1) for line in render("pacs", "orthanc", "stunnel-dicom.conf.j2").splitlines() if " = " in line)
    assert tls["tls12_ciphers"] == front["ciphers"] == (
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384")


def test_gateway_tunnels_come_from_the_definition(lab: tuple[str, Renderer]) -> None:
    name, render = lab
    conf = render("ovl-gw", "dicom_node", "overlay.conf.j2")
    accepts = [ln.split(" = ")[1] for ln in conf.splitlines() if ln.startswith("accept = ")]
    connects = [ln.split(" = ")[1] for ln in conf.splitlines() if ln.startswith("connect = ")]
    assert list(zip(accepts, connects, strict=True)) == GATEWAY_TUNNELS[name]


# What each Orthanc host ships (roles/log_shipping log_shipping_files), written out by hand: every
# Orthanc host its event log, audit trail, own log, DICOM TLS front's log and host watch; the PACS,
# which the bastion's flow F08b reaches on SSH, sudo's and sshd's logs; the RIS its HL7 record and front;
# each, as every source, the watch over its supervised programs.
SHIPPED = {
    "pacs": ["orthanc-events", "dicom-audit", "orthanc-log", "dicom-front", "hids", "sudo", "sshd", "supervision"],
    "vna": ["orthanc-events", "dicom-audit", "orthanc-log", "dicom-front", "hids", "supervision"],
    "ris": ["orthanc-events", "dicom-audit", "orthanc-log", "dicom-front", "hids", "hl7-orders", "hl7-front", "supervision"],
}


@pytest.mark.parametrize("host", list(SHIPPED))
def test_the_audit_trail_switch_keeps_only_the_audit_trail_on_the_host(host: str) -> None:
    """log_shipping_dicom_audit false (W8's break-and-fix) leaves the files tagged dicom-audit
    unshipped and ships everything else as before."""
    render = Renderer(LABS["default"])
    tags = "{{ log_shipping_files | map(attribute='tag') | list | to_json }}"
    assert json.loads(render.expression(host, "log_shipping", tags)) == SHIPPED[host]
    assert json.loads(render.expression(host, "log_shipping", tags, log_shipping_dicom_audit=False)) == [
        t for t in SHIPPED[host] if t != "dicom-audit"]


# Written out by hand from each lab's hosts.yml: the deployed hosts of the zones a flow opens to the
# scanner on any port (F12, F12b: the datacenter and the modalities) and of its own (security),
# but the scanner; and the TCP ports of their lab_services beyond roles/scanner's scanner_vuln_ports.
VULNSCAN_HOSTS = {
    "default": [("mod-ct", "modality", "10.77.30.10"), ("mod-mr", "modality", "10.77.30.11"), ("pacs", "datacenter", "10.77.40.10"),
                ("ris", "datacenter", "10.77.40.12"), ("sensor", "security", "10.77.50.11"), ("siem", "security", "10.77.50.10"),
                ("vna", "datacenter", "10.77.40.11")],
    "alt": [("mod-ct", "modality", "10.66.30.10"), ("mod-mr", "modality", "10.66.30.11"), ("pacs", "datacenter", "10.66.40.10"),
            ("ris", "datacenter", "10.66.40.12"), ("vna", "datacenter", "10.66.40.11")],
}
VULNSCAN_LAB_PORTS = {"default": {6514}, "alt": {2577}}  # the siem's syslog port; the alt RIS's HL7 port
VULNSCAN_PORTS = {21, 22, 23, 80, 104, 139, 443, 445, 2575, 2762, 3389, 4242, 5900, 8042, 8080, 8443, 11112}


def _deployed(path: Path) -> list[str]:
    """The hosts of a lab's hosts.yml whose lab_state is not planned (playbooks/up.yml's pacslab_deployed)."""
    found: list[str] = []

    def walk(group: dict[str, Any]) -> None:
        found.extend(h for h, v in (group.get("hosts") or {}).items() if (v or {}).get("lab_state", "deployed") != "planned")
        for child in (group.get("children") or {}).values():
            walk(child or {})
    walk(yaml.safe_load((path / "hosts.yml").read_text())["all"])
    return sorted(set(found))


def test_the_vulnerability_scans_cover_the_scanners_zones_and_their_hosts_tcp_services(lab: tuple[str, Renderer]) -> None:
    name, render = lab
    config = json.loads(render("scanner", "scanner", "vulnscan.json.j2", groups={"pacslab_deployed": _deployed(LABS[name])}))
    assert [(h["name"], h["zone"], h["address"]) for h in config["hosts"]] == VULNSCAN_HOSTS[name]
    assert config["ports"] == sorted(VULNSCAN_PORTS | VULNSCAN_LAB_PORTS[name])


def test_a_udp_service_is_no_port_of_the_tcp_scan() -> None:
    render = Renderer(LABS["default"])  # its own: a host variable is set below
    render.variables.set_host_variable("mod-mr", "lab_services", {"web": "8444/tcp", "syslog": "514/udp", "dicom": 104})
    config = json.loads(render("scanner", "scanner", "vulnscan.json.j2", groups={"pacslab_deployed": _deployed(LABS["default"])}))
    assert 8444 in config["ports"] and 514 not in config["ports"] and 0 not in config["ports"]


# Written out by hand from each lab's hosts.yml: the siem's lab address.
SIEM_ADDRESS = {"default": "10.77.50.10", "alt": "10.66.50.10"}


def test_the_siem_stores_its_own_watch_s_records_from_their_file_alone_under_its_own_address(lab: tuple[str, Renderer]) -> None:
    """The siem's watch over its programs (roles/log_shipping) writes to the playbooks'
    pacslab_supervision_log; the siem's rsyslog reads that file alone into the ruleset that stores
    it as the siem's own address's, through the same store as the sources' messages. Its local
    syslog socket (a `logger -t supervision` on the siem) stays in the default ruleset, which
    writes the siem's own syslog file and stores nothing."""
    name, render = lab
    conf = render("siem", "siem", "rsyslog.conf.j2", ansible_managed="managed", pacslab_log_sources=["fw"])
    inputs = re.findall(r"^input\((.*?)\)$", conf, re.M | re.S)
    [own] = [i for i in inputs if 'type="imfile"' in i]
    assert 'File="/var/log/pacslab/supervision.json"' in own and 'Tag="supervision"' in own and 'ruleset="own"' in own
    assert [i for i in inputs if 'ruleset="own"' in i] == [own]
    rulesets = dict(re.findall(r'^ruleset\(name="(\w+)"\) \{\n(.*?)^\}', conf, re.M | re.S))
    assert rulesets["own"].split() == ["set", "$.peer", "=", f'"{SIEM_ADDRESS[name]}";', "call", "store"]
    assert rulesets["remote"].split() == ["set", "$.peer", "=", "$fromhost-ip;", "call", "store"]
    assert 'name="pacslab-siem-ingest"' in rulesets["store"] and "call" not in rulesets["store"]
    default = conf.split("\n# The siem's own programs\n", 1)[1]
    assert default.split() == ["*.*", "/var/log/pacslab/syslog.log"]


def test_the_siem_names_no_sender_by_dns(lab: tuple[str, Renderer]) -> None:
    """rsyslog looks up a new sender's name in its listener's accept path, and every TLS session
    waits meanwhile. From the siem, the name of a host of another zone is never answered and the
    lookup gives up after 10 s, once per address and again after each restart of rsyslogd (a cold
    `up` held the siem's ingest back by up to two minutes, a probe from a new address each time by
    10 s). The siem keeps each sender by its address (fromhost-ip) and never needs its name."""
    _, render = lab
    conf = render("siem", "siem", "rsyslog.conf.j2", ansible_managed="managed", pacslab_log_sources=["fw"])
    [settings] = re.findall(r"^global\((.*)\)$", conf, re.M)
    assert 'net.enableDNS="off"' in settings.split()
