"""Generated documentation: the README's control table and each role's variable table.

`python -m pacslab.docs` rewrites them from controls.yml and roles/*/meta/argument_specs.yml;
a unit test fails when they are stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .report import load_controls
from .topology import REPO_ROOT, safe_load

README = REPO_ROOT / "README.md"
BEGIN, END = "<!-- controls:begin (python -m pacslab.docs) -->", "<!-- controls:end -->"


def control_table() -> str:
    controls, source = load_controls()
    lines = [
        f"Mapping: {source}.",
        "",
        "| control | title | CSF v1.1 | status | enforced by |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in controls.values():
        status = {"implemented": "implemented", "partial": f"partial; not built yet: {c.missing}"}.get(c.status, "not implemented yet")
        roles = ", ".join(f"`{r}`" for r in c.roles) or "-"
        lines.append(f"| {c.id} | {c.title} | {', '.join(c.csf)} | {status} | {roles} |")
    return "\n".join(lines)


def role_readme(role: Path) -> str:
    specs = safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    defaults_file = role / "defaults" / "main.yml"
    defaults = safe_load(defaults_file.read_text()) if defaults_file.is_file() else {}
    out = [f"# Role `{role.name}`", "", "Generated from `meta/argument_specs.yml` by `python -m pacslab.docs`; do not edit.", ""]
    for entry, spec in specs.items():
        out += [f"## `{entry}`: {spec.get('short_description', '')}", "", "| variable | type | default | description |", "| --- | --- | --- | --- |"]
        for name, opt in (spec.get("options") or {}).items():
            default = defaults.get(name, opt.get("default", ""))
            default_text = f"`{default}`" if default != "" else ("required" if opt.get("required") else "")
            cells = [f"`{name}`", opt.get("type", "str"), default_text, opt.get("description", "")]
            out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")  # a Jinja filter's | would end the cell
        out.append("")
    if role.name == "ris":
        out += mapping_table()
    return "\n".join(out)


def mapping_table() -> list[str]:
    """The RIS's HL7 order -> DICOM worklist mapping, from pacslab.orders.MAPPING (the code that applies it)."""
    from .orders import MAPPING

    out = [
        "## HL7 ORM^O01 -> DICOM modality worklist item",
        "",
        "After the order-to-worklist mapping of the IHE Radiology Technical Framework (RAD-4 ORM v2.3.1 fields, PS3.4 K.6",
        "attributes). Each order group (ORC + OBR) of a message becomes one item; a message is scheduled whole or refused",
        "whole, with an error ACK (MSA AE/AR, ERR with the HL7 table 0357 code and the field). Generated from",
        "`pacslab/orders.py` (`MAPPING`) by `python -m pacslab.docs`.",
        "",
        "| DICOM tag | attribute | HL7 field | rule |",
        "| --- | --- | --- | --- |",
    ]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in MAPPING]
    out.append("")
    return out


def expected() -> dict[Path, str]:
    files: dict[Path, str] = {}
    text = README.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    files[README] = f"{head}{BEGIN}\n{control_table()}\n{END}{tail}"
    for role in sorted((REPO_ROOT / "roles").iterdir()):
        if (role / "meta" / "argument_specs.yml").is_file():
            files[role / "README.md"] = role_readme(role)
    return files


def main() -> int:
    for path, content in expected().items():
        if not path.is_file() or path.read_text() != content:
            path.write_text(content)
            print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
