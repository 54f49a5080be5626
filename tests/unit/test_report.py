"""The report groups controls by CSF function and never shows a waived control as passed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pacslab.report import build, render_html, write_report
from pacslab.topology import Waiver, load_lab

from .conftest import DEFAULT_LAB

LAB = load_lab(DEFAULT_LAB)


def result(control: str | None, outcome: str, name: str = "t") -> dict:
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
