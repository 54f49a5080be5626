"""Generated docs are current: README control table, role variable tables."""

from __future__ import annotations

import pytest

from pacslab.docs import expected
from pacslab.topology import REPO_ROOT


@pytest.mark.parametrize("path", list(expected()), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_generated_doc_is_current(path) -> None:
    assert path.is_file() and path.read_text() == expected()[path], f"{path} is stale: run python -m pacslab.docs"
