"""The people of a lab (issue 12): who may log in, with which roles, owned by whom, until when.

They live in the lab folder, in ``group_vars/all/people.yml``, as two lab-wide keys:

``lab_people``: one entry per person (the directory holds them: roles/directory)::

    - {name: rad-ada, display_name: Ada Reader, roles: [radiologist], owner: radiology}
    - {name: vnd-acme, display_name: Acme Service, roles: [vendor], owner: biomed, expires: 2027-06-30}
    - {name: rad-left, display_name: Lee Left, roles: [radiologist], owner: radiology, state: disabled}

``lab_service_accounts``: read-only directory accounts of the lab's own services (the IdP's bind)::

    - {name: svc-idp, owner: it-identity, purpose: the IdP's LDAP lookups}

Every person and every service account has an owner (C-ACC-01 (c): no account without one); a
vendor has an end date (C-MNT-01: vendor access is time-bound). Passwords are never in the
definition: `up` generates them per lab (.pacslab/<lab>/secrets/person-<name>, service-<name>),
with each person's TOTP seed (totp-<name>, what the IdP checks their second factor against).
This module only checks the definition and reads it; pacslab.topology calls :func:`check` and
refuses the lab with file, key and reason for each problem, before anything changes.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp

# The roles of the lab, in the vocabulary of the permission table (roles/orthanc takes it up).
ROLES = ("radiologist", "technologist", "pacs-admin", "auditor", "vendor")
STATES = ("enabled", "disabled")
PERSON_KEYS = {"name", "display_name", "roles", "owner", "state", "expires"}
SERVICE_KEYS = {"name", "owner", "purpose"}
# A directory uid / cn that is also a Unix user name on the bastion: lower case, digits, '-'.
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,31}$")
KEYS = ("lab_people", "lab_service_accounts")


@dataclass(frozen=True)
class Person:
    name: str
    display_name: str
    roles: tuple[str, ...]
    owner: str
    state: str = "enabled"  # as the definition says; see status() for what it means today
    expires: dt.date | None = None  # the last day the account may be used (UTC)

    def status(self, today: dt.date | None = None) -> str:
        """enabled | disabled | expired (``today``: default, today in UTC)."""
        if self.state == "disabled":
            return "disabled"
        day = today or dt.datetime.now(dt.UTC).date()
        return "expired" if self.expires is not None and self.expires < day else "enabled"


@dataclass(frozen=True)
class ServiceAccount:
    name: str
    owner: str
    purpose: str


def _date(value: Any) -> dt.date | None:
    """A YAML date (2027-06-30, which YAML already reads as a date) or the same as a string."""
    if isinstance(value, dt.datetime):
        return None
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return None
    return None


def check(lab_vars: Mapping[str, Any]) -> tuple[tuple[Person, ...], tuple[ServiceAccount, ...], list[tuple[str, str, str]]]:
    """The people and service accounts of ``lab_vars`` (group_vars/all), and every problem as
    (lab key, key path, reason): an unknown key or role, a missing name, display name, role or
    owner, a vendor without an end date, a name used twice (people and services share one
    namespace: each is a login name). Both keys are optional: a lab without people has none."""
    problems: list[tuple[str, str, str]] = []
    people: list[Person] = []
    services: list[ServiceAccount] = []
    seen: dict[str, str] = {}

    def text(key: str, path: str, entry: Mapping[str, Any], field: str, required: bool = True) -> str | None:
        value = entry.get(field)
        if value is None:
            if required:
                problems.append((key, f"{path}.{field}", "missing required key"))
            return None
        if not isinstance(value, str) or not value.strip():
            problems.append((key, f"{path}.{field}", f"{value!r}: must be a non-empty string"))
            return None
        return value

    def name_of(key: str, path: str, entry: Mapping[str, Any]) -> str | None:
        name = text(key, path, entry, "name")
        if name is None:
            return None
        if not NAME_RE.match(name):
            problems.append((key, f"{path}.name", f"{name!r}: 2-32 lower-case letters, digits or '-', starting with a letter"))
            return None
        if name in seen:
            problems.append((key, f"{path}.name", f"{name!r} is already {seen[name]}: each login name once"))
            return None
        seen[name] = path if key == "lab_people" else f"lab_service_accounts {path}"
        return name

    def mappings(key: str, what: str, known: set[str], required: str) -> list[tuple[str, Mapping[str, Any]]]:
        """(key path, entry) for each entry of the list at ``key`` that is a mapping; a problem for
        anything else, and for each unknown key of an entry."""
        raw = lab_vars.get(key, [])
        if not isinstance(raw, list):
            problems.append((key, key, f"must be a list of {what}"))
            return []
        out = []
        for i, entry in enumerate(raw):
            path = f"{key}[{i}]"
            if not isinstance(entry, Mapping):
                problems.append((key, path, f"each entry is a mapping with {required}"))
                continue
            for extra in sorted(set(entry) - known):
                problems.append((key, f"{path}.{extra}", f"unknown key (known: {', '.join(sorted(known))})"))
            out.append((path, entry))
        return out

    for path, entry in mappings("lab_people", "people", PERSON_KEYS, "name, display_name, roles and owner"):
        name = name_of("lab_people", path, entry)
        display = text("lab_people", path, entry, "display_name")
        owner = text("lab_people", path, entry, "owner")
        roles = entry.get("roles")
        if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
            problems.append(("lab_people", f"{path}.roles", f"a non-empty list of {', '.join(ROLES)}"))
            roles = []
        for r in roles:
            if r not in ROLES:
                problems.append(("lab_people", f"{path}.roles", f"{r!r}: unknown role (known: {', '.join(ROLES)})"))
        state = entry.get("state", "enabled")
        if state not in STATES:
            problems.append(("lab_people", f"{path}.state", f"{state!r}: one of {', '.join(STATES)}"))
        expires = None
        if "expires" in entry:
            expires = _date(entry["expires"])
            if expires is None:
                problems.append(("lab_people", f"{path}.expires", f"{entry['expires']!r}: a date, YYYY-MM-DD (the last day of access)"))
        elif "vendor" in roles:
            problems.append(("lab_people", f"{path}.expires", "missing: a vendor's access ends on a date (YYYY-MM-DD)"))
        if name and display and owner and roles and state in STATES and ("expires" not in entry or expires):
            people.append(Person(name, display, tuple(roles), owner, state, expires))

    for path, entry in mappings("lab_service_accounts", "service accounts", SERVICE_KEYS, "name, owner and purpose"):
        name = name_of("lab_service_accounts", path, entry)
        owner = text("lab_service_accounts", path, entry, "owner")
        purpose = text("lab_service_accounts", path, entry, "purpose")
        if name and owner and purpose:
            services.append(ServiceAccount(name, owner, purpose))
    return tuple(people), tuple(services), problems


def password(secrets_dir: str | Path, name: str) -> str:
    """The password `up` generated for person ``name`` (.pacslab/<lab>/secrets/person-<name>).
    Raises FileNotFoundError when no `up` has made one yet, IndexError when the file is empty."""
    return (Path(secrets_dir) / f"person-{name}").read_text().split()[0]


def totp_seed(secrets_dir: str | Path, name: str) -> str:
    """The base32 TOTP seed `up` generated for person ``name`` (RFC 4226 section 4: 160 bits).
    Raises FileNotFoundError when no `up` has made one yet."""
    return (Path(secrets_dir) / f"totp-{name}").read_text().split()[0]


def totp_now(seed: str, at: float | None = None) -> str:
    """The 6-digit TOTP code of a base32 seed at ``at`` (Unix seconds; now by default), as RFC 6238
    computes it: HMAC-SHA1, 30-second steps from the Unix epoch."""
    totp = pyotp.TOTP(seed)
    return totp.now() if at is None else totp.at(int(at))


TOTP_STEP = 30  # seconds: RFC 6238's time step
# Steps either side of its own that each of the lab's TOTP verifiers accepts (RFC 6238 section 6,
# the allowed drift): roles/bastion's pam_oath (window=1) and roles/idp's pacslab-totp-verify
# (WINDOW = 1); tests/unit/test_people.py holds both to this number.
TOTP_WINDOW = 1
# Seconds beyond one step that a fresh code must stay accepted, where the choice is free: time for a
# browser or an SSH client on a loaded host to reach the code prompt and send it.
TOTP_MARGIN = 10


def _ahead(last_step: int, now: float) -> None:
    """Raise RuntimeError when ``last_step`` is further ahead of the clock at ``now`` than a
    verifier taking TOTP_WINDOW steps ahead could have accepted: a wrong clock or time zone read,
    which no wait would mend."""
    if last_step > int(now // TOTP_STEP) + TOTP_WINDOW:
        raise RuntimeError(f"the last accepted TOTP step {last_step} is more than {TOTP_WINDOW} step(s) ahead of "
                           f"this clock's {int(now // TOTP_STEP)}: a clock or time zone differs")


def fresh_totp(seed: str, last_step: int) -> str:
    """The code of the earliest step after ``last_step`` (the step of the last code a verifier
    accepted for the person, -1 for none: RFC 6238 section 5.2, a verifier refuses that code and any
    earlier one) that the lab's verifiers accept now and for TOTP_STEP + TOTP_MARGIN seconds more:
    the current step's, or the next one's, which a verifier taking TOTP_WINDOW steps ahead accepts
    at once (RFC 6238 section 6) and for longer. Waits (at most TOTP_STEP + 0.5 seconds) only when
    the steps up to the window's end were all used. RuntimeError: ``last_step`` further ahead."""
    _ahead(last_step, time.time())
    while True:
        now = time.time()
        current = int(now // TOTP_STEP)
        for step in range(max(current, last_step + 1), current + TOTP_WINDOW + 1):
            if (step + TOTP_WINDOW + 1) * TOTP_STEP - now >= TOTP_STEP + TOTP_MARGIN:
                return totp_now(seed, step * TOTP_STEP)
        time.sleep((current + 1) * TOTP_STEP - now + 0.5)


def step_of(seed: str, code: str, at: float) -> int:
    """The RFC 6238 step of ``code``, which a verifier taking TOTP_WINDOW steps either side of its
    own accepted at Unix time ``at`` (pam_oath keeps the code and that time, not the step): the
    latest step in that window whose code it is; the window's last step when none is (the safe
    side: no code of that step or an earlier one is offered after it)."""
    at_step = int(at // TOTP_STEP)
    window = range(at_step + TOTP_WINDOW, at_step - TOTP_WINDOW - 1, -1)
    return next((step for step in window if totp_now(seed, step * TOTP_STEP) == code), at_step + TOTP_WINDOW)


def totp_codes(seed: str, last_step: int, count: int = 6) -> dict[int, str]:
    """{RFC 6238 step (Unix seconds // TOTP_STEP): code} for ``count`` steps from the current one,
    leaving out the steps at or before ``last_step`` (as for fresh_totp): for a client that types
    the code of the step it reaches the prompt in, or the next one's, however long it took to get
    there. Six steps cover three minutes. Waits (at most TOTP_STEP + 0.5 seconds) only while
    ``last_step`` is ahead of the clock (fresh_totp sent the next step's code early), so that the
    first code given is of the current step or the next. RuntimeError: as fresh_totp."""
    _ahead(last_step, time.time())
    while (now := time.time()) // TOTP_STEP < last_step:
        time.sleep((int(now // TOTP_STEP) + 1) * TOTP_STEP - now + 0.5)
    first = max(int(time.time() // TOTP_STEP), last_step + 1)
    totp = pyotp.TOTP(seed)
    return {step: totp.at(step * TOTP_STEP) for step in range(first, first + count)}
