"""The imaging checks find their hosts, ports and AE titles in the loaded lab (issue 9 item 4):
what they derive for the reference lab and for tests/labs/alt (other subnets, AE titles, DICOM,
HL7 and gateway ports), written out by hand."""

from __future__ import annotations

import pytest

from pacslab.topology import REPO_ROOT, load_lab
from tests.integration import test_imaging as t

LABS = {"default": load_lab(REPO_ROOT / "inventories" / "default"), "alt": load_lab(REPO_ROOT / "tests" / "labs" / "alt")}
EXPECTED = {
    "default": {
        "stations": {"mod-ct": "CT01", "mod-mr": "MR01", "mod-legacy": "LEGACY01"},
        "legacy_targets": [("mod-legacy", "pacs", 2762), ("mod-legacy", "pacs", 104), ("mod-legacy", "pacs", 105)],
        "fronts": {"pacs-dicom": ("mod-ct", "pacs", 2762), "pacs-https": ("pacs", "pacs", 443), "ris-hl7": ("ws-tech", "ris", 2575)},
        "reader": ("ws-rad", "WSRAD01"),
    },
    "alt": {
        "stations": {"mod-ct": "CTSCAN9", "mod-mr": "MRSCAN9", "mod-legacy": "OLDCT9"},
        "legacy_targets": [("mod-legacy", "pacs", 11112), ("mod-legacy", "pacs", 4104), ("mod-legacy", "pacs", 4105)],
        "fronts": {"pacs-dicom": ("mod-ct", "pacs", 11112), "pacs-https": ("pacs", "pacs", 443), "ris-hl7": ("ws-tech", "ris", 2577)},
        "reader": ("ws-rad", "READ7"),
    },
}
# Both labs share the design: who trusts whom, which hosts hold a certificate.
TLS_HOSTS = ["ws-rad", "ws-tech", "mod-ct", "mod-mr", "ovl-gw", "pacs", "vna", "ris"]
PEERS = {
    "ws-rad": {"pacs"}, "ws-tech": {"ris"}, "mod-ct": {"pacs", "ris"}, "mod-mr": {"pacs", "ris"}, "ovl-gw": {"pacs", "ris"},
    "pacs": {"mod-ct", "mod-mr", "ovl-gw", "ws-rad", "vna"}, "vna": {"pacs"}, "ris": {"mod-ct", "mod-mr", "ovl-gw"},
}


@pytest.mark.parametrize("name", list(LABS))
def test_stations_and_the_legacy_device(name: str) -> None:
    lab = LABS[name]
    assert {h.name: h.ae_title for h in t.stations(lab)} == EXPECTED[name]["stations"]
    assert [h.name for h in t.tls_stations(lab)] == ["mod-ct", "mod-mr"]
    assert [h.name for h in t.legacy_stations(lab)] == ["mod-legacy"]
    gateway = t.gateway_of(lab, lab.hosts["mod-legacy"])
    assert gateway is not None and gateway.name == "ovl-gw"
    assert t._legacy_targets(lab) == EXPECTED[name]["legacy_targets"]


@pytest.mark.parametrize("name", list(LABS))
def test_services_and_roles(name: str) -> None:
    lab = LABS[name]
    assert t._fronts(lab) == EXPECTED[name]["fronts"]
    ws = t.reader(lab)
    assert (ws.name, ws.ae_title) == EXPECTED[name]["reader"]
    assert t.order_entry(lab).name == "ws-tech"
    assert [t.the(lab, g).name for g in ("pacs_servers", "vna_servers", "ris_servers", "pki_servers")] == ["pacs", "vna", "ris", "ca"]


@pytest.mark.parametrize("name", list(LABS))
def test_enrolled_hosts_and_their_peers(name: str) -> None:
    lab = LABS[name]
    assert [h.name for h in t.tls_hosts(lab)] == TLS_HOSTS  # mod-legacy has no certificate (pki_enrol: false)
    assert {h.name: t.tls_peers(lab, h) for h in t.tls_hosts(lab)} == PEERS
