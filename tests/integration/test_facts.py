"""In-host facts through pytest-testinfra's docker backend (docs/architecture.md section 8), hosts taken from
the loaded lab definition: listening sockets (TCP and UDP, IPv4 and IPv6) against the flow matrix,
private key files, the users services run as, and the tools the Orthanc hosts do not carry. Each
check has its twin: the same comparison, run on a planted deviation, names exactly that deviation.

The outside view of C-PRT-02 (a TCP scan of every port from the scanner's address) lives here too:
it expects the same listeners, seen through the fw.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import testinfra
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from testinfra.host import Host as InfraHost

from pacslab.docker import docker
from pacslab.listeners import Listener, compare, declared_extras, expected_listeners, outside_loopback, role_default
from pacslab.plan import front_ports
from pacslab.probes import imaging as im
from pacslab.probes import segmentation as seg
from pacslab.probes import standins
from pacslab.topology import Lab, load_lab


def _deployed(lab: Lab, image: str | None = None) -> list[str]:
    return [h.name for h in lab.deployed_hosts() if image is None or h.image == image]


def _one_per_image(lab: Lab) -> list[str]:
    """The first deployed host of each image: one witness per kind of container."""
    seen: dict[str | None, str] = {}
    for h in lab.deployed_hosts():
        seen.setdefault(h.image, h.name)
    return list(seen.values())


def _scanned(lab: Lab) -> list[str]:
    """Deployed hosts that a flow lets the scanner reach on any port (F12, F12b)."""
    zones = {f.dest.name for f in lab.flows if f.ports is None and f.dest.kind == "zone" and any(s.name == "scanner" for s in f.sources)}
    return [h.name for h in lab.deployed_hosts() if h.zone in zones]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """fact_host: every deployed host; orthanc_host: the Orthanc hosts (PACS, VNA, RIS); witness:
    one host per image; scanned_host: the hosts the scanner may sweep. Ids carry the host."""
    lab = load_lab(metafunc.config.getoption("--lab"))
    for name, hosts in (
        ("fact_host", _deployed(lab)),
        ("orthanc_host", _deployed(lab, "orthanc")),
        ("witness", _one_per_image(lab)),
        ("scanned_host", _scanned(lab)),
    ):
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, hosts, ids=hosts)


@pytest.fixture(scope="module")
def infra(running_lab: Lab) -> Callable[[str], InfraHost]:
    """A testinfra host (docker:// backend) per lab host, made once."""
    cache: dict[str, InfraHost] = {}

    def get(name: str) -> InfraHost:
        if name not in cache:
            cache[name] = testinfra.get_host(f"docker://{running_lab.container_name(name)}")
        return cache[name]

    return get


# ---------------------------------------------------------------------------------------------
# C-PRT-02 least functionality: listening sockets, seen from inside each host


def listening(host: InfraHost) -> set[Listener]:
    """What the host listens on outside loopback: `ss -nl` through testinfra, TCP and UDP, v4 and v6."""
    return outside_loopback(host.socket.get_listening_sockets())


def _fmt(listeners: set[Listener] | tuple[Listener, ...]) -> list[str]:
    return [f"{port}/{proto}" for proto, port in sorted(listeners)]


@pytest.mark.control("C-PRT-02")
def test_host_listens_on_exactly_its_flows(running_lab: Lab, infra, fact_host: str, evidence) -> None:
    """Every socket outside loopback is a flow's port (or a listener its role declares with a
    reason), and every such port is open."""
    observed = listening(infra(fact_host))
    expected = expected_listeners(running_lab, fact_host)
    drift = compare(observed, expected)
    evidence.update(listening=_fmt(observed), expected=_fmt(expected))
    assert observed == expected, str(drift)


ROGUE_PORTS = {"ipv4": 4471, "ipv6": 4472}
ROGUE = """
import socket, sys, time
family, address = (socket.AF_INET, "0.0.0.0") if sys.argv[1] == "ipv4" else (socket.AF_INET6, "::")
held = []
for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
    s = socket.socket(family, kind)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((address, int(sys.argv[2])))
    if kind == socket.SOCK_STREAM:
        s.listen()
    held.append(s)
time.sleep(300)
"""


@contextlib.contextmanager
def background(host: InfraHost, *argv: str) -> Iterator[int]:
    """Run argv in the host, detached from the exec that starts it; kill it on the way out."""
    command = "nohup " + " ".join(["%s"] * len(argv)) + " >/dev/null 2>&1 & echo $!"
    pid = int(host.check_output(command, *argv))
    try:
        yield pid
    finally:
        host.run("kill %s", str(pid))


@pytest.mark.control("C-PRT-02")
@pytest.mark.parametrize("family", sorted(ROGUE_PORTS))
def test_rogue_listener_is_named_by_the_same_comparison(running_lab: Lab, infra, witness: str, family: str, evidence) -> None:
    """Negative twin: a listener nobody declared (TCP and UDP on the wildcard address of one
    family) turns up in the drift as exactly its port, on both transports, and nothing else."""
    host, port = infra(witness), ROGUE_PORTS[family]
    expected = expected_listeners(running_lab, witness)
    before = compare(listening(host), expected)
    def rogue_seen() -> set[Listener] | None:
        observed = listening(host)
        return observed if {("tcp", port), ("udp", port)} <= observed else None

    with background(host, "python3", "-c", ROGUE, family, str(port)):
        observed = im.wait_for(f"the rogue {family} listener", rogue_seen, timeout=15, every=0.5)
        raw = [s for s in host.socket.get_listening_sockets() if s.endswith(f":{port}")]
    after = compare(observed, expected)
    evidence.update(sockets=raw, unexpected=_fmt(after.unexpected), missing=_fmt(after.missing))
    assert set(after.unexpected) - set(before.unexpected) == {("tcp", port), ("udp", port)}
    assert after.missing == before.missing
    assert all(s.startswith(("tcp://::", "udp://::")) == (family == "ipv6") for s in raw), raw
    assert str(port) in str(after)


# The outside view (flows F12/F12b: any port of the datacenter and modality zones, from the
# security zone only), from the scanner (a stand-in at its address where a lab plans it only).
SCAN_ROGUE_PORT = 4444


@pytest.fixture(scope="module")
def scanner(running_lab: Lab, segmentation: Any) -> str:
    """The scanner's container, or where the lab plans it only, its stand-in: one of the
    segmentation run's (conftest), which starts it with every other stand-in in one playbook run
    and removes it when the session ends."""
    container = standins.container_for(running_lab, seg.host_peer(running_lab.hosts["scanner"]))
    assert docker("ps", "-q", "--filter", f"name=^{container}$").stdout.strip(), f"the segmentation run did not start {container}"
    return container


def scan_from(lab: Lab, container: str, addresses: list[str], ports: str = "1-65535") -> dict[str, dict[str, list[int]]]:
    """The scanner's own nmap where the lab deploys it; the tools agent's connect scan from its stand-in otherwise."""
    if lab.hosts["scanner"].deployed:
        return standins.nmap_scan(container, addresses, ports)
    return standins.scan(container, addresses, ports)


@pytest.fixture(scope="module")
def outside_scan(running_lab: Lab, scanner: str) -> dict[str, dict[str, list[int]]]:
    addresses = {str(running_lab.hosts[h].address): h for h in _scanned(running_lab)}
    return {addresses[a]: r for a, r in scan_from(running_lab, scanner, list(addresses)).items()}


def tcp_ports(lab: Lab, host: str) -> list[int]:
    return sorted(port for proto, port in expected_listeners(lab, host) if proto == "tcp")


def behind_front(lab: Lab, host: str) -> list[int]:
    """The inner ports of the host's transparent TLS fronts (roles/orthanc): they listen, and their
    answers are routed back to the front, so a direct connect never completes (plan front_ports)."""
    return sorted(front_ports(lab).get(lab.container_name(host), []))


@pytest.mark.control("C-PRT-02")
def test_scan_from_the_security_zone_finds_exactly_the_listening_ports(running_lab: Lab, outside_scan, scanned_host: str, evidence) -> None:
    """Every TCP port 1-65535 of the host, connected from the scanner's address through the fw. The
    inner port of a TLS front listens but never answers anyone but its front: from the scanner it is
    the one port that neither answers nor refuses (the proof that nobody reaches Orthanc's cleartext
    DICOM directly)."""
    found = outside_scan[scanned_host]
    inner = behind_front(running_lab, scanned_host)
    evidence.update(open=found["open"], dropped=found["dropped"][:20], errors=len(found["error"]))
    assert not found["error"], f"connects that failed otherwise than refused: {found['error'][:20]}"
    assert found["open"] == sorted(set(tcp_ports(running_lab, scanned_host)) - set(inner))
    assert found["dropped"] == inner, "ports that neither answer nor refuse: a filter the flow matrix does not describe"


@pytest.mark.control("C-PRT-02")
def test_scan_reports_a_listener_nobody_declared(running_lab: Lab, scanner: str, evidence) -> None:
    """Negative twin: a rogue listener on a modality is found by the same scan, and named."""
    lab = running_lab
    target = next(h for h in _scanned(lab) if lab.hosts[h].image == "dicom")
    im.exec_in(lab, target, "sh", "-c", f"nohup python3 -m http.server {SCAN_ROGUE_PORT} >/dev/null 2>&1 & echo $! > /tmp/rogue.pid")
    try:
        address = str(lab.hosts[target].address)
        rogue = f"{SCAN_ROGUE_PORT}-{SCAN_ROGUE_PORT}"
        im.wait_for("the rogue listener", lambda: scan_from(lab, scanner, [address], rogue)[address]["open"], timeout=30, every=1)
        found = scan_from(lab, scanner, [address], f"1-{SCAN_ROGUE_PORT + 1000}")[address]
    finally:
        im.exec_in(lab, target, "sh", "-c", "kill $(cat /tmp/rogue.pid); rm -f /tmp/rogue.pid")
    evidence.update(host=target, open=found["open"])
    assert found["open"] == sorted(set(tcp_ports(lab, target)) - set(behind_front(lab, target)) | {SCAN_ROGUE_PORT})


@pytest.mark.control("C-PRT-02")
@pytest.mark.parametrize("case", ["orthanc-http-from-a-neighbour", "lua-execution"])
def test_orthanc_refuses_what_it_does_not_need(running_lab: Lab, case: str, evidence) -> None:
    """Orthanc's HTTP port is the one listener no flow names (roles/orthanc orthanc_extra_listeners):
    it answers a neighbour in its own zone 401 with valid credentials (RemoteAccessAllowed false),
    while the same credentials get the system record through the HTTPS front; Lua execution: 403."""
    lab = running_lab
    pacs = lab.hosts["pacs"]
    if case == "lua-execution":
        status, code = im.orthanc_call(lab, "pacs", "/tools/execute-script", "POST", "print(1)")
        evidence.update(status=status, body=code[:80])
        assert status == 403
    else:
        http = role_default("orthanc", "orthanc_http_port")
        assert ("tcp", http) in {(e.proto, e.port) for e in declared_extras("orthanc")}
        neighbour = next(h.name for h in lab.deployed_hosts() if h.zone == pacs.zone and h.name != "pacs")
        status = im.exec_in(lab, neighbour, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                            "-K", "-", f"http://{pacs.address}:{http}/system", input=im.curl_user(lab, "pacs"))
        twin = im.orthanc(lab, "pacs", "/system")  # the same credentials through the HTTPS front
        evidence.update(neighbour=neighbour, port=http, status=status, through_https=twin.get("Version"))
        assert twin.get("Version")
        assert status == "401"


# ---------------------------------------------------------------------------------------------
# C-DAT-05 private keys: mode 0600, owned by the user of the service that reads them


@dataclass(frozen=True)
class KeyRule:
    pattern: str  # fnmatch pattern of the path ("*" crosses "/")
    owner: str
    modes: frozenset[int]
    why: str


KEY_RULES = (
    KeyRule("/etc/pacslab/tls/node.key", "root", frozenset({0o600}),
            "the node's own key as roles/pki makes it: root's; each service that runs as another user gets its own copy"),
    KeyRule("/etc/pacslab/dicom/node.key", "pacslab-dicom", frozenset({0o600}), "the DICOM node service's copy: it runs as pacslab-dicom"),
    KeyRule("/etc/pacslab/orthanc/node.key", "orthanc", frozenset({0o600}), "Orthanc's copy for DICOM TLS: Orthanc runs as orthanc"),
    KeyRule("/etc/pacslab/siem/tls/node.key", "pacslab-siem", frozenset({0o600}),
            "the siem's containment service's copy (roles/siem): it runs as pacslab-siem"),
    KeyRule("/etc/stunnel/*.key", "stunnel4", frozenset({0o600}), "each stunnel front's copy (https, hl7): those fronts run as stunnel4"),
    KeyRule("/etc/ldap/tls/node.key", "openldap", frozenset({0o600}), "slapd's copy for LDAPS: slapd runs as openldap"),
    KeyRule("/etc/lemonldap-ng/oidc-sig.key", "root", frozenset({0o600}),
            "the IdP's OpenID Connect signing key as roles/idp makes it: root's; the portal reads the copy in its configuration"),
    KeyRule("/var/lib/lemonldap-ng/conf/lmConf-*.json", "www-data", frozenset({0o600}),
            "LemonLDAP's configuration holds the signing key (and the IdP's secrets): the portal runs as www-data"),
    KeyRule("/var/lib/pacslab-ca/*", "root", frozenset({0o600}), "the lab root and issuing keys: pacslab-ca runs as root, through provisioning only"),
    KeyRule("/etc/apache2/pacslab-client.pem", "root", frozenset({0o600}),
            "the proxy's certificate and key for its backends' HTTPS fronts (roles/rproxy): Apache's parent reads it as root"),
    KeyRule("/etc/ssh/ssh_host_*_key", "root", frozenset({0o600}),
            "sshd's host key, the lab's own (roles/bastion, roles/maintenance): sshd's listener reads it as root"),
    KeyRule("/etc/pacslab/maintenance/keys/*", "pacslab-broker", frozenset({0o600}),
            "the bastion's key for each vendor, which the targets take (roles/bastion): the broker's alone, never the vendor's"),
)
# Where private keys are looked for: configuration and service state, not /tmp (other checks plant
# throw-away keys there) and not the image stores (/var/lib/orthanc, /var/lib/postgresql).
KEY_DIRS = ("/etc", "/root", "/home", "/opt", "/usr/local", "/var/lib/pacslab", "/var/lib/pacslab-ca", "/var/lib/lemonldap-ng/conf")
PEM_PRIVATE_KEY = "-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY-----"
# Keys a host of each image must hold (so that "no problem" cannot mean "nothing found").
MUST_HOLD = {
    "orthanc": {"/etc/pacslab/tls/node.key", "/etc/pacslab/orthanc/node.key", "/etc/stunnel/https.key"},
    "ca": {"/var/lib/pacslab-ca/root.key", "/etc/pacslab/tls/node.key"},
    "dir": {"/etc/pacslab/tls/node.key", "/etc/ldap/tls/node.key"},
    "idp": {"/etc/pacslab/tls/node.key", "/etc/lemonldap-ng/oidc-sig.key", "/var/lib/lemonldap-ng/conf/lmConf-1.json"},
    "rproxy": {"/etc/pacslab/tls/node.key", "/etc/apache2/pacslab-client.pem"},
    "bastion": {"/etc/pacslab/tls/node.key", "/etc/ssh/ssh_host_ed25519_key"},
    "siem": {"/etc/pacslab/tls/node.key", "/etc/pacslab/siem/tls/node.key"},
    "fw": {"/etc/pacslab/tls/node.key"},
}


def private_keys(host: InfraHost) -> dict[str, tuple[str, int]]:
    """Every file under KEY_DIRS holding a PEM private key -> (owner, mode)."""
    out = host.run("grep -rlIE -e %s " + " ".join(["%s"] * len(KEY_DIRS)), PEM_PRIVATE_KEY, *KEY_DIRS)
    noise = [ln for ln in out.stderr.splitlines() if not ln.endswith("No such file or directory")]
    assert out.rc in (0, 1, 2) and not noise, f"grep failed ({out.rc}): {noise[:5]}"
    return {p: (host.file(p).user, host.file(p).mode) for p in out.stdout.split()}


def key_problems(keys: dict[str, tuple[str, int]]) -> dict[str, list[str]]:
    """path -> what is wrong with it: no rule declares it, the wrong owner, a mode not allowed."""
    problems: dict[str, list[str]] = {}
    for path, (owner, mode) in sorted(keys.items()):
        rule = next((r for r in KEY_RULES if fnmatch.fnmatch(path, r.pattern)), None)
        if rule is None:
            problems[path] = [f"a private key no rule declares ({owner}, {mode:04o})"]
            continue
        found = ([f"owner {owner}, want {rule.owner}"] if owner != rule.owner else []) + (
            [f"mode {mode:04o}, want {' or '.join(f'{m:04o}' for m in sorted(rule.modes))}"] if mode not in rule.modes else []
        )
        if found:
            problems[path] = found
    return problems


@pytest.mark.control("C-DAT-05")
def test_private_keys_are_private_to_their_service(running_lab: Lab, infra, fact_host: str, evidence) -> None:
    keys = private_keys(infra(fact_host))
    evidence.update(keys={p: f"{o} {m:04o}" for p, (o, m) in keys.items()})
    image = running_lab.hosts[fact_host].image or ""
    assert MUST_HOLD.get(image, set()) <= set(keys), f"expected keys not found: {sorted(MUST_HOLD[image] - set(keys))}"
    assert key_problems(keys) == {}


PLANTED_KEYS = {  # case -> (path, the problems the same audit must report for it)
    "readable-service-copy": ("/etc/stunnel/planted.key", ["owner root, want stunnel4", "mode 0644, want 0600"]),
    "undeclared-key": ("/etc/pacslab/planted.key", ["a private key no rule declares (root, 0644)"]),
}


@pytest.mark.control("C-DAT-05")
@pytest.mark.parametrize("case", sorted(PLANTED_KEYS))
def test_planted_key_is_named_by_the_same_audit(running_lab: Lab, infra, case: str, evidence) -> None:
    """Negative twin: a key left readable (0644, root) where a service keeps its copy, or where no
    service declares one, is reported by the audit above with exactly those problems."""
    target = _deployed(running_lab, "orthanc")[0]
    host, (path, want) = infra(target), PLANTED_KEYS[case]
    before = key_problems(private_keys(host))
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    im.exec_in(running_lab, target, "sh", "-c", f"umask 022 && cat > {path}", input=key)
    try:
        after = key_problems(private_keys(host))
    finally:
        im.exec_in(running_lab, target, "rm", "-f", path)
    evidence.update(host=target, reported={p: v for p, v in after.items() if p not in before})
    assert {p: v for p, v in after.items() if p not in before} == {path: want}


# ---------------------------------------------------------------------------------------------
# C-PRT-02 least functionality: who each service runs as (SP 800-53 CM-7 with AC-6)


@dataclass(frozen=True)
class RunsAs:
    command: str  # the start of the process's command line
    user: str
    why: str


RUNS_AS = (
    RunsAs("/usr/bin/python3 /usr/bin/supervisord ", "root", "PID 1 of the service images: starts each program as the user its conf.d entry names"),
    RunsAs("/usr/lib/postgresql/", "postgres", "PostgreSQL refuses to run as root"),
    RunsAs("/usr/sbin/Orthanc ", "orthanc", "roles/orthanc: user=orthanc"),
    RunsAs("/usr/sbin/slapd ", "openldap", "roles/directory: slapd -u openldap -g openldap (binds 636 as root first)"),
    RunsAs("llng-fastcgi-server", "www-data", "roles/idp: LemonLDAP's portal, llng-fastcgi-server -u www-data -g www-data"),
    RunsAs("nginx: master process ", "root", "roles/idp: binds 443 and reads the node key as root; its workers run as www-data (nginx.conf)"),
    RunsAs("/usr/sbin/apache2 ", "root", "roles/rproxy: binds 443, reads the node key and the proxy's secrets as root; its workers run as www-data"),
    RunsAs("/usr/bin/stunnel4 ", "stunnel4", "binds its port as root, then setuid/setgid stunnel4 (roles orthanc, ris, dicom_node)"),
    RunsAs("/usr/sbin/clamd ", "clamav", "roles/orthanc malware.yml: clamd starts as root and drops to its User clamav (C-DET-02)"),
    RunsAs("/usr/bin/python3 /usr/local/lib/pacslab/orders.py ", "pacslab-hl7",
           "roles/ris: the HL7 listener's own user; it alone writes the worklist items (Orthanc reads them) and its record"),
    RunsAs("/usr/bin/python3 /usr/local/lib/pacslab/dicomsim.py ", "pacslab-dicom", "roles/dicom_node: user=pacslab-dicom, its own key copy"),
    RunsAs("/usr/bin/tcpdump -i any ", "tcpdump",
           "roles/firewall capture.yml: the capture ring opens the interfaces as root, then runs as Debian's tcpdump user"),
    RunsAs("/usr/sbin/ulogd", "root", "finding, not fixed yet: the fw's NFLOG collector (supervisor starts it without --uid)"),
    RunsAs("/bin/sh -c /usr/bin/dumpcap ", "root",
           "roles/dicom_node (gateway): the shell of the capture's pipeline; dumpcap captures as root, tshark and grep run as nobody"),
    RunsAs("sshd: /usr/sbin/sshd ", "root",
           "roles/bastion, roles/maintenance: sshd's listener binds 22 and reads the host key as root; each session runs as its person"),
    RunsAs("/usr/sbin/rsyslogd ", "root",
           "roles/bastion, roles/siem, roles/log_shipping: reads /dev/log and keeps the bastion's records, which no vendor may change; on "
           "the siem, the TLS listener reads the node key (the store and the ingest run as pacslab-siem); on the PACS, the VNA, "
           "the fw, the IdP and the CA, ships their logs with the node key"),
    RunsAs("/usr/bin/python3 /usr/local/lib/pacslab/pacslab_siem.py evaluate ", "pacslab-siem", "roles/siem: user=pacslab-siem, the store's owner"),
    RunsAs("/usr/bin/python3 /usr/local/lib/pacslab/pacslab_siem.py serve ", "pacslab-siem",
           "roles/siem: the containment service, user=pacslab-siem with its own copy of the node key"),
    RunsAs("/usr/bin/python3 /usr/local/lib/pacslab/pacslab_siem.py console ", "pacslab-siem",
           "roles/siem: the console (HTTPS, read only), user=pacslab-siem with the same copy of the node key"),
    RunsAs("/usr/bin/python3 /usr/local/sbin/pacslab-quarantine follow ", "root",
           "roles/firewall: the siem's arm on the fw changes the nft quarantine set (CAP_NET_ADMIN) and reads the node key"),
    RunsAs("/bin/sh -c while :; do logrotate ", "root",
           "roles/log_rotation: renames logs of root, orthanc and pacslab-hl7, creates their successors with their owners, signals ulogd and "
           "rsyslogd through supervisor"),
    RunsAs("/bin/sh -c while :; do flock /var/lib/logrotate/pacslab-seal.lock ", "root",
           "roles/log_rotation, where files are append-only (the siem's raw files): the same loop, each rotation and seal holding "
           "the seal lock; clears and sets the append-only flag (CAP_LINUX_IMMUTABLE)"),
    RunsAs("/usr/bin/suricata ", "suricata",
           "roles/sensor: setpriv starts it as suricata with CAP_NET_RAW alone (its af-packet socket on the fw's copies)"),
    RunsAs("/usr/bin/python3 /usr/local/lib/pacslab/pacslab_hids.py ", "pacslab-hids",
           "roles/orthanc hids.yml: setpriv starts the host watch as pacslab-hids with CAP_SYS_PTRACE alone (every process's executable)"),
    RunsAs("/usr/bin/python3 /usr/local/sbin/pacslab-discovery ", "pacslab-scanner",
           "roles/scanner: setpriv starts the sweeps as pacslab-scanner with CAP_NET_RAW alone (nmap's raw and packet sockets)"),
    RunsAs("/usr/bin/python3 /usr/local/sbin/pacslab-vulnscan ", "pacslab-scanner",
           "roles/scanner vulnscan.yml: setpriv starts the vulnerability scans as pacslab-scanner with no capability (a TCP connect scan)"),
    RunsAs("/usr/bin/python3 /usr/local/sbin/pacslab-supervision ", "root",
           "roles/log_shipping supervision.yml: the watch over the host's programs asks supervisord, whose socket is root's alone (0700)"),
    RunsAs("sleep infinity", "root", "PID 1 of the internet zone's computers: no service"),
)


def services(host: InfraHost) -> list[tuple[int, str, str]]:
    """(pid, user, command line) of the container's PID 1 and its children (the supervised
    programs and any orphan daemon); processes that `docker exec` started are not among them, nor
    zombies (ps shows them as ``[name] <defunct>``: they run nothing, they wait for PID 1 to reap them)."""
    procs = [host.process.get(pid=1), *host.process.filter(ppid=1)]
    return [(p.pid, str(p.user), p.args) for p in procs if not p.args.endswith("<defunct>")]


def run_as_problems(procs: list[tuple[int, str, str]]) -> list[str]:
    """One line per process that runs as another user than its rule says, or that no rule names."""
    problems = []
    for pid, user, args in procs:
        rule = next((r for r in RUNS_AS if args.startswith(r.command) or args == r.command.strip()), None)
        if rule is None:
            problems.append(f"pid {pid} ({args[:60]}) runs as {user}: no rule names it")
        elif user != rule.user:
            problems.append(f"pid {pid} ({args[:60]}) runs as {user}, want {rule.user}")
    return problems


@pytest.mark.control("C-PRT-02")
def test_services_run_as_their_own_users(infra, fact_host: str, evidence) -> None:
    procs = services(infra(fact_host))
    evidence.update(runs_as=[f"{user}: {args[:80]}" for _, user, args in procs])
    assert run_as_problems(procs) == []


@pytest.mark.control("C-PRT-02")
def test_the_gateway_s_capture_parses_the_segment_s_bytes_as_nobody(running_lab: Lab, infra, evidence) -> None:
    """roles/dicom_node (gateway): of the capture's pipeline only dumpcap keeps root (CAP_NET_RAW, to
    capture); tshark, which parses what any device on the legacy segment sends, and grep run as
    nobody with no capability left (setpriv). The twin: dumpcap itself is root's."""
    gateways = [h for h in running_lab.deployed_hosts() if "overlay_gateways" in h.groups]
    if not gateways:
        pytest.skip(f"lab {running_lab.name!r} deploys no overlay gateway")
    host = infra(gateways[0].name)
    shell = next(p for p in host.process.filter(ppid=1) if p.args.startswith("/bin/sh -c /usr/bin/dumpcap "))
    found = {}
    for child in host.process.filter(ppid=shell.pid):
        status = dict(ln.split(":\t", 1) for ln in host.file(f"/proc/{child.pid}/status").content_string.splitlines() if ":\t" in ln)
        found[child.args.split()[0]] = (str(child.user), int(status["CapEff"], 16), int(status["CapPrm"], 16))
    evidence.update(pipeline=found)
    assert found["/usr/bin/tshark"] == ("nobody", 0, 0) and found["/bin/grep"] == ("nobody", 0, 0), found
    assert found["/usr/bin/dumpcap"][0] == "root", found


def capability_sets(host: InfraHost, command: str) -> tuple[Any, dict[str, int]]:
    """The supervised process whose command line starts with ``command`` and its effective,
    permitted, bounding and ambient capability sets (/proc/PID/status, hexadecimal)."""
    process = next(p for p in host.process.filter(ppid=1) if p.args.startswith(command))
    status = dict(line.split(":\t", 1) for line in host.file(f"/proc/{process.pid}/status").content_string.splitlines() if ":\t" in line)
    return process, {k: int(status[k], 16) for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb")}


CAP_NET_RAW = 1 << 13  # linux/capability.h


@pytest.mark.control("C-PRT-02")
def test_the_scanners_sweeps_hold_cap_net_raw_alone(running_lab: Lab, infra, evidence) -> None:
    """The sweeping program and the nmap it starts may open raw sockets and nothing more: their
    effective, permitted and bounding sets are CAP_NET_RAW alone (/proc/PID/status, hexadecimal)."""
    scanners = [h.name for h in running_lab.deployed_hosts() if "scanners" in h.groups]
    if not scanners:
        pytest.skip(f"lab {running_lab.name!r} deploys no scanner")
    sweeper, sets = capability_sets(infra(scanners[0]), "/usr/bin/python3 /usr/local/sbin/pacslab-discovery ")
    evidence.update(pid=sweeper.pid, sets={k: hex(v) for k, v in sets.items()})
    assert sets == {"CapEff": CAP_NET_RAW, "CapPrm": CAP_NET_RAW, "CapBnd": CAP_NET_RAW, "CapAmb": CAP_NET_RAW}


@pytest.mark.control("C-RSK-02")
def test_the_vulnerability_scans_hold_no_capability(running_lab: Lab, infra, evidence) -> None:
    """The scanning program (roles/scanner pacslab-vulnscan) and the nmap it starts connect like any
    program: their effective, permitted, bounding and ambient sets are empty, and they run as the
    sweeps' user."""
    scanners = [h.name for h in running_lab.deployed_hosts() if "scanners" in h.groups]
    if not scanners:
        pytest.skip(f"lab {running_lab.name!r} deploys no scanner")
    scans, sets = capability_sets(infra(scanners[0]), "/usr/bin/python3 /usr/local/sbin/pacslab-vulnscan ")
    evidence.update(pid=scans.pid, user=scans.user, sets={k: hex(v) for k, v in sets.items()})
    assert scans.user == "pacslab-scanner"
    assert sets == {"CapEff": 0, "CapPrm": 0, "CapBnd": 0, "CapAmb": 0}


CAP_SYS_PTRACE = 1 << 19  # linux/capability.h


@pytest.mark.control("C-PRT-04")
def test_the_host_watch_holds_cap_sys_ptrace_alone(running_lab: Lab, infra, evidence) -> None:
    """The Orthanc hosts' watch (roles/orthanc pacslab-hids) reads every process's executable and
    nothing more: its effective, permitted, bounding and ambient sets are CAP_SYS_PTRACE alone,
    and it runs as its own user."""
    watch, sets = capability_sets(infra(_deployed(running_lab, "orthanc")[0]), "/usr/bin/python3 /usr/local/lib/pacslab/pacslab_hids.py ")
    evidence.update(pid=watch.pid, user=watch.user, sets={k: hex(v) for k, v in sets.items()})
    assert watch.user == "pacslab-hids"
    assert sets == {"CapEff": CAP_SYS_PTRACE, "CapPrm": CAP_SYS_PTRACE, "CapBnd": CAP_SYS_PTRACE, "CapAmb": CAP_SYS_PTRACE}


@pytest.mark.control("C-PRT-02")
def test_orphan_root_process_is_named_by_the_same_check(running_lab: Lab, infra, evidence) -> None:
    """Negative twin: a root process left behind (its parent gone, so PID 1 adopts it) is reported."""
    host = infra(_deployed(running_lab, "orthanc")[0])
    before = run_as_problems(services(host))
    with background(host, "sleep", "317"):
        after = im.wait_for("the orphan", lambda: [p for p in run_as_problems(services(host)) if p not in before], timeout=15, every=0.5)
    evidence.update(reported=after)
    assert len(after) == 1 and after[0].endswith("(sleep 317) runs as root: no rule names it"), after


# ---------------------------------------------------------------------------------------------
# C-PRT-02 least functionality: no compilers, scanners, sniffers or extra shells on the Orthanc hosts


# Tool packages the lab's base image (debootstrap minbase + python3) does not carry: a compiler, a
# debugger, a scanner, a sniffer or relay, or a shell beyond dash and bash would arrive with one.
TOOL_PACKAGES = (
    "gcc", "g++", "cpp", "clang", "make", "binutils", "gdb", "strace", "ltrace",
    "nmap", "ncat", "netcat-openbsd", "netcat-traditional", "socat", "telnet", "tcpdump", "tshark",
    "zsh", "ksh", "mksh", "tcsh", "csh", "fish", "busybox",
)
# /etc/shells of the base image: dash and bash (both essential in Debian), nothing more.
BASE_SHELLS = {"/bin/sh", "/usr/bin/sh", "/bin/bash", "/usr/bin/bash", "/bin/rbash", "/usr/bin/rbash", "/bin/dash", "/usr/bin/dash"}


def installed_tools(host: InfraHost) -> list[str]:
    """The TOOL_PACKAGES dpkg has installed, in one dpkg-query (its own output format)."""
    out = host.run("dpkg-query -W -f %s " + " ".join(["%s"] * len(TOOL_PACKAGES)), "${Package} ${db:Status-Status}\n", *TOOL_PACKAGES)
    return sorted(name for name, status in (ln.split() for ln in out.stdout.splitlines()) if status == "installed")


def shells(host: InfraHost) -> set[str]:
    return {ln.strip() for ln in host.file("/etc/shells").content_string.splitlines() if ln.strip() and not ln.startswith("#")}


@pytest.mark.control("C-PRT-02")
def test_orthanc_host_carries_no_tools_beyond_the_base(infra, orthanc_host: str, evidence) -> None:
    host = infra(orthanc_host)
    tools, extra_shells = installed_tools(host), shells(host) - BASE_SHELLS
    evidence.update(tools=tools, extra_shells=sorted(extra_shells))
    assert tools == [] and extra_shells == set()


@pytest.mark.control("C-PRT-02")
def test_tool_check_names_the_sniffer_the_fw_carries(running_lab: Lab, infra, evidence) -> None:
    """Negative twin: the fw carries tcpdump on purpose (the C-DAT-02 captures); the same check names
    it, and nothing else."""
    tools = installed_tools(infra(running_lab.router.name))
    evidence.update(tools=tools)
    assert tools == ["tcpdump"]
