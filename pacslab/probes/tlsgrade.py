"""nmap's grade of a TLS listener: the protocol versions, cipher suites and least strength that
nmap's ``ssl-enum-ciphers`` script (nmap 7.93, Debian bookworm) reports for one port.

The scan runs in a throwaway tools-image container that joins a lab container's network namespace
(``docker run --network container:...``), so it leaves from that host's own address: from a peer it
crosses the fw as that peer's traffic would; from the listener's own namespace (the integration
checks) it stays inside the host. nmap is told not to resolve names (``-n``) and not to ping
(``-Pn``): it sends nothing but TCP to the one address and port it is given.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from ..docker import docker

SCRIPT = "ssl-enum-ciphers"


@dataclass(frozen=True)
class TlsGrade:
    """What ssl-enum-ciphers saw on one port.

    ``state``: nmap's port state ("open", "closed", "filtered"). ``protocols``: version name as nmap
    spells it ("TLSv1.2") -> {IANA suite name -> nmap's letter grade "A".."F"}. ``least_strength``:
    the script's overall grade, the weakest suite's letter ("" if the script did not run).
    ``warnings``: the script's warnings across versions (e.g. "64-bit block cipher 3DES ...").
    """

    state: str
    protocols: dict[str, dict[str, str]] = field(default_factory=dict)
    least_strength: str = ""
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        """The grade as plain data, for evidence and comparison with a written-out expectation."""
        return {"state": self.state, "least strength": self.least_strength,
                "protocols": {v: sorted(s) for v, s in sorted(self.protocols.items())}, "warnings": self.warnings}


def parse(xml_text: str, port: int) -> TlsGrade:
    """The grade of ``port`` in nmap's XML output (``-oX``). Raises ValueError when the output holds
    no such port (nmap did not scan it)."""
    root = ET.fromstring(xml_text)
    node = next((p for p in root.iter("port") if p.get("portid") == str(port)), None)
    if node is None:
        raise ValueError(f"nmap's output has no port {port}")
    state_node = node.find("state")
    state = state_node.get("state", "") if state_node is not None else ""
    script = next((s for s in node.iter("script") if s.get("id") == SCRIPT), None)
    if script is None:
        return TlsGrade(state=state)
    protocols: dict[str, dict[str, str]] = {}
    warnings: list[str] = []
    least = ""
    for child in script:
        key = child.get("key", "")
        if child.tag == "elem" and key == "least strength":
            least = child.text or ""
        elif child.tag == "table":
            suites: dict[str, str] = {}
            for table in child.findall("table"):
                if table.get("key") == "ciphers":
                    for suite in table.findall("table"):
                        fields = {e.get("key"): e.text or "" for e in suite.findall("elem")}
                        suites[fields.get("name", "")] = fields.get("strength", "")
                elif table.get("key") == "warnings":
                    warnings += [e.text or "" for e in table.findall("elem")]
            protocols[key] = suites
    return TlsGrade(state=state, protocols=protocols, least_strength=least, warnings=warnings)


def scan(from_container: str, tools_image: str, address: str, port: int, timeout: float = 180) -> TlsGrade:
    """Run ssl-enum-ciphers against ``address``:``port`` from ``from_container``'s network namespace.

    Raises subprocess.CalledProcessError if nmap fails, ValueError if its output lacks the port.
    """
    argv = ["nmap", "-n", "-Pn", "-sT", "-p", str(port), "--host-timeout", f"{int(timeout - 30)}s", "--script", SCRIPT, "-oX", "-", address]
    name = f"{from_container}-tlsgrade"  # named, so a scan the timeout cut is removed, not left in the peer's namespace
    docker("rm", "-f", name, check=False)
    try:
        out = docker("run", "--rm", "--name", name, "--network", f"container:{from_container}", tools_image, *argv, timeout=timeout).stdout
    finally:
        docker("rm", "-f", name, check=False)
    return parse(out, port)
