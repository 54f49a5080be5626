"""The report groups controls by CSF function; a control is passed only when every one of its tests
ran and passed (never with a test skipped, errored or left out, never when waived). Its header says
when the verify ran, on which commit, with what totals, and whether the results are missing or stale."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pacslab import report
from pacslab.report import build, record_verify, render_html, run_state, write_report
from pacslab.topology import Waiver, load_lab

from .conftest import DEFAULT_LAB

LAB = load_lab(DEFAULT_LAB)


def result(control: str | None, outcome: str, name: str = "t", message: str | None = None) -> dict:
    if message is None:
        message = "boom" if outcome == "failed" else ""
    return {"nodeid": f"tests/x.py::{name}", "control": control, "outcome": outcome, "seconds": 0.1, "evidence": {"seen": 1}, "message": message}


def test_verdicts() -> None:
    lab = replace(LAB, waivers=(Waiver("C-AST-03", "rules are reviewed by hand in this hospital"),))
    data = build(lab, [result("C-ACC-04", "passed"), result("C-ACC-04", "failed", "u"), result("C-AST-03", "passed"), result(None, "passed")])
    assert data["controls"]["C-ACC-04"]["verdict"] == "failed"
    assert data["controls"]["C-AST-03"]["verdict"] == "waived"  # passed tests do not turn a waiver into a pass
    assert data["controls"]["C-DAT-01"]["verdict"] == "not implemented"
    assert data["controls"]["C-ACC-04"]["failures"][0]["message"] == "boom"
    assert data["platform_tests"]["passed"] == 1


def test_a_partial_control_is_never_shown_as_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A control the catalogue says is partly built (here C-ACC-07 as it was before the check in a
    real browser: no control is partial today): its tests all passing reads "partial" with what is
    missing; one failing still reads "failed"."""
    controls, source = report.load_controls()
    missing = "the same in a real browser (Chromium driven by Playwright), with the screenshot as evidence"
    partial = controls | {"C-ACC-07": replace(controls["C-ACC-07"], status="partial", missing=missing)}
    monkeypatch.setattr(report, "load_controls", lambda: (partial, source))
    passed = build(LAB, [result("C-ACC-07", "passed"), result("C-ACC-07", "passed", "u")])
    assert passed["controls"]["C-ACC-07"]["verdict"] == "partial"
    assert f"not built yet: {missing}" in render_html(passed)
    assert passed["controls"]["C-ACC-07"]["missing"] == missing
    failed = build(LAB, [result("C-ACC-07", "passed"), result("C-ACC-07", "failed", "u")])
    assert failed["controls"]["C-ACC-07"]["verdict"] == "failed"
    assert build(LAB, [])["controls"]["C-ACC-07"]["verdict"] == "not run"


def test_implemented_without_results_is_not_run() -> None:
    assert build(LAB, [])["controls"]["C-ACC-04"]["verdict"] == "not run"


def test_grouped_by_csf_function_and_subcategory() -> None:
    data = build(LAB, [])
    assert list(data["functions"]) == ["Identify", "Protect", "Detect", "Respond", "Recover"]
    assert "C-ACC-04" in data["functions"]["Protect"]["PR.AC-5"]
    assert "C-AST-03" in data["functions"]["Identify"]["ID.AM-3"]


def test_flow_matrix_lists_every_allowed_flow(tmp_path: Path) -> None:
    page, js = write_report(LAB, tmp_path / "none.json", tmp_path)
    html = page.read_text()
    for flow in LAB.flows:
        assert f"<td>{flow.id}</td>" in html
    assert "unverified against SP 1800-24B" in html  # evidence label travels with the mapping
    assert render_html(build(LAB, [])).count("<h2>") >= 7


# Hand-written records, one control (C-ACC-04) per case: the records of a run and the verdict a
# reader must see. Written out, not derived from report.verdict.
VERDICT_CASES = {
    "all-passed": ([("a", "passed"), ("b", "passed")], "passed"),
    "one-skipped": ([("a", "passed"), ("b", "skipped")], "incomplete"),
    "one-deselected": ([("a", "passed"), ("b", "deselected")], "incomplete"),
    "unknown-outcome": ([("a", "passed"), ("b", "xpassed")], "incomplete"),
    "only-skipped": ([("a", "skipped"), ("b", "skipped")], "not run"),
    "only-deselected": ([("a", "deselected")], "not run"),
    "setup-error": ([("a", "passed"), ("b", "error")], "failed"),
    "failed-and-skipped": ([("a", "failed"), ("b", "skipped")], "failed"),
    "passed-then-teardown-error": ([("a", "passed"), ("a", "error")], "failed"),
}


@pytest.mark.parametrize("case", list(VERDICT_CASES))
def test_a_control_is_passed_only_when_every_test_ran_and_passed(case: str) -> None:
    records, expected = VERDICT_CASES[case]
    data = build(LAB, [result("C-ACC-04", outcome, name) for name, outcome in records])
    assert data["controls"]["C-ACC-04"]["verdict"] == expected


def test_an_incomplete_control_names_the_tests_that_did_not_run_and_why() -> None:
    records = [
        result("C-ACC-04", "passed", "test_allowed"),
        result("C-ACC-04", "skipped", "test_flood", "no scanner in this lab"),
        result("C-ACC-04", "deselected", "test_revoked", "deselected in this run (-k/-m)"),
    ]
    entry = build(LAB, records)["controls"]["C-ACC-04"]
    assert entry["verdict"] == "incomplete"
    assert entry["not_run"] == [
        {"test": "tests/x.py::test_flood", "outcome": "skipped", "reason": "no scanner in this lab"},
        {"test": "tests/x.py::test_revoked", "outcome": "deselected", "reason": "deselected in this run (-k/-m)"},
    ]
    assert entry["tests"] == {"passed": 1, "failed": 0, "error": 0, "skipped": 1, "deselected": 1}


def test_an_error_is_listed_with_the_failures() -> None:
    entry = build(LAB, [result("C-ACC-04", "passed", "a"), result("C-ACC-04", "error", "b", "fixture 'x' broke")])["controls"]["C-ACC-04"]
    assert entry["failures"] == [{"test": "tests/x.py::b", "outcome": "error", "message": "fixture 'x' broke", "evidence": {"seen": 1}}]


def test_summary_counts_incomplete_controls() -> None:
    data = build(LAB, [result("C-ACC-04", "passed", "a"), result("C-ACC-04", "skipped", "b")])
    assert data["summary"]["incomplete"] == 1
    assert data["summary"]["passed"] == 0


def test_the_page_shows_an_incomplete_control_and_its_skip_reason() -> None:
    page = render_html(build(LAB, [result("C-ACC-04", "passed", "a"), result("C-ACC-04", "skipped", "b", "no <scanner>")]))
    row = next(r for r in page.split("<tr>") if "C-ACC-04" in r)
    assert ">incomplete</span>" in row
    assert "1 passed, 0 failed, 1 skipped" in row
    assert "tests/x.py::b (skipped): no &lt;scanner&gt;" in row


def test_a_waived_control_stays_waived_whatever_its_tests_did() -> None:
    lab = replace(LAB, waivers=(Waiver("C-ACC-04", "segmentation is the hospital network's"),))
    for outcome in ("passed", "failed", "skipped"):
        assert build(lab, [result("C-ACC-04", outcome)])["controls"]["C-ACC-04"]["verdict"] == "waived"


# ------------------------------------------------------------------------------------------------
# The header: when the verify ran, on which commit, its totals; stale or missing results


VERIFY_START, VERIFY_END = datetime(2026, 11, 30, 9, 0, tzinfo=UTC), datetime(2026, 11, 30, 9, 3, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("has_record", "last_up", "has_results", "stale"),
    [
        (True, datetime(2026, 11, 30, 8, 58, tzinfo=UTC), True, ""),
        (True, datetime(2026, 11, 30, 9, 1, tzinfo=UTC), True, ""),  # the lifecycle checks' own up, inside the run
        (True, datetime(2026, 11, 30, 9, 10, tzinfo=UTC), True, "the lab was brought up again at 2026-11-30T09:10:00+00:00, after this verify"),
        (True, None, False, "no verify results: run `pacslab verify`"),
        (False, None, True, "the results carry no record of their verify run"),
    ],
    ids=["fresh", "up-during-verify", "up-after-verify", "no-results", "no-run-record"],
)
def test_the_header_says_when_results_are_missing_or_stale(tmp_path, has_record, last_up, has_results, stale) -> None:
    record = None
    if has_record:
        record_verify(tmp_path, VERIFY_START, VERIFY_END, lifecycle=True, pytest_exit=0)
        record = json.loads((tmp_path / "run.json").read_text())
    run = run_state(record, last_up, has_results)
    assert run["stale"].startswith(stale) if stale else run["stale"] == ""
    if has_record:
        assert run["started"] == "2026-11-30T09:00:00+00:00" and run["seconds"] == 210.0 and run["lifecycle"] is True
        assert len(run["commit"]) == 40 and run["dirty"] in (True, False)  # this checkout's HEAD


def test_the_page_and_document_carry_the_header(tmp_path) -> None:
    record_verify(tmp_path, VERIFY_START, VERIFY_END, lifecycle=False, pytest_exit=1)
    run = run_state(json.loads((tmp_path / "run.json").read_text()), datetime(2026, 11, 30, 9, 10, tzinfo=UTC), True)
    data = build(LAB, [result("C-ACC-04", "passed", "a"), result(None, "failed", "b")], run)
    assert data["totals"] == {"passed": 1, "failed": 1, "error": 0, "skipped": 0, "deselected": 0}
    assert data["generated"] >= "2026-11-30"
    page = render_html(data)
    assert "<th>verify</th><td>2026-11-30T09:00:00+00:00 to 2026-11-30T09:03:30+00:00 (210.0 s), steady checks only</td>" in page
    assert f"<th>commit</th><td>{run['commit'][:12]}" in page
    assert "<th>tests</th><td>1 passed, 1 failed" in page
    assert "<p class='stale'><strong>Stale:</strong> the lab was brought up again at 2026-11-30T09:10:00+00:00" in page


@pytest.mark.parametrize("record", [{}, {"finished": None}, {"finished": "yesterday"}, ["not", "an", "object"]],
                         ids=["empty", "null-finished", "bad-date", "not-an-object"])
def test_an_unreadable_run_record_counts_as_none(record) -> None:
    run = run_state(record, datetime(2026, 11, 30, 9, 10, tzinfo=UTC), True)
    assert run["stale"] == "the results carry no record of their verify run (when, on which commit)"
    assert run["started"] is None and run["last_up"] == "2026-11-30T09:10:00+00:00"


def test_every_case_of_a_control_is_in_its_table_linked_from_its_row() -> None:
    """Not 20 samples: each of a control's cases, with what it observed (here 30 denied cases and
    their NFLOG lines, and a failure with its message)."""
    denied = [
        {"nodeid": f"tests/integration/test_segmentation.py::test_denied_flow_is_dropped_and_logged[deny-zone:internet-pacs-tcp{port}]",
         "control": "C-ACC-04", "outcome": "passed", "seconds": 0.0, "message": "",
         "evidence": {"outcome": "dropped", "nflog": {"timestamp": f"2026-11-30T08:23:42.{port:06d}", "dest_port": port}}}
        for port in range(1000, 1030)
    ]
    failed = {"nodeid": "tests/integration/test_segmentation.py::test_allowed_flow_connects[allow-F01-mod-ct-pacs-tcp2762]",
              "control": "C-ACC-04", "outcome": "failed", "seconds": 0.0, "message": "timeout", "evidence": {"outcome": "timeout"}}
    data = build(LAB, [*denied, failed])
    assert len(data["controls"]["C-ACC-04"]["cases"]) == 31
    page = render_html(data)
    row = next(r for r in page.split("<tr>") if "C-ACC-04 " in r and "class='v'" in r)
    assert "<a href='#cases-C-ACC-04'>every case</a>" in row
    table = page.split("<details id='cases-C-ACC-04'>", 1)[1].split("</details>", 1)[0]
    assert table.count("<tr><td>test_denied_flow_is_dropped_and_logged</td><td>deny-zone:internet-pacs-tcp") == 30
    assert ("<td>deny-zone:internet-pacs-tcp1007</td><td>passed</td><td><small>outcome=dropped; "
            "nflog.timestamp=2026-11-30T08:23:42.001007; nflog.dest_port=1007</small></td>") in table
    assert "<td>allow-F01-mod-ct-pacs-tcp2762</td><td>failed</td><td><small>timeout; outcome=timeout</small></td>" in table


def test_a_screenshot_named_in_evidence_is_embedded_in_its_control_s_row(tmp_path: Path) -> None:
    """The page is one file: the PNG a test saved beside the results is in its control's row as a
    data URI, captioned with the test and its outcome; report.json keeps the path only. A path that
    does not hold a PNG is named as missing, never shown as evidence."""
    png = b"\x89PNG\r\n\x1a\n" + b"pixels"
    (tmp_path / "evidence").mkdir()
    (tmp_path / "evidence" / "viewer.png").write_bytes(png)
    shot = result("C-ACC-07", "passed", "test_viewer") | {"evidence": {"screenshot": "evidence/viewer.png"}}
    gone = result("C-ACC-07", "passed", "test_gone") | {"evidence": {"screenshot": "evidence/gone.png"}}
    (tmp_path / "results.json").write_text(json.dumps([shot, gone]))
    page, js = write_report(LAB, tmp_path / "results.json", tmp_path)
    assert json.loads(js.read_text())["controls"]["C-ACC-07"]["screenshots"] == [
        {"test": "tests/x.py::test_viewer", "outcome": "passed", "path": "evidence/viewer.png"},
        {"test": "tests/x.py::test_gone", "outcome": "passed", "path": "evidence/gone.png"}]
    row = next(r for r in page.read_text().split("<tr>") if "C-ACC-07 " in r and "class='v'" in r)
    assert ("<details><summary>screenshot</summary><figure><img alt='screenshot' style='max-width:100%' "
            "src='data:image/png;base64,iVBORw0KGgpwaXhlbHM='><figcaption><small>tests/x.py::test_viewer (passed)</small></figcaption>") in row
    assert "<em>screenshot evidence/gone.png missing</em>" in row
    assert "data:image/png" not in render_html(build(LAB, [shot]))  # no folder given: nothing read
