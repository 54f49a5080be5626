"""Jinja filter pacslab_expected_listeners: a lab folder and a host -> what the host may listen on
outside loopback, per the lab definition (pacslab.listeners.expected_listeners), as sorted
"proto/port" strings ("tcp/443"). roles/orthanc's host watch (pacslab-hids) reports any other."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError


def pacslab_expected_listeners(lab_dir: str, host: str) -> list[str]:
    # pacslab is imported when the filter runs, not when Ansible loads the filter plugins (in every worker of every task).
    from pacslab.listeners import expected_listeners
    from pacslab.topology import LabDefinitionError, load_lab

    try:
        found = expected_listeners(load_lab(lab_dir), host)
    except (LabDefinitionError, KeyError, ValueError) as exc:
        raise AnsibleFilterError(f"pacslab_expected_listeners: {lab_dir}, {host}: {exc}") from exc
    return [f"{proto}/{port}" for proto, port in sorted(found)]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"pacslab_expected_listeners": pacslab_expected_listeners}
