"""The shadow expiry of a lab account from a person's end date (roles/bastion, roles/maintenance).

The people file's ``expires`` is the last day a person may sign in (UTC). shadow(5)'s expiry date
is the first day the account is refused, so the account ends at 00:00 UTC the day after. Ansible's
user module takes that as epoch seconds (``expires``), -1 for none.
"""

from __future__ import annotations

import datetime as dt
from typing import Any


def pacslab_shadow_expiry(expires: Any) -> int:
    """Epoch seconds of the day after ``expires`` (a date or YYYY-MM-DD text), -1 for None or ''.
    Raises ValueError for text that is not a date."""
    if expires is None or expires == "":
        return -1
    day = expires if isinstance(expires, dt.date) else dt.date.fromisoformat(str(expires))
    return int(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC).timestamp())


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"pacslab_shadow_expiry": pacslab_shadow_expiry}
