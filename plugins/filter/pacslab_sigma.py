"""Jinja filter pacslab_sigma_rules: a folder of Sigma rule files -> the compiled rules the siem
runs (pacslab.detections.compile_rules: id, name, title, level, kind, timespan, group_by, sql)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ansible.errors import AnsibleFilterError


def pacslab_sigma_rules(rules_dir: str) -> list[dict[str, Any]]:
    # pySigma is imported here, when the filter runs (on the siem's converge), not when Ansible
    # loads the filter plugins: that happens in every worker of every task (about 0.5 s each).
    from pacslab.detections import DetectionError, compile_rules

    try:
        return compile_rules(Path(rules_dir))
    except DetectionError as exc:
        raise AnsibleFilterError(f"pacslab_sigma_rules: {exc}") from exc


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"pacslab_sigma_rules": pacslab_sigma_rules}
