"""pacslab.probes.tlsgrade.parse on nmap 7.93's XML (excerpts of real ssl-enum-ciphers output)."""

from __future__ import annotations

import pytest

from pacslab.probes.tlsgrade import TlsGrade, parse

SUITE = '<table><elem key="name">{}</elem><elem key="kex_info">secp256r1</elem><elem key="strength">{}</elem></table>'


def port_xml(port: int, script: str = "", state: str = "open") -> str:
    return (f'<?xml version="1.0"?><nmaprun><host><ports><port protocol="tcp" portid="{port}"><state state="{state}" reason="syn-ack"/>'
            f'<service name="dicom-tls"/>{script}</port></ports></host></nmaprun>')


GOOD = ('<script id="ssl-enum-ciphers" output="...">'
        '<table key="TLSv1.2"><table key="ciphers">' + SUITE.format("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "A")
        + '</table><table key="compressors"><elem>NULL</elem></table><elem key="cipher preference">client</elem></table>'
        '<table key="TLSv1.3"><table key="ciphers">' + SUITE.format("TLS_AKE_WITH_AES_128_GCM_SHA256", "A")
        + '</table><elem key="cipher preference">client</elem></table><elem key="least strength">A</elem></script>')

WEAK = ('<script id="ssl-enum-ciphers" output="...">'
        '<table key="TLSv1.0"><table key="ciphers">' + SUITE.format("TLS_DH_anon_WITH_AES_128_CBC_SHA", "F")
        + SUITE.format("TLS_RSA_WITH_3DES_EDE_CBC_SHA", "C") + '</table><table key="warnings">'
        '<elem>Anonymous key exchange, score capped at F</elem><elem>64-bit block cipher 3DES vulnerable to SWEET32 attack</elem>'
        '</table></table><elem key="least strength">F</elem></script>')


def test_versions_suites_and_least_strength() -> None:
    grade = parse(port_xml(2762, GOOD), 2762)
    assert grade == TlsGrade(state="open", protocols={"TLSv1.2": {"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "A"},
                                                      "TLSv1.3": {"TLS_AKE_WITH_AES_128_GCM_SHA256": "A"}}, least_strength="A")
    assert grade.summary() == {"state": "open", "least strength": "A", "warnings": [], "protocols": {
        "TLSv1.2": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"], "TLSv1.3": ["TLS_AKE_WITH_AES_128_GCM_SHA256"]}}


def test_warnings_and_weak_grades_are_kept() -> None:
    grade = parse(port_xml(2762, WEAK), 2762)
    assert grade.least_strength == "F"
    assert grade.protocols == {"TLSv1.0": {"TLS_DH_anon_WITH_AES_128_CBC_SHA": "F", "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "C"}}
    assert grade.warnings == ["Anonymous key exchange, score capped at F", "64-bit block cipher 3DES vulnerable to SWEET32 attack"]


def test_a_port_without_the_script_has_no_grade() -> None:
    """A closed port, or one nmap does not take for TLS: no versions, no grade (never a pass)."""
    assert parse(port_xml(2762, state="closed"), 2762) == TlsGrade(state="closed")
    assert parse(port_xml(4762), 4762).least_strength == ""


def test_a_port_nmap_did_not_scan_is_an_error() -> None:
    with pytest.raises(ValueError, match="no port 104"):
        parse(port_xml(2762, GOOD), 104)
