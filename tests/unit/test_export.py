"""`pacslab export`: the fw's ruleset and the flow matrix (CSV, Markdown) from a lab definition,
without Docker. Expected rows are written out from inventories/default/group_vars/all/flows.yml."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from pacslab import cli
from pacslab.export import flows_csv, flows_markdown
from pacslab.firewall import render
from pacslab.topology import REPO_ROOT, load_lab

from .conftest import DEFAULT_LAB, mutate

LAB = load_lab(DEFAULT_LAB)


def test_the_csv_has_one_row_per_flow_routed_first() -> None:
    text = flows_csv(LAB)
    assert text.splitlines()[1] == (
        "F01,mod-ct;mod-mr;ovl-gw,10.77.30.10;10.77.30.11;10.77.31.20,pacs,10.77.40.10,tcp,2762,"
        "DICOM C-ECHO/C-STORE over TLS from modalities and the legacy overlay gateway,PR.AC-5;PR.DS-2,fw,"
    )
    rows = list(csv.DictReader(io.StringIO(text)))
    by_id = {r["id"]: r for r in rows}
    assert len(rows) == len(LAB.flows) + len(LAB.zone_flows)
    assert by_id["F04"]["enforced_by"] == "zone" and by_id["F04"]["to"] == "vna" and by_id["F04"]["ports"] == "2762"
    assert by_id["F08b"]["service"] == ""  # the PACS's maintenance sshd runs
    alt = {r["id"]: r for r in csv.DictReader(io.StringIO(flows_csv(load_lab(REPO_ROOT / "tests" / "labs" / "alt"))))}
    assert alt["F08b"]["service"] == "planned"  # the second lab has no bastion yet
    assert [r["enforced_by"] for r in rows] == sorted((r["enforced_by"] for r in rows), key=lambda e: e != "fw")


def test_markdown_escapes_a_pipe_in_a_cell(lab_copy: Path) -> None:
    mutate(lab_copy, lambda h, lv, f: f["lab_flows"][0].update(purpose="DICOM | TLS"))
    table = flows_markdown(load_lab(lab_copy))
    assert table.splitlines()[0].startswith("| id | from | from_addresses | to |")
    assert "| DICOM \\| TLS |" in table.splitlines()[2]


def test_export_writes_the_ruleset_the_fw_loads_and_both_tables(tmp_path: Path, capsys) -> None:
    assert cli.main(["export", "--lab", str(DEFAULT_LAB), "--out", str(tmp_path)]) == cli.EXIT_OK
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flows.csv", "flows.md", "ruleset.nft"]
    assert (tmp_path / "ruleset.nft").read_text() == render(LAB)
    assert 'counter flow_F01 { comment "F01" }' in (tmp_path / "ruleset.nft").read_text()
    assert str(tmp_path / "flows.csv") in capsys.readouterr().out


def test_export_of_a_broken_definition_is_refused(lab_copy: Path, tmp_path: Path) -> None:
    mutate(lab_copy, lambda h, lv, f: f["lab_flows"][0].update(ports=[70000]))
    assert cli.main(["export", "--lab", str(lab_copy), "--out", str(tmp_path / "out")]) == cli.EXIT_BAD_LAB
    assert not (tmp_path / "out").exists()
