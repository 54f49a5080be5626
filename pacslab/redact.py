"""Keep the lab's generated secrets out of exceptions, logs and reports.

Every secret pacslab generates for a lab lives in ``.pacslab/<lab>/secrets/`` (Ansible's password
lookup writes one file per credential, e.g. ``orthanc-pacs``). Text that leaves the process (an
exception message, a test's failure message, evidence, captured output, the JUnit file) goes
through :func:`redact` first, which replaces each value found there with :data:`REDACTED`.
SP 800-53 IA-5(7) (no embedded unencrypted static authenticators), CSF PR.DS-5.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .topology import REPO_ROOT

REDACTED = "[redacted secret]"
STATE_ROOT = REPO_ROOT / ".pacslab"
MIN_SECRET_LENGTH = 8  # shorter tokens (a salt's key name, a PEM armour word) are not secrets
_PEM_BODY = re.compile(r"^[A-Za-z0-9+/=]{16,}$")


def _values(text: str) -> set[str]:
    """The secret values in one secrets file: each whitespace-separated token (``key=value`` ->
    value) of at least MIN_SECRET_LENGTH characters; for PEM material, each base64 body line."""
    if "-----BEGIN" in text:
        return {ln.strip() for ln in text.splitlines() if _PEM_BODY.match(ln.strip())}
    found = set()
    for token in text.split():
        value = token.split("=", 1)[1] if "=" in token.rstrip("=") else token
        if len(value) >= MIN_SECRET_LENGTH:
            found.add(value)
    return found


def secret_values(root: Path | None = None) -> list[str]:
    """Every secret value of every lab under ``root`` (default STATE_ROOT: ``<lab>/secrets/*``), longest first (so a
    secret that contains another is replaced whole). Read afresh on each call: `up` may create
    secrets during a session. Unreadable files are skipped, and so is the public half of an SSH key
    (``*.pub``: its comment names a person or host, which is no secret); [] when there is no state yet."""
    values: set[str] = set()
    for path in sorted((STATE_ROOT if root is None else root).glob("*/secrets/*")):
        if path.suffix == ".pub":
            continue
        try:
            values |= _values(path.read_text(errors="replace"))
        except OSError:
            continue
    return sorted(values, key=lambda v: (-len(v), v))


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with each secret (default: :func:`secret_values`) replaced by REDACTED, and with
    any piece of one (MIN_SECRET_LENGTH characters or more) that touches an ellipsis: pytest
    shortens long values in assertion messages to ``'head...tail'``, cutting a secret in two."""
    values = secret_values() if secrets is None else list(secrets)
    for value in values:
        text = text.replace(value, REDACTED)
    if "..." in text:
        for value in values:
            for n in range(len(value) - 1, MIN_SECRET_LENGTH - 1, -1):
                text = text.replace("..." + value[-n:], "..." + REDACTED).replace(value[:n] + "...", REDACTED + "...")
    return text


def redact_tree(obj: Any, secrets: Iterable[str]) -> Any:
    """A copy of a JSON-like value (dicts, lists, tuples, strings, numbers) with every string,
    keys included, redacted; other leaves are returned as they are."""
    values = list(secrets)
    if isinstance(obj, str):
        return redact(obj, values)
    if isinstance(obj, dict):
        return {redact_tree(k, values): redact_tree(v, values) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(redact_tree(v, values) for v in obj)
    return obj
