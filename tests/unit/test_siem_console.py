"""The siem console's pages (roles/siem/files/pacslab_siem.py console_page, the templates of
roles/siem/files/console) rendered from a store in memory: what each page lists, that every value a
sender controls is escaped, and what has no page. The live console, over HTTPS in a browser, is
tests/integration/test_siem_console.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from .test_detections import siem

PAGES = Path(__file__).parent.parent.parent / "roles" / "siem" / "files" / "console"
HOSTILE_AE = '<script>alert("ae")</script>'
HOSTILE_MESSAGE = 'Rejected association for remote AET <img src=x onerror=alert(1)> on IP 10.77.30.10 & "more"'


def _event(db: Any, **fields: Any) -> int:
    return siem.store(db, {"time": "2026-12-02T10:00:00.000Z", "host": "pacs", "source": "orthanc", **fields})


@pytest.fixture
def db() -> Any:
    """Two alerts, the second about an AE title and an event with markup in them, each with its case."""
    db = siem.connect(Path(":memory:"))
    first = _event(db, event_type="ssh-login-failure", user="guess1", src_ip="10.77.90.11", src_host="vendor-eng", message="Failed password")
    second = _event(db, event_type="dicom-association-rejected", calling_ae=HOSTILE_AE, src_ip="10.77.30.10", message=HOSTILE_MESSAGE)
    for case, (host, owner, zone, criticality, address) in enumerate(
            [("vendor-eng", "vendor", "internet", "low", "10.77.90.11"), ("mod-ct", "biomed", "modality", "high", "10.77.30.10")], start=1):
        db.execute("INSERT INTO cases (id, host, severity, owner, zone, criticality, address, opened, updated)"
                   " VALUES (?, ?, 'medium', ?, ?, ?, ?, 'o', 'u')", (case, host, owner, zone, criticality, address))
    for alert, (rule, entities, events) in enumerate(
            [("ssh-brute-force", {"src_ip": "10.77.90.11"}, [first]),
             ("unknown-ae", {"calling_ae": HOSTILE_AE, "src_ip": "10.77.30.10"}, [second])], start=1):
        db.execute("INSERT INTO alerts (id, rule_id, rule, title, severity, entities, events, first_seen, last_seen, raised, updated, case_id)"
                   " VALUES (?, 'x', ?, ?, 'medium', ?, ?, 'f', 'l', 'r', 'u', ?)",
                   (alert, rule, f"title of {rule}", json.dumps(entities), json.dumps(events), alert))
    return db


@pytest.fixture(scope="module")
def pages() -> Any:
    return siem.console_pages(PAGES)


def rows(html: str, table: str) -> list[list[str]]:
    """The body rows of the table with that id, each cell's text (tags dropped, entities kept)."""
    body = re.search(rf'<table id="{table}"[^>]*>.*?<tbody>(.*?)</tbody>', html, re.S)
    assert body, f"no table {table}"
    return [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[dh]>(.*?)</t[dh]>", r, re.S)]
            for r in re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S)]


def test_the_index_lists_alerts_newest_first_and_their_cases(db: Any, pages: Any) -> None:
    status, html = siem.console_page(db, pages, "/")
    assert status == 200
    assert "<title>Alerts and cases - pacslab siem</title>" in html
    assert [r[:4] + r[6:] for r in rows(html, "alerts")] == [
        ["2", "unknown-ae", "medium", "calling_ae=&lt;script&gt;alert(&#34;ae&#34;)&lt;/script&gt;, src_ip=10.77.30.10", "1", "2"],
        ["1", "ssh-brute-force", "medium", "src_ip=10.77.90.11", "1", "1"]]
    assert [r[:10] for r in rows(html, "cases")] == [
        ["2", "mod-ct", "", "open", "medium", "biomed", "modality", "high", "10.77.30.10", "2"],
        ["1", "vendor-eng", "", "open", "medium", "vendor", "internet", "low", "10.77.90.11", "1"]]
    assert rows(html, "containment") == []
    assert "No containment decision." in html


def test_an_alert_s_page_lists_the_events_behind_it(db: Any, pages: Any) -> None:
    status, html = siem.console_page(db, pages, "/alerts/1")
    assert status == 200
    assert "<title>Alert 1 - pacslab siem</title>" in html
    assert rows(html, "alert")[-1] == ["Case", "1: vendor-eng (vendor, internet, low), open"]
    assert [r[1:7] + r[10:] for r in rows(html, "events")] == [
        ["2026-12-02T10:00:00.000Z", "pacs", "orthanc", "ssh-login-failure", "guess1", "10.77.90.11 (vendor-eng)", "", "Failed password"]]


def test_markup_a_sender_put_in_a_log_is_shown_as_text_never_run(db: Any, pages: Any) -> None:
    """An AE title and a log line are whatever reached the siem: both come out escaped, on the index
    and on the alert's page."""
    for path in ("/", "/alerts/2"):
        _, html = siem.console_page(db, pages, path)
        assert "<script" not in html and "<img" not in html, path
        assert "&lt;script&gt;alert(&#34;ae&#34;)&lt;/script&gt;" in html
    _, html = siem.console_page(db, pages, "/alerts/2")
    assert ("Rejected association for remote AET &lt;img src=x onerror=alert(1)&gt; on IP 10.77.30.10 &amp; &#34;more&#34;"
            in html)


@pytest.mark.parametrize("path", ["/alerts/3", "/alerts/x", "/alerts/1/", "/alerts", "/cases", "/../etc/passwd", "/%2e%2e/"])
def test_what_has_no_page_is_404(db: Any, pages: Any, path: str) -> None:
    status, html = siem.console_page(db, pages, path)
    assert status == 404
    assert "<h1>Not found</h1>" in html


def test_an_alert_s_page_lists_the_first_events_and_counts_the_rest(db: Any, pages: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [_event(db, event_type="fw-drop", src_ip="10.77.30.10", dst_port=str(p), message=f"drop {p}") for p in range(1, 8)]
    db.execute("UPDATE alerts SET events = ? WHERE id = 1", (json.dumps(ids),))
    monkeypatch.setattr(siem, "CONSOLE_EVENTS", 5)
    _, html = siem.console_page(db, pages, "/alerts/1")
    assert [r[0] for r in rows(html, "events")] == [str(i) for i in ids[:5]]
    assert "And 2 more (their ids: pacslab alerts --json)." in html



def test_an_alert_s_page_lists_the_captures_recorded_around_it(db: Any, pages: Any) -> None:
    _, html = siem.console_page(db, pages, "/alerts/1")
    assert rows(html, "captures") == [] and "None retrieved (pacslab capture 1)." in html
    siem.record_capture(db, 1, "alert-1.pcap", "cd" * 32, 9, 1200, "2026-12-02T09:55:00.000Z", "2026-12-02T10:05:00.000Z", True)
    _, html = siem.console_page(db, pages, "/alerts/1")
    assert [r[1:8] for r in rows(html, "captures")] == [
        ["alert-1.pcap", "cd" * 32, "9", "1200", "2026-12-02T09:55:00.000Z", "2026-12-02T10:05:00.000Z", "yes"]]
    _, html = siem.console_page(db, pages, "/alerts/2")
    assert rows(html, "captures") == []


def test_the_index_lists_the_newest_rows_and_counts_the_older(db: Any, pages: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(siem, "CONSOLE_ROWS", 1)
    _, html = siem.console_page(db, pages, "/")
    assert [r[0] for r in rows(html, "alerts")] == ["2"] and [r[0] for r in rows(html, "cases")] == ["2"]
    assert "And 1 older (pacslab alerts)." in html and "And 1 older (pacslab cases)." in html
