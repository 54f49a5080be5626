"""The project refers to nothing outside itself: no path into the development workspace (the team's
shared notes), and every docs/ file a source, role or README names exists in the repository."""

from __future__ import annotations

import re

from pacslab.topology import REPO_ROOT

SKIP = {".git", ".venv", ".pacslab", ".mypy_cache", ".ruff_cache", "__pycache__"}
# Built from pieces, so that this file does not match itself.
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", "shared/" + "reference", "ARCHI" + r"TECTURE(?:\.md| section| \d)",
                               "STY" + r"LE(?:\.md|:)", "platform" + "-notes"]))


def project_files() -> list:
    return [p for p in REPO_ROOT.rglob("*") if p.is_file() and not SKIP & set(p.relative_to(REPO_ROOT).parts)
            and p.suffix in {".py", ".md", ".yml", ".yaml", ".j2", ".cfg", ".toml", ".txt", ".sh", ".conf", ""}]


def test_nothing_points_outside_the_repository() -> None:
    found = []
    for path in project_files():
        text = path.read_text(errors="replace")
        found += [f"{path.relative_to(REPO_ROOT)}: {m.group(0)}" for m in OUTSIDE.finditer(text)]
    assert not found, found


def test_every_docs_file_named_exists() -> None:
    missing = set()
    for path in project_files():
        for name in re.findall(r"\bdocs/[\w./-]+\.md", path.read_text(errors="replace")):
            if not (REPO_ROOT / name).is_file():
                missing.add(f"{path.relative_to(REPO_ROOT)}: {name}")
    assert not missing, sorted(missing)
