"""Ansible stdout callback for pacslab: one line per phase (play) with its duration and counts.

Each play of playbooks/*.yml belongs to a phase of ``pacslab up``/``down``, named by the play's
``pacslab_phase`` variable (the play's name where it has none). The callback prints
"phase  seconds  ok  changed" as each phase ends, prints the task name, host and message of any
failure, and writes a JSON summary to $PACSLAB_SUMMARY for the CLI (idempotence is checked on it).
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: pacslab
type: stdout
short_description: pacslab phase summary
description: Prints each phase with its duration and change count; writes a JSON summary.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "pacslab"

    def __init__(self) -> None:
        super().__init__()
        self.phases: list[dict] = []
        self.current: dict | None = None
        self.failures: list[dict] = []

    def _close(self) -> None:
        if self.current is None:
            return
        cur = self.current
        cur["seconds"] = round(time.monotonic() - cur.pop("_start"), 2)
        self.phases.append(cur)
        state = "FAILED" if cur["failed"] else "ok"
        self._display.display(
            f"  {cur['phase']:<10} {cur['seconds']:>7.1f} s   {state:<6} changed={cur['changed']}"
        )
        for task in cur["changed_tasks"]:
            self._display.display(f"      changed: {task}", color="yellow")
        self.current = None

    def v2_playbook_on_play_start(self, play) -> None:
        phase = str(play.get_vars().get("pacslab_phase") or play.get_name())
        if self.current is not None and self.current["phase"] == phase:
            return  # consecutive plays of one phase are one line (hosts: register, then create)
        self._close()
        self.current = {
            "phase": phase,
            "_start": time.monotonic(),
            "ok": 0,
            "changed": 0,
            "failed": 0,
            "changed_tasks": [],
        }

    def _count(self, result, key: str) -> None:
        if self.current is not None:
            self.current[key] += 1

    def v2_runner_on_ok(self, result) -> None:
        self._count(result, "ok")
        if result._result.get("changed"):
            self._count(result, "changed")
            if self.current is not None:
                self.current["changed_tasks"].append(f"{result._task.get_name()} [{result._host.get_name()}]")

    def v2_runner_item_on_ok(self, result) -> None:
        pass

    def _failure(self, result, unreachable: bool = False) -> None:
        if result._task.ignore_errors:
            return
        self._count(result, "failed")
        res = result._result
        # A failed loop says only "One or more items failed": show what each failed item said.
        items = [str(r.get("stderr") or r.get("msg") or "").strip()[-600:] for r in res.get("results") or [] if r.get("failed")]
        msg = "; ".join(i for i in items if i) or res.get("msg") or res.get("stderr") or res.get("reason") or ""
        entry = {
            "phase": self.current["phase"] if self.current else "",
            "task": result._task.get_name(),
            "host": result._host.get_name(),
            "msg": str(msg).strip(),
            "unreachable": unreachable,
        }
        self.failures.append(entry)
        self._display.display(f"  FAILED {entry['phase']}: {entry['task']} [{entry['host']}]", color="red", stderr=True)
        if entry["msg"]:
            self._display.display(f"    {entry['msg']}", color="red", stderr=True)

    def v2_runner_on_failed(self, result, ignore_errors: bool = False) -> None:
        if not ignore_errors:
            self._failure(result)

    def v2_runner_on_unreachable(self, result) -> None:
        self._failure(result, unreachable=True)

    def v2_playbook_on_stats(self, stats) -> None:
        self._close()
        path = os.environ.get("PACSLAB_SUMMARY")
        if path:
            with open(path, "w", encoding="utf-8") as fh:
                json.dump({"phases": self.phases, "failures": self.failures}, fh, indent=1)
