"""Inside the fresh container: the venv that `make` made runs on Debian's Python, and every
third-party module pacslab needs on the host imports from it.

Run as ``.venv/bin/python tests/fresh/check_imports.py`` from the repository root. Prints one line
per module; exits 0 when all import, 1 with the failures listed otherwise.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.fresh.imports import modules_to_import  # noqa: E402

DEBIAN_PYTHON = "/usr/bin/python3.11"  # bookworm's python3 (3.11.2)


def main() -> int:
    problems: list[str] = []
    base = os.path.realpath(sys._base_executable)  # the interpreter the venv was made from
    print(f"venv {sys.prefix} made from {base} (Python {sys.version.split()[0]}, base prefix {sys.base_prefix})")
    if sys.prefix == sys.base_prefix:
        problems.append(f"{sys.executable} is not a virtual environment")
    if base != DEBIAN_PYTHON or sys.base_prefix != "/usr" or sys.version_info[:2] != (3, 11):
        problems.append(f"the venv's interpreter is {base} {sys.version_info[:3]} under {sys.base_prefix}, not Debian's {DEBIAN_PYTHON}")
    for module, why in modules_to_import().items():
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - any failure to import is the finding
            problems.append(f"import {module} ({why}): {type(exc).__name__}: {exc}")
            print(f"  FAIL {module}")
        else:
            print(f"  ok   {module}  ({why})")
    for p in problems:
        print(f"fresh: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
