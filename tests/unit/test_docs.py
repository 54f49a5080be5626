"""Generated docs are current: README control table, role variable tables."""

from __future__ import annotations

import pytest

from pacslab.docs import expected
from pacslab.topology import REPO_ROOT


@pytest.mark.parametrize("path", list(expected()), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_generated_doc_is_current(path) -> None:
    assert path.is_file() and path.read_text() == expected()[path], f"{path} is stale: run python -m pacslab.docs"


SPEC_KEYS = {"type", "default", "required", "description", "choices", "elements", "options"}


def _bad_keys(options: dict, where: str) -> list[str]:
    out = []
    for name, opt in (options or {}).items():
        out += [f"{where}.{name}: {k!r}" for k in set(opt) - SPEC_KEYS]
        out += _bad_keys(opt.get("options") or {}, f"{where}.{name}")
    return out


@pytest.mark.parametrize("spec", sorted(REPO_ROOT.glob("roles/*/meta/argument_specs.yml")), ids=lambda p: p.parts[-3])
def test_argument_specs_have_only_known_keys(spec) -> None:
    """A comma in an unquoted description of a flow mapping splits it into a bogus key."""
    import yaml

    entries = yaml.safe_load(spec.read_text())["argument_specs"]
    bad = [b for entry, body in entries.items() for b in _bad_keys(body.get("options") or {}, entry)]
    assert not bad, f"quote these descriptions: {bad}"
