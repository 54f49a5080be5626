"""The IDS sensor (issue 13; C-DET-01, DE.CM-1): Suricata on the sensor watches a copy of every
packet the fw forwards (nftables dup, roles/firewall) with the lab's own rules
(roles/sensor/files/pacslab.rules), and its EVE JSON reaches the siem (roles/log_shipping) as
events of source suricata, where the Sigma rules of roles/siem/files/rules/ids.yml raise alerts.

Each check provokes from a modality of the reference lab, which stays as it is: the fw lets the
modality's zone reach the PACS's DICOM TLS port, so a cleartext association or a TLS 1.1 hello
crosses the zone and the PACS refuses it; the sensor sees what crossed. The twin: a DICOM TLS
association (TLS 1.2 or later) from the same modality crosses the same way, the sensor records
its handshake, and no IDS alert names the modality."""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest

from pacslab.probes import imaging as im
from pacslab.probes import portscan
from pacslab.topology import Host, Lab

from .test_imaging import tls_stations
from .test_siem import evaluated_after, pacs_of, siem_json, utc_now, wait_for

SENSORS = "sensors"
CLEARTEXT_RQ, WEAK_CLIENT_HELLO, SYN_BURST = "9000001", "9000011", "9000021"  # roles/sensor/files/pacslab.rules, written out
# The versions Suricata's TLS record names below 1.2. A record may say UNDETERMINED: Suricata did not
# parse a version out of the ServerHello (seen on the modalities' TLS 1.3 associations).
WEAK = {"SSLv2", "SSLv3", "TLSv1", "TLS 1.1"}


def sensor(lab: Lab) -> Host:
    hosts = [h for h in lab.group(SENSORS) if h.deployed]
    if not hosts:
        pytest.skip(f"lab {lab.name!r} deploys no sensor")
    return hosts[0]


def eve(lab: Lab, station: Host, since: int = 0) -> list[dict[str, Any]]:
    """The siem's events of the sensor's EVE records whose source address is the station's, after event ``since``."""
    return [e for e in siem_json(lab, "events", "--since-id", str(since), "--contains", f'"src_ip":"{station.address}"')
            if e["source"] == "suricata" and e["src_ip"] == str(station.address)]


def mark(lab: Lab, station: Host) -> int:
    """The newest event id of the station's EVE records (0: none yet)."""
    return max((e["id"] for e in eve(lab, station)), default=0)


def to_pacs(events: list[dict[str, Any]], pacs: Host) -> list[dict[str, Any]]:
    return [e for e in events if e["dst_ip"] == str(pacs.address) and str(e["dst_port"]) == str(pacs.dicom_port)]


@pytest.mark.control("C-DET-01")
def test_a_tls_association_across_a_zone_is_seen_and_raises_no_ids_alert(running_lab: Lab, evidence) -> None:
    """The twin: a C-ECHO over DICOM TLS from a modality to the PACS is established; the sensor
    records its handshake (ids-tls, no version below 1.2) and raises no alert about the modality."""
    lab = running_lab
    sensor(lab)
    pacs, station = pacs_of(lab), tls_stations(lab)[0]
    since = mark(lab, station)
    echo = im.dicomsim(lab, station.name, "echo")
    handshakes = wait_for("the sensor's record of the TLS handshake",
                          lambda: to_pacs([e for e in eve(lab, station, since) if e["event_type"] == "ids-tls"], pacs))
    alerts = [e for e in eve(lab, station, since) if e["event_type"] == "ids-alert"]
    evidence.update(echo=echo.get("outcome"), handshakes=[e["outcome"] for e in handshakes], ids_alerts=alerts)
    assert echo["established"]
    assert handshakes and all(e["outcome"] not in WEAK for e in handshakes), handshakes
    assert alerts == []


def provoke(lab: Lab, sid: str, rule: str, *echo_args: str) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """A C-ECHO from the first TLS station to the PACS with ``echo_args``; what it answered, the
    sensor's alerts of ``sid`` about it at the siem (after this call began), and the siem's
    alert of ``rule`` holding them."""
    sensor(lab)
    pacs, station = pacs_of(lab), tls_stations(lab)[0]
    since = mark(lab, station)
    echo = im.dicomsim(lab, station.name, "echo", *echo_args)
    seen = wait_for(f"the sensor's alert {sid}", lambda: to_pacs(
        [e for e in eve(lab, station, since) if e["event_type"] == "ids-alert" and e["signature_id"] == sid], pacs))
    ids = {e["id"] for e in seen}
    alert = wait_for(rule, lambda: [a for a in siem_json(lab, "alerts") if a["rule"] == rule and ids & set(a["events"])])[0]
    return echo, seen, alert


@pytest.mark.control("C-DET-01")
def test_a_cleartext_association_across_a_zone_raises_ids_cleartext_dicom(running_lab: Lab, evidence) -> None:
    """A modality opens an association without TLS to the PACS's DICOM TLS port (PS3.15 B.1 asks for
    TLS across the network): the PACS's TLS front refuses it, but its A-ASSOCIATE-RQ crossed the
    zone in clear. The sensor's alert (sid 9000001) reaches the siem naming the modality's address
    and the PACS's port, and raises ids-cleartext-dicom (medium) about the modality."""
    lab = running_lab
    echo, seen, alert = provoke(lab, CLEARTEXT_RQ, "ids-cleartext-dicom", "--tls", "cleartext")
    evidence.update(echo={k: echo.get(k) for k in ("outcome", "established")}, event=seen[0], alert=alert)
    assert not echo["established"]
    assert len(seen) == 1, seen  # one alert per connection
    assert (seen[0]["host"], seen[0]["proto"]) == (sensor(lab).name, "tcp")
    assert seen[0]["signature"].startswith("PACSLAB cleartext DICOM association request")
    assert (alert["severity"], alert["entities"]) == ("medium", {"src_ip": str(tls_stations(lab)[0].address)})


@pytest.mark.control("C-DET-01")
def test_a_tls_1_1_hello_across_a_zone_raises_ids_weak_tls(running_lab: Lab, evidence) -> None:
    """A modality offers only TLS 1.1 to the PACS (the PACS answers protocol_version, RFC 8446 6.2);
    its ClientHello crossed the zone: the sensor's alert (sid 9000011) names the modality, and the
    siem raises ids-weak-tls (medium) about it."""
    lab = running_lab
    echo, seen, alert = provoke(lab, WEAK_CLIENT_HELLO, "ids-weak-tls", "--tls-version", "TLSv1_1")
    evidence.update(echo={k: echo.get(k) for k in ("outcome", "tls_alert")}, event=seen[0], alert=alert)
    assert (echo["outcome"], echo["tls_alert"]) == ("tls-alert", "protocol-version")
    assert seen[0]["signature"].startswith("PACSLAB TLS below 1.2 offered by a client")
    assert (alert["severity"], alert["entities"]) == ("medium", {"src_ip": str(tls_stations(lab)[0].address)})


@pytest.mark.control("C-DET-01")
def test_a_burst_of_connections_across_a_zone_raises_ids_scan_and_fewer_do_not(running_lab: Lab, evidence) -> None:
    """A modality opens 25 TCP connections at once to the PACS's DICOM TLS port, which its zone may
    reach (one port: no distinct-port scan for the fw's port-scan rule). The fw's limit on new DICOM
    connections (C-PRT-05) lets some through and drops the rest (unanswered), but the sensor is sent
    a copy of each before the fw filters it: over the rule's 20
    SYNs within 10 s, so its alert (sid 9000021) names the modality and the siem raises ids-scan
    (medium, not contained) about it. The twin: 10 such connections from the other modality, after
    10 s of its silence, raise neither, judged once the sensor's record of that modality's next DICOM
    TLS association is at the siem (the sensor ships its records in order)."""
    lab = running_lab
    sensor(lab)
    pacs = pacs_of(lab)
    stations = tls_stations(lab)
    if len(stations) < 2:
        pytest.skip(f"lab {lab.name!r} has fewer than two TLS modalities")
    burst, few = stations[0], stations[1]
    since = {h.name: mark(lab, h) for h in (burst, few)}
    base = 23000 + secrets.randbelow(40) * 50
    answers = portscan.scan(lab, burst.name, str(pacs.address), (pacs.dicom_port,) * 25, base)
    seen = wait_for("the sensor's alert 9000021", lambda: [
        e for e in eve(lab, burst, since[burst.name]) if e["event_type"] == "ids-alert" and e["signature_id"] == SYN_BURST])
    ids = {e["id"] for e in seen}
    alert = wait_for("ids-scan", lambda: [a for a in siem_json(lab, "alerts") if a["rule"] == "ids-scan" and ids & set(a["events"])])[0]
    time.sleep(10)  # the other modality's SYNs of the last 10 s would count with the twin's
    quiet = portscan.scan(lab, few.name, str(pacs.address), (pacs.dicom_port,) * 10, base + 25)
    # Then a DICOM TLS association from the same modality: the sensor ships its records in order, so
    # once its handshake's record is at the siem, an alert about the ten would be there too.
    time.sleep(2)  # the fw's DICOM limit lets new connections of the modality through again
    assert im.dicomsim(lab, few.name, "echo")["established"]
    wait_for("the sensor's record of the handshake after the ten", lambda: to_pacs(
        [e for e in eve(lab, few, since[few.name]) if e["event_type"] == "ids-tls"], pacs))
    evaluated_after(lab, utc_now())
    after = [e for e in eve(lab, few, since[few.name]) if e["event_type"] == "ids-alert"]
    evidence.update(answers={a: answers.count(a) for a in set(answers)}, quiet={a: quiet.count(a) for a in set(quiet)},
                    event=seen[0], alert=alert, twin_alerts=after)
    assert "open" in answers and set(answers) <= {"open", "unanswered"} and len(answers) == 25, answers
    assert "open" in quiet and set(quiet) <= {"open", "unanswered"} and len(quiet) == 10, quiet
    assert seen[0]["signature"].startswith("PACSLAB TCP SYN scan or flood")
    assert (alert["severity"], alert["entities"]) == ("medium", {"src_ip": str(burst.address)})
    assert after == []
