"""What the scanner's two programs share (roles/scanner: pacslab-discovery's sweeps and
pacslab-vulnscan's scans): their time stamps and one nmap run. The role installs this module in
/usr/local/lib/pacslab, where both look for it."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

T = TypeVar("T")


def stamp() -> str:
    """Now, UTC, RFC 3339 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_nmap(argv: list[str], read: Callable[[str], T], timeout: float, stdin: str | None = None) -> T:
    """nmap's XML report (``argv`` writes it to stdout: ``-oX -``) as ``read`` gives it (ET.ParseError
    or ValueError for a report it cannot use). Raises RuntimeError with nmap's word when nmap cannot
    start, does not finish within ``timeout`` seconds, exits with an error, or writes a report
    ``read`` refuses."""
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"nmap did not finish within {timeout:g} s") from exc
    except OSError as exc:
        raise RuntimeError(f"nmap could not start: {exc}") from exc
    if proc.returncode != 0:
        raise RuntimeError(f"nmap exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    try:
        return read(proc.stdout)
    except (ET.ParseError, ValueError) as exc:
        raise RuntimeError(f"nmap's report could not be read: {exc}") from exc
