"""The SIEM's detections as code: Sigma rules (roles/siem/files/rules/*.yml), compiled to SQLite
queries with pySigma's SQLite backend, on the controller; the siem host runs the queries
(roles/siem/files/pacslab_siem.py, ``evaluate``).

A rule file is a Sigma rule (Sigma specification 2.0) or a Sigma correlation rule (event_count,
value_count, temporal, temporal_ordered); a file may hold several documents. Base rules that a
correlation names are not alerts of their own (the correlation's ``generate`` semantics). Each
rule's fixtures (tests/unit/sigma/<rule name>.yml) hold the events it must match and those it must
not; thresholds live in the rule files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sigma.backends.sqlite.sqlite import sqliteBackend
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.rule import SigmaRule

REPO_ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = REPO_ROOT / "roles" / "siem" / "files" / "rules"

_SPAN = re.compile(r"^(\d+)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class DetectionError(ValueError):
    """A rule file pySigma refuses, or a rule without the name the alerts are keyed by."""


def load(rules_dir: Path = RULES_DIR) -> SigmaCollection:
    """Every rule of the folder's *.yml, in file order; DetectionError names the file and pySigma's reason."""
    collections = []
    for path in sorted(rules_dir.glob("*.yml")):
        try:
            collections.append(SigmaCollection.from_yaml(path.read_text()))
        except Exception as exc:  # pySigma raises its own SigmaError family and YAML errors
            raise DetectionError(f"{path}: {exc}") from exc
    merged = SigmaCollection.merge(collections) if collections else SigmaCollection([])
    merged.resolve_rule_references()
    return merged


def compile_rules(rules_dir: Path = RULES_DIR) -> list[dict[str, Any]]:
    """The alerting rules as the siem runs them: [{id, name, title, level, kind, timespan (s),
    group_by, sql, containment, threshold, counted, base_sql}]. containment (the rule's own attribute, high and
    critical rules only) names the entity whose address the fw quarantines when the alert is raised
    (C-RSP-02); threshold and counted are the correlation's condition (gte, and the field whose
    distinct values a value_count counts; 1 and None for a rule that alerts per event).
    kind is "event" for a plain rule (one alert per matching event) or the Sigma correlation type.
    Base rules a correlation refers to are left out (they do not alert alone)."""
    collection = load(rules_dir)
    backend = sqliteBackend()  # type: ignore[no-untyped-call]
    referenced = {id(r.rule) for c in collection if isinstance(c, SigmaCorrelationRule) for r in c.rules or []}
    conditions: dict[int, str] = {}  # a base rule's condition as SQL, for the counting correlations (below)
    compiled = []
    # Base rules first: the backend compiles a correlation from its rules' conversion state.
    order = [r for r in collection if isinstance(r, SigmaRule)] + [r for r in collection if isinstance(r, SigmaCorrelationRule)]
    for rule in order:
        if isinstance(rule, SigmaCorrelationRule):
            queries = backend.convert_correlation_rule(rule)  # type: ignore[no-untyped-call]
        else:
            queries = backend.convert_rule(rule)  # type: ignore[no-untyped-call]
            if id(rule) in referenced:  # not output, but converted: its condition is the rule's conversion result
                converted = rule.get_conversion_result()
                conditions[id(rule)] = converted[0] if len(converted) == 1 else ""
                continue
        if not rule.name:
            raise DetectionError(f"{rule.title}: a rule needs a name (alerts carry it)")
        if not queries:  # a correlation another one names, without `generate`: a step, not an alert
            continue
        if len(queries) != 1:
            raise DetectionError(f"{rule.name}: compiles to {len(queries)} queries, the siem runs one")
        level = rule.level.name.lower() if rule.level else "medium"
        if isinstance(rule, SigmaCorrelationRule):
            kind = rule.type.name.lower()
            span = _seconds(str(rule.timespan.spec))
            group_by = list(rule.group_by or [])
        else:
            kind, span, group_by = "event", 0, list(rule.custom_attributes.get("entities", ["host"]))
        containment = rule.custom_attributes.get("containment")
        # What makes the correlation fire, for the siem's second look at an alert born in a window of
        # authorised activity (does the activity outside the window fire it on its own?).
        condition = rule.condition if isinstance(rule, SigmaCorrelationRule) else None
        threshold = int(getattr(condition, "count", None) or 1)  # an extended (boolean) condition has no count: 1
        counted = getattr(condition, "fieldref", None)
        if containment is not None and (containment not in group_by or level not in ("high", "critical")):
            raise DetectionError(f"{rule.name}: containment names {containment!r}, which must be one of its entities {group_by} "
                                 f"on a high or critical rule (it is {level})")
        # An event_count or value_count correlation also carries its base rules' own queries: the siem
        # counts their matches over sliding windows itself (one pass over them, sorted), because the
        # backend's query compares every match with every other (212 times slower at 2,000 fw drops,
        # bench/correlation_cost.py; live, a pass over a segmentation check's burst took over a
        # minute). Sigma's semantics are kept: a window ends at each match and spans the timespan
        # before it; the condition is met when the window holds `threshold` matches (event_count)
        # or distinct values of `counted` (value_count), a threshold to reach (gte) only.
        counting = ""
        if isinstance(rule, SigmaCorrelationRule) and kind in ("event_count", "value_count"):
            op = getattr(rule.condition, "op", None)
            if op is None or op.name != "GTE" or getattr(rule.condition, "percentile", None) is not None:
                raise DetectionError(f"{rule.name}: the siem counts 'gte' conditions only (the threshold a window must reach)")
            if rule.aliases and rule.aliases.aliases:
                raise DetectionError(f"{rule.name}: the siem counts over the base rules' own fields: no aliases")
            parts = [conditions.get(id(r.rule), "") for r in rule.rules or []]
            if not parts or not all(parts):
                raise DetectionError(f"{rule.name}: a rule it counts did not compile to one condition")
            counting = "SELECT * FROM logs WHERE " + " OR ".join(f"({p})" for p in parts)
        compiled.append({"id": str(rule.id), "name": rule.name, "title": rule.title, "level": level, "kind": kind,
                         "timespan": span, "group_by": group_by, "sql": queries[0], "containment": containment,
                         "threshold": threshold, "counted": counted, "base_sql": counting})
    return compiled


def _seconds(spec: str) -> int:
    m = _SPAN.match(spec)
    if not m:
        raise DetectionError(f"timespan {spec!r}: expected a number and s, m, h or d")
    return int(m[1]) * _SECONDS[m[2]]
