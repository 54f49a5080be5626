"""The project refers to nothing outside itself: no path into the development workspace (the team's
shared notes), and every docs/ file a source, role or README names exists in the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from pacslab.topology import REPO_ROOT

SKIP = {".git", ".venv", ".pacslab", ".mypy_cache", ".ruff_cache", "__pycache__"}
# Built from pieces, so that this file does not match itself.
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", "shared/" + "reference", "ARCHI" + r"TECTURE(?:\.md| section| \d)",
                               "STY" + r"LE(?:\.md|:)", "platform" + "-notes"]))


def project_files() -> list[Path]:
    """The repository's files as git lists them (tracked and untracked, not ignored): what a clone holds."""
    listing = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                             capture_output=True, text=True, check=True).stdout.splitlines()
    return [REPO_ROOT / name for name in listing if (REPO_ROOT / name).is_file() and not SKIP & set(Path(name).parts)
            and Path(name).suffix in {".py", ".md", ".yml", ".yaml", ".j2", ".cfg", ".toml", ".txt", ".sh", ".conf", ""}]


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
