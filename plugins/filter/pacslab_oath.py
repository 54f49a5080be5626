"""pam_oath's users file (libpam-oath, OATH Toolkit's usersfile format) from the lab's TOTP seeds.

One line per person: ``HOTP/T30/6 <user> - <seed as hex>``, the token type of RFC 6238 TOTP
(30-second steps, 6 digits), no PIN. pam_oath appends to a person's line the last code it accepted
and when, and refuses that code and any earlier one (a replayed code); so the file is state as much
as configuration. ``pacslab_oath_users`` keeps a person's line as it is, with that state, while its
seed is theirs, and writes a fresh one only for a new person or a new seed; people no longer listed
lose their line. Applied to the file it produced, it returns the same text (a second `up` changes
nothing).
"""

from __future__ import annotations

import base64
from typing import Any

TOKEN = "HOTP/T30/6"


def seed_hex(seed: str) -> str:
    """A base32 TOTP seed (RFC 4648 section 6, as `up` stores it: totp-<name>) as lower-case hex.
    Raises ValueError for text that is not base32."""
    text = seed.strip().upper()
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8)).hex()
    except ValueError as exc:  # binascii.Error is one
        raise ValueError(f"not a base32 TOTP seed: {exc}") from None


def pacslab_oath_users(current: str, seeds: dict[str, str]) -> str:
    """The users file for ``seeds`` (user name -> base32 seed), given the ``current`` text ('' when
    there is none). Lines in the order of ``seeds``; each ends with a line feed."""
    kept: dict[str, str] = {}
    for line in current.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0] == TOKEN:
            kept[fields[1]] = line
    out = []
    for user, seed in seeds.items():
        hexseed = seed_hex(seed)
        line = kept.get(user, "")
        fields = line.split()
        out.append(line if len(fields) >= 4 and fields[2] == "-" and fields[3].lower() == hexseed else f"{TOKEN}\t{user}\t-\t{hexseed}")
    return "".join(f"{line}\n" for line in out)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"pacslab_oath_users": pacslab_oath_users}
