"""The lab's own tools (dicomsim, orders, ca, run inside the containers) say what each subcommand and
option does: `--help` lists every subcommand with its help line, and each subcommand's options
carry a description."""

from __future__ import annotations

import contextlib
import importlib
import io
import re

import pytest

TOOLS = ["dicomsim", "orders", "ca"]


def helptext(tool: str, *args: str) -> str:
    """``<tool> [args] --help``, run in this process (argparse prints and exits 0)."""
    module = importlib.import_module(f"pacslab.{tool}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        module.main([*args, "--help"])
    assert done.value.code == 0
    return out.getvalue()


def subcommands(text: str) -> list[str]:
    return re.search(r"\{([^}]+)\}", text).group(1).split(",")  # type: ignore[union-attr]


@pytest.mark.parametrize("tool", TOOLS)
def test_every_subcommand_has_a_help_line(tool: str) -> None:
    text = helptext(tool)
    for name in subcommands(text):
        line = re.search(rf"^    {re.escape(name)}(\s+)(\S.*)?$", text, re.M)
        assert line and line.group(2), f"{tool} {name}: no help line in --help"


@pytest.mark.parametrize("tool", TOOLS)
def test_every_option_of_every_subcommand_is_described(tool: str) -> None:
    for name in subcommands(helptext(tool)):
        text = helptext(tool, name)
        options = text.split("options:", 1)[1].splitlines()
        for i, line in enumerate(options):
            m = re.match(r"^  (-\S.*?)(?:\s{2,}(\S.*))?$", line)
            if not m or m.group(1).startswith("-h, --help"):
                continue
            described = m.group(2) or (i + 1 < len(options) and options[i + 1].startswith(" " * 10))
            assert described, f"{tool} {name}: option {m.group(1)!r} has no description"
