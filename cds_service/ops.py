"""Operations endpoints: liveness, readiness and Prometheus metrics.

- ``GET /healthz``: the process answers (liveness); nothing else is checked.
- ``GET /readyz``: 200 or 503 with the lists of what is ok and what is failing: the audit FHIR
  server answers ``/metadata``, the audit spool is writable, each trusted issuer's key set loads.
- ``GET /metrics``: Prometheus text format; with ``metrics_token`` set, only for a scraper that
  sends it as a Bearer token. Under gunicorn every worker writes its samples to
  ``PROMETHEUS_MULTIPROC_DIR`` (set by ``ichis serve``) and a scrape aggregates them, so the
  numbers do not depend on which worker answers.
"""

from __future__ import annotations

import hmac
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import requests
from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from cds_service.audit import AuditSpool
from cds_service.auditing import CallNotes, notes
from cds_service.auth import AuthenticationFailed
from cds_service.errors import outcome_response
from cds_service.metrics import (
    AUTH_FAILURES,
    CARDS,
    FEEDBACK,
    FHIR_CALLBACK_LATENCY,
    HOOK_LATENCY,
    HOOK_REQUESTS,
    PREFETCH_KEYS,
    record_hook,
)
from cds_service.wiring import current

blueprint = Blueprint("ops", __name__)


class SpoolCollector(Collector):
    """Spool depth and delivery counts, read from the shared SQLite spool at scrape time."""

    def __init__(self, spool: AuditSpool) -> None:
        self.spool = spool

    def collect(self) -> Iterator[Any]:
        stats = self.spool.stats()
        yield GaugeMetricFamily("ichis_audit_spool_depth", "AuditEvents not yet delivered", value=stats.depth)
        yield GaugeMetricFamily(
            "ichis_audit_spool_rejected",
            "AuditEvents the audit server refused for good",
            value=stats.rejected,
        )
        yield GaugeMetricFamily(
            "ichis_audit_spool_oldest_seconds",
            "Age of the oldest undelivered AuditEvent",
            value=stats.oldest_age_seconds or 0.0,
        )
        yield CounterMetricFamily("ichis_audit_delivered", "AuditEvents delivered", value=stats.delivered)
        yield CounterMetricFamily(
            "ichis_audit_delivery_failures", "Failed AuditEvent delivery attempts", value=stats.failures
        )


@blueprint.get("/healthz")
def healthz() -> Response:
    return Response('{"status": "ok"}', mimetype="application/json")


def _readiness() -> tuple[list[str], list[str]]:
    service = current()
    runtime, spool, authenticator = service.runtime, service.spool, service.authenticator
    ok: list[str] = []
    failing: list[str] = []
    audit_url = runtime.settings.audit_fhir_url
    if audit_url and audit_url != "ehr":
        try:
            reply = requests.get(
                f"{audit_url.rstrip('/')}/metadata",
                timeout=2,
                headers={"Accept": "application/fhir+json"},
                allow_redirects=False,
            )
            (ok if reply.status_code == 200 else failing).append(f"audit FHIR server {audit_url}")
        except requests.RequestException:
            failing.append(f"audit FHIR server {audit_url} (unreachable)")
    (ok if spool.writable() else failing).append("audit spool writable")
    depth = spool.stats()
    if depth.rejected:
        failing.append(f"audit spool holds {depth.rejected} record(s) the audit server refused")
    if authenticator is not None:
        if not runtime.issuers:
            failing.append("no trusted issuers configured")
        for issuer in runtime.issuers:
            url = issuer.jwks_url
            if url is None:
                ok.append(f"key set of {issuer.iss} (inline)")
                continue
            try:
                authenticator.keys.ensure_loaded(url)
                ok.append(f"key set of {issuer.iss}")
            except AuthenticationFailed:
                failing.append(f"key set of {issuer.iss} ({url}) cannot be loaded")
    return ok, failing


@blueprint.get("/readyz")
def readyz() -> Response:
    ok, failing = _readiness()
    body = {"status": "ok" if not failing else "failing", "ok": ok, "failing": failing}
    return Response(json.dumps(body), status=200 if not failing else 503, mimetype="application/json")


@blueprint.get("/metrics")
def metrics() -> Response:
    expected = current().runtime.settings.metrics_token
    if expected:
        scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
            response = outcome_response(401, "GET /metrics needs the metrics token.", "login")
            response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return Response(generate_latest(current().metrics), mimetype=CONTENT_TYPE_LATEST)


def metrics_registry(spool: AuditSpool) -> CollectorRegistry:
    """The registry a scrape reads: all workers' samples (multiprocess) plus the spool."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # prometheus_client lacks hints here
    else:
        registry = CollectorRegistry()
        for collector in (HOOK_REQUESTS, HOOK_LATENCY, PREFETCH_KEYS, FHIR_CALLBACK_LATENCY, CARDS, FEEDBACK,
                          AUTH_FAILURES):  # fmt: skip
            registry.register(collector)
    registry.register(SpoolCollector(spool))
    return registry


def install_request_timing(app: Flask) -> None:
    """Hook-call counts and latency by service, hook and outcome."""

    @app.before_request
    def _start_timer() -> None:
        g.ops_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        if request.endpoint == "cds.call_service":
            facts = notes()
            cards = 1 if facts.card_uuid else 0
            record_hook(
                (request.view_args or {}).get("service_id", ""),
                facts.hook or "unknown",
                response.status_code,
                cards,
                time.perf_counter() - g.get("ops_started", time.perf_counter()),
            )
            if cards:
                CARDS.labels(_stratum(facts)).inc()
        elif request.endpoint == "cds.feedback" and response.status_code == 200:
            for item in notes().feedback:
                FEEDBACK.labels(item.outcome).inc()
        if response.status_code == 401:
            AUTH_FAILURES.inc()
        return response


def _stratum(facts: CallNotes) -> str:
    if facts.score is not None:
        return f"ichis-{facts.score}"
    return facts.status_of_score or "unknown"
