"""Figures the README states that the code can check: the segmentation case counts of the
reference lab."""

from __future__ import annotations

import re
from collections import Counter

from pacslab.probes.segmentation import build_cases
from pacslab.topology import REPO_ROOT, load_lab

from .conftest import DEFAULT_LAB

README = (REPO_ROOT / "README.md").read_text()


def test_the_segmentation_case_counts_are_the_reference_labs() -> None:
    m = re.search(r"About ([\d,]+) cases \(reference lab: (\d+) allowed, ([\d,]+) denied, (\d+) egress\)", " ".join(README.split()))
    assert m, "the README no longer states the segmentation case counts"
    about, allowed, denied, egress = (int(g.replace(",", "")) for g in m.groups())
    kinds = Counter(c.kind for c in build_cases(load_lab(DEFAULT_LAB)))
    assert (allowed, denied, egress) == (kinds["allow"], kinds["deny"], kinds["egress"])
    assert abs(about - sum(kinds.values())) <= 100
