"""New Relic on HTTPS (self-signed certificate): the Metric API and a NerdGraph endpoint.

Metric API (``POST /metric/v1``): ``Api-Key`` checked (403), ``Content-Encoding: gzip`` required, at most
10^6 bytes on the wire (413), body ``[{"common": {...}, "metrics": [...]}]`` with gauge / count / summary
items as documented (400), at most 100 attributes per point (common included), names and keys at most 255
characters, values at most 4096; points older than 48 h or more than 24 h ahead accepted and not stored,
counted in ``dropped_for_age``; success 202 ``{"requestId": ...}``.

NerdGraph (``POST /graphql``, header ``API-Key``): the queries and mutations the vendor module uses,
recognised by their root fields, with their inputs validated.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler
from typing import Any

from .base import HTTPIntake

MAX_WIRE = 1_000_000


class NewRelicIntake(HTTPIntake):
    def __init__(self, license_key: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.license_key = license_key
        self.metrics: list[dict[str, Any]] = []  # accepted items, common attributes merged in
        self.dropped_for_age = 0
        self.clock = time.time

    def error_body(self, status: int, message: str | None = None) -> Any:
        return {"requestId": str(uuid.uuid4()), "error": message or f"status {status}"}

    def handle(self, h: BaseHTTPRequestHandler, method: str, path: str,
               body: bytes) -> tuple[int, Any, dict[str, str]]:
        if path.split("?")[0] != "/metric/v1" or method != "POST":
            return 404, self.error_body(404, "not found"), {}
        if h.headers.get("Api-Key") != self.license_key:
            return 403, self.error_body(403, "invalid key"), {}
        if len(body) > MAX_WIRE:
            return 413, self.error_body(413, "payload too large"), {}
        if (h.headers.get("Content-Encoding") or "").lower() != "gzip":
            return 400, self.error_body(400, "Content-Encoding gzip required"), {}
        try:
            raw = zlib.decompress(body, 31)
            doc = json.loads(raw, parse_constant=_reject_constant)
        except (zlib.error, ValueError) as exc:
            return 400, self.error_body(400, f"bad body: {exc}"), {}
        if not isinstance(doc, list) or not doc:
            return 400, self.error_body(400, "body must be a non-empty list"), {}
        accepted: list[dict[str, Any]] = []
        dropped = 0
        now_ms = self.clock() * 1000
        for block in doc:
            if not isinstance(block, dict) or not isinstance(block.get("metrics"), list):
                return 400, self.error_body(400, "each block needs metrics"), {}
            common = ((block.get("common") or {}).get("attributes")) or {}
            for m in block["metrics"]:
                err = _check_metric(m, common)
                if err:
                    return 400, self.error_body(400, err), {}
                if m["timestamp"] < now_ms - 48 * 3600_000 or m["timestamp"] > now_ms + 24 * 3600_000:
                    dropped += 1
                    continue
                accepted.append({**m, "attributes": {**common, **(m.get("attributes") or {})}})
        with self._lock:
            self.metrics.extend(accepted)
            self.dropped_for_age += dropped
        return 202, {"requestId": str(uuid.uuid4())}, {}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_metric(m: Any, common: dict[str, Any]) -> str | None:
    if not isinstance(m, dict):
        return "metric must be an object"
    name = m.get("name")
    if not isinstance(name, str) or not name or len(name) > 255:
        return f"invalid name {name!r}"
    if not isinstance(m.get("timestamp"), int):
        return f"{name}: timestamp (ms) must be an integer"
    kind = m.get("type", "gauge")
    value = m.get("value")
    if kind == "gauge":
        if not _num(value):
            return f"{name}: gauge value must be a number"
    elif kind in ("count", "summary"):
        interval = m.get("interval.ms")
        if not isinstance(interval, int) or interval <= 0:
            return f"{name}: {kind} needs a positive interval.ms"
        if kind == "count" and not _num(value):
            return f"{name}: count value must be a number"
        if kind == "summary" and not (isinstance(value, dict) and set(value) == {"count", "sum", "min", "max"}
                                      and all(_num(v) for v in value.values())):
            return f"{name}: summary value must be {{count, sum, min, max}}"
    else:
        return f"{name}: unknown type {kind!r}"
    attributes = {**common, **(m.get("attributes") or {})}
    if len(attributes) > 100:
        return f"{name}: more than 100 attributes"
    for k, v in attributes.items():
        if len(k) > 255:
            return f"{name}: attribute key longer than 255"
        if isinstance(v, str) and len(v) > 4096:
            return f"{name}: attribute value longer than 4096"
    return None


# --- NerdGraph ---------------------------------------------------------------------------------------

OPERATORS = {"ABOVE", "ABOVE_OR_EQUALS", "BELOW", "BELOW_OR_EQUALS", "EQUALS", "NOT_EQUALS"}


class NerdGraphIntake(HTTPIntake):
    def __init__(self, api_key: str, account_id: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.api_key = api_key
        self.account_id = account_id
        self.policies: dict[str, dict[str, Any]] = {}
        self.conditions: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.mutations: list[str] = []  # root field of every mutation served
        self._ids = itertools.count(5000)

    def handle(self, h: BaseHTTPRequestHandler, method: str, path: str,
               body: bytes) -> tuple[int, Any, dict[str, str]]:
        if path != "/graphql" or method != "POST":
            return 404, {"errors": [{"message": "not found"}]}, {}
        if h.headers.get("API-Key") != self.api_key:
            return 401, {"errors": [{"message": "Invalid API key"}]}, {}
        try:
            doc = json.loads(body)
            query, variables = doc["query"], doc.get("variables") or {}
        except (ValueError, KeyError, TypeError):
            return 400, {"errors": [{"message": "body must be {query, variables}"}]}, {}
        try:
            data = self._execute(query, variables)
        except _GraphQLError as exc:
            return 200, {"data": None, "errors": [{"message": str(exc)}]}, {}
        return 200, {"data": data}, {}

    def _account(self, variables: dict[str, Any]) -> None:
        if int(variables.get("accountId", -1)) != self.account_id:
            raise _GraphQLError("account not found or not accessible")

    def _execute(self, query: str, v: dict[str, Any]) -> Any:
        if "alertsPolicyCreate" in query:
            self._account(v)
            policy = v["policy"]
            if not policy.get("name") or policy.get("incidentPreference") not in (
                    "PER_POLICY", "PER_CONDITION", "PER_CONDITION_AND_TARGET"):
                raise _GraphQLError("policy needs name and incidentPreference")
            pid = str(next(self._ids))
            self.policies[pid] = {"id": pid, "name": policy["name"],
                                  "incidentPreference": policy["incidentPreference"]}
            self.mutations.append("alertsPolicyCreate")
            return {"alertsPolicyCreate": self.policies[pid]}
        if "alertsNrqlConditionStaticCreate" in query:
            self._account(v)
            if str(v.get("policyId")) not in self.policies:
                raise _GraphQLError("policy not found")
            _check_condition(v["condition"])
            cid = str(next(self._ids))
            self.conditions[cid] = {**v["condition"], "id": cid, "policyId": str(v["policyId"])}
            self.mutations.append("alertsNrqlConditionStaticCreate")
            return {"alertsNrqlConditionStaticCreate": {"id": cid, "name": v["condition"]["name"]}}
        if "alertsNrqlConditionStaticUpdate" in query:
            self._account(v)
            cid = str(v.get("id"))
            if cid not in self.conditions:
                raise _GraphQLError("condition not found")
            merged = {**self.conditions[cid], **v["condition"]}
            _check_condition(merged)
            self.conditions[cid] = merged
            self.mutations.append("alertsNrqlConditionStaticUpdate")
            return {"alertsNrqlConditionStaticUpdate": {"id": cid, "name": merged["name"]}}
        if "dashboardCreate" in query:
            self._account(v)
            _check_dashboard(v["dashboard"])
            guid = f"GUID-{next(self._ids)}"
            self.dashboards[guid] = {**v["dashboard"], "guid": guid}
            self.mutations.append("dashboardCreate")
            return {"dashboardCreate": {"entityResult": {"guid": guid, "name": v["dashboard"]["name"]},
                                        "errors": []}}
        if "dashboardUpdate" in query:
            guid = v.get("guid")
            if guid not in self.dashboards:
                raise _GraphQLError("dashboard not found")
            _check_dashboard(v["dashboard"])
            self.dashboards[guid] = {**v["dashboard"], "guid": guid}
            self.mutations.append("dashboardUpdate")
            return {"dashboardUpdate": {"entityResult": {"guid": guid, "name": v["dashboard"]["name"]},
                                        "errors": []}}
        if "policiesSearch" in query:
            self._account(v)
            found = [p for p in self.policies.values() if p["name"] == v.get("name")]
            return {"actor": {"account": {"alerts": {"policiesSearch": {"policies": found}}}}}
        if "nrqlConditionsSearch" in query:
            self._account(v)
            found = [{k: c[k] for k in c if k != "policyId"} for c in self.conditions.values()
                     if c["policyId"] == str(v.get("policyId"))]
            return {"actor": {"account": {"alerts": {"nrqlConditionsSearch": {"nrqlConditions": found}}}}}
        if "entitySearch" in query:
            q = str(v.get("query", ""))
            found = [{"guid": g, "name": d["name"]} for g, d in self.dashboards.items()
                     if f"name = '{d['name']}'" in q and "DASHBOARD" in q]
            return {"actor": {"entitySearch": {"results": {"entities": found}}}}
        if "entity(" in query:
            d = self.dashboards.get(v.get("guid"))
            if d is None:
                return {"actor": {"entity": None}}
            return {"actor": {"entity": {k: d[k] for k in d if k != "guid"}}}
        raise _GraphQLError("unsupported operation")


class _GraphQLError(Exception):
    pass


def _check_condition(c: dict[str, Any]) -> None:
    if not c.get("name") or not isinstance(c.get("enabled"), bool):
        raise _GraphQLError("condition needs name and enabled")
    query = (c.get("nrql") or {}).get("query")
    if not isinstance(query, str) or not query.upper().startswith("SELECT"):
        raise _GraphQLError("condition needs nrql.query starting with SELECT")
    signal = c.get("signal") or {}
    window = signal.get("aggregationWindow")
    if not isinstance(window, int) or not 30 <= window <= 7200:
        raise _GraphQLError("signal.aggregationWindow must be 30..7200 seconds")
    if signal.get("aggregationMethod") not in ("EVENT_FLOW", "EVENT_TIMER", "CADENCE"):
        raise _GraphQLError("signal.aggregationMethod invalid")
    terms = c.get("terms")
    if not isinstance(terms, list) or not terms:
        raise _GraphQLError("terms required")
    for t in terms:
        if t.get("operator") not in OPERATORS or t.get("priority") not in ("CRITICAL", "WARNING"):
            raise _GraphQLError("term operator/priority invalid")
        if t.get("thresholdOccurrences") not in ("ALL", "AT_LEAST_ONCE"):
            raise _GraphQLError("term thresholdOccurrences invalid")
        dur = t.get("thresholdDuration")
        if not isinstance(dur, int) or dur < window or dur % window or dur > 86400:
            raise _GraphQLError("thresholdDuration must be a multiple of aggregationWindow, at most 86400")
        if not _num(t.get("threshold")):
            raise _GraphQLError("threshold must be a number")
    if not sum(1 for t in terms if t["priority"] == "CRITICAL") == 1:
        raise _GraphQLError("exactly one CRITICAL term")


def _check_dashboard(d: dict[str, Any]) -> None:
    if not d.get("name") or d.get("permissions") not in ("PUBLIC_READ_WRITE", "PUBLIC_READ_ONLY", "PRIVATE"):
        raise _GraphQLError("dashboard needs name and permissions")
    pages = d.get("pages")
    if not isinstance(pages, list) or not pages:
        raise _GraphQLError("dashboard needs pages")
    for page in pages:
        for w in page.get("widgets") or []:
            if not w.get("title") or not (w.get("visualization") or {}).get("id"):
                raise _GraphQLError("widget needs title and visualization.id")
            queries = (w.get("rawConfiguration") or {}).get("nrqlQueries")
            if not queries or not all(isinstance(q.get("accountIds"), list) and q.get("query") for q in queries):
                raise _GraphQLError("widget needs rawConfiguration.nrqlQueries with accountIds and query")
