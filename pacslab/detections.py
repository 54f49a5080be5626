"""The SIEM's detections as code: Sigma rules (roles/siem/files/rules/*.yml), compiled to SQLite
queries with pySigma's SQLite backend, on the controller; the siem host runs the queries
(roles/siem/files/pacslab_siem.py, ``evaluate``).

A rule file is a Sigma rule (Sigma specification 2.0) or a Sigma correlation rule (event_count,
value_count, temporal, temporal_ordered); a file may hold several documents. Base rules that a
correlation names are not alerts of their own, unless every correlation naming them has
``generate`` and they are more than informational (an informational rule is a step). Each
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
# Correlation kinds whose results are sequences of the rules they name (Sigma 2.0).
TEMPORAL = ("temporal", "temporal_ordered")


class DetectionError(ValueError):
    """A rule file pySigma refuses, or a rule without the name the alerts are keyed by."""


def load(rules_dir: Path = RULES_DIR) -> SigmaCollection:
    """Every rule of the folder's *.yml, in file order; DetectionError names the file and pySigma's
    reason. A correlation may name a rule of another file (each file's references are resolved
    against the whole folder)."""
    collections = []
    for path in sorted(rules_dir.glob("*.yml")):
        try:
            collections.append((path, SigmaCollection.from_yaml(path.read_text(), resolve_references=False)))
        except Exception as exc:  # pySigma raises its own SigmaError family and YAML errors
            raise DetectionError(f"{path}: {exc}") from exc
    merged = SigmaCollection.merge([c for _, c in collections], resolve_references=False)
    try:
        merged.resolve_rule_references()
    except Exception as exc:  # a name no rule of the folder has: the file that uses it
        known = set(merged.names_to_rules) | {str(i) for i in merged.ids_to_rules}
        for path, collection in collections:
            for rule in collection.rules:
                if isinstance(rule, SigmaCorrelationRule) and any(ref.reference not in known for ref in rule.rules or []):
                    raise DetectionError(f"{path}: {rule.name or rule.title}: {exc}") from exc
        raise DetectionError(f"{rules_dir}: {exc}") from exc
    return merged


def compile_rules(rules_dir: Path = RULES_DIR) -> list[dict[str, Any]]:
    """The alerting rules as the siem runs them: [{id, name, title, level, kind, timespan (s),
    group_by, sql, containment, threshold, counted, base_sql, steps}]. containment (the rule's own attribute, high and
    critical rules only) names the entity whose address the fw quarantines when the alert is raised
    (C-RSP-02); threshold and counted are the correlation's condition (gte, and the field whose
    distinct values a value_count counts; 1 and None for a rule that alerts per event).
    kind is "event" for a plain rule (one alert per matching event) or the Sigma correlation type.
    steps, on a temporal or temporal_ordered correlation, are the rules it names, in its order: a
    base rule as {name, base_sql}, an event_count or value_count correlation as {name, base_sql,
    timespan, group_by, threshold, counted} (the siem finds the sequences itself, _sequences).
    Base rules a correlation refers to are left out (they do not alert alone), unless pySigma
    outputs them (``generate``) and they are more than informational."""
    collection = load(rules_dir)
    # the siem's `logs` is a view (pacslab_siem._show_window), which has no rowid: the event's id is `id`
    backend = sqliteBackend(event_id_field="id")  # type: ignore[no-untyped-call]
    referenced = {id(r.rule) for c in collection if isinstance(c, SigmaCorrelationRule) for r in c.rules or []}
    conditions: dict[int, str] = {}  # a base rule's condition as SQL, for the counting correlations (below)
    counters: dict[int, dict[str, Any]] = {}  # a counting correlation as a temporal one's step (below)
    compiled = []
    # Base rules first: the backend compiles a correlation from its rules' conversion state; then
    # the counting correlations, which temporal ones may name.
    correlations = [r for r in collection if isinstance(r, SigmaCorrelationRule)]
    order = ([r for r in collection if isinstance(r, SigmaRule)] + [r for r in correlations if r.type.name.lower() not in TEMPORAL]
             + [r for r in correlations if r.type.name.lower() in TEMPORAL])
    for rule in order:
        if isinstance(rule, SigmaCorrelationRule):
            queries = backend.convert_correlation_rule(rule)  # type: ignore[no-untyped-call]
        else:
            queries = backend.convert_rule(rule)  # type: ignore[no-untyped-call]
            if id(rule) in referenced:  # a step of a correlation: its condition is the rule's conversion result
                converted = rule.get_conversion_result()
                conditions[id(rule)] = converted[0] if len(converted) == 1 else ""
                # It alerts alone as well when every correlation naming it has `generate` (pySigma
                # outputs it) and it is more than informational (unknown-ae, a step of compromised-modality).
                if not queries or (rule.level is not None and rule.level.name == "INFORMATIONAL"):  # no level: medium
                    continue
        if not rule.name:
            raise DetectionError(f"{rule.title}: a rule needs a name (alerts carry it)")
        counting = _counting(rule, conditions) if isinstance(rule, SigmaCorrelationRule) else {}
        if counting:
            counters[id(rule)] = counting
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
        steps = _steps(rule, conditions, counters) if isinstance(rule, SigmaCorrelationRule) and kind in TEMPORAL else []
        compiled.append({"id": str(rule.id), "name": rule.name, "title": rule.title, "level": level, "kind": kind,
                         "timespan": span, "group_by": group_by, "sql": queries[0], "containment": containment,
                         "threshold": threshold, "counted": counted, "base_sql": counting.get("base_sql", ""), "steps": steps})
    return compiled


def _counting(rule: SigmaCorrelationRule, conditions: dict[int, str]) -> dict[str, Any]:
    """An event_count or value_count correlation as the siem counts it: {name, base_sql (its base
    rules' conditions as one query), timespan (s), group_by, threshold, counted}; {} for another type.

    The siem counts these itself (one pass over the base rules' matches, sorted), because the
    backend's query compares every match with every other (212 times slower at 2,000 fw drops,
    bench/correlation_cost.py; live, a pass over a segmentation check's burst took over a minute).
    Sigma's semantics are kept: a window ends at each match and spans the timespan before it; the
    condition is met when the window holds `threshold` matches (event_count) or distinct values of
    `counted` (value_count), a threshold to reach (gte) only."""
    if rule.type.name.lower() not in ("event_count", "value_count"):
        return {}
    op = getattr(rule.condition, "op", None)
    if op is None or op.name != "GTE" or getattr(rule.condition, "percentile", None) is not None:
        raise DetectionError(f"{rule.name}: the siem counts 'gte' conditions only (the threshold a window must reach)")
    if rule.aliases and rule.aliases.aliases:
        raise DetectionError(f"{rule.name}: the siem counts over the base rules' own fields: no aliases")
    parts = [conditions.get(id(r.rule), "") for r in rule.rules or []]
    if not parts or not all(parts):
        raise DetectionError(f"{rule.name}: a rule it counts did not compile to one condition")
    return {"name": rule.name, "base_sql": "SELECT * FROM logs WHERE " + " OR ".join(f"({p})" for p in parts),
            "timespan": _seconds(str(rule.timespan.spec)), "group_by": list(rule.group_by or []),
            "threshold": int(getattr(rule.condition, "count", None) or 1), "counted": getattr(rule.condition, "fieldref", None)}


def _steps(rule: SigmaCorrelationRule, conditions: dict[int, str], counters: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """A temporal or temporal_ordered correlation's steps, in its order (compile_rules). The siem
    finds the sequences itself: the backend's query nests a counting correlation's own query inside
    its own, as slow as that one (see _counting). Every step groups by the correlation's fields."""
    if rule.aliases and rule.aliases.aliases:
        raise DetectionError(f"{rule.name}: the siem finds sequences over the rules' own fields: no aliases")
    count = len(rule.rules or [])
    if getattr(getattr(rule.condition, "op", None), "name", None) != "GTE" or getattr(rule.condition, "count", None) != count or not count:
        raise DetectionError(f"{rule.name}: the siem finds sequences of every rule named (condition gte: {count}), not {rule.condition}")
    steps = []
    for ref in rule.rules or []:
        named = ref.rule
        if isinstance(named, SigmaRule) and conditions.get(id(named)):
            steps.append({"name": named.name or str(named.id), "base_sql": f"SELECT * FROM logs WHERE ({conditions[id(named)]})"})
        elif id(named) in counters:
            step = counters[id(named)]
            if not set(rule.group_by or []) <= set(step["group_by"]):
                raise DetectionError(f"{rule.name}: {step['name']} groups by {step['group_by']}, not by every field of {rule.group_by}")
            steps.append(step)
        else:
            raise DetectionError(f"{rule.name}: {getattr(named, 'name', named)} is neither a base rule of one condition nor an "
                                 "event_count or value_count correlation (the steps the siem finds sequences of)")
    return steps


def _seconds(spec: str) -> int:
    m = _SPAN.match(spec)
    if not m:
        raise DetectionError(f"timespan {spec!r}: expected a number and s, m, h or d")
    return int(m[1]) * _SECONDS[m[2]]
