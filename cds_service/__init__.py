"""The CDS Hooks service: a Flask app built by ``create_app``.

https://cds-hooks.hl7.org/2.0/ — discovery, order-select and order-sign hooks, feedback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from flask import Flask

from cds_service.audit import AuditDeliverer, AuditSpool
from cds_service.auditing import install_auditing
from cds_service.errors import install_error_handlers
from cds_service.logs import install_request_logging
from cds_service.ops import blueprint as ops_blueprint
from cds_service.ops import install_request_timing, metrics_registry
from cds_service.security import build_client_authenticator, install_security
from cds_service.settings import audit_destinations, build_runtime, load_settings
from cds_service.store import Store
from cds_service.views import blueprint
from cds_service.wiring import Service, attach, service_of
from fhir_mappings.config import ConfigurationError
from fhir_mappings.outbound import outbound_session
from smart_app import install_smart_app


def _now() -> datetime:
    return datetime.now(UTC)


def create_app(
    overrides: Mapping[str, Any] | None = None,
    *,
    clock: Callable[[], datetime] = _now,
    environ: Mapping[str, str] | None = None,
    smart: Mapping[str, Any] | None = None,
) -> Flask:
    """Build the service. ``overrides`` replace settings (tests); ``clock`` gives the order time;
    ``smart`` holds SMART app settings over ICHIS_SMART_* and the site file's ``[smart]`` table."""
    settings = load_settings(overrides, environ)
    runtime = build_runtime(settings)
    app = Flask("cds_service")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # One connection pool for FHIR call-backs and key sets, reused across requests of this
    # worker; it never follows a redirect (fhir_mappings.outbound).
    session = outbound_session()
    spool = AuditSpool(settings.data_dir / "audit.sqlite")
    repository = settings.audit_fhir_url if settings.audit_fhir_url not in ("", "ehr") else None
    deliverer = AuditDeliverer(
        spool,
        outbound_session(pool_maxsize=4),
        repository=repository,
        token=settings.audit_token or None,
        destinations=audit_destinations(settings),
        retry_max_seconds=settings.audit_retry_max_seconds,
        poll_seconds=settings.audit_poll_seconds,
    )
    try:
        authenticator = build_client_authenticator(runtime, session)
    except ValueError as error:
        raise ConfigurationError(str(error)) from None
    service = Service(
        runtime=runtime,
        clock=clock,
        store=Store(settings.data_dir / "cds.sqlite"),
        http=session,
        spool=spool,
        deliverer=deliverer,
        metrics=metrics_registry(spool),
        authenticator=authenticator,
    )
    attach(app, service)
    install_request_logging(app)
    install_request_timing(app)
    install_security(app, service)
    app.register_blueprint(blueprint)
    app.register_blueprint(ops_blueprint)
    install_auditing(app, settings, spool, deliverer, clock)
    install_error_handlers(app)
    # The SMART app shares this WSGI app under /smart/ (paths keep the two apart). Its settings
    # come in the same order as the service's: the site file, then ICHIS_SMART_*, then tests'.
    install_smart_app(
        app,
        smart,
        environ=environ,
        service=runtime,
        http=session,
        clock=clock,
        spool=spool,
        table=settings.site.get("smart"),
    )
    return app


def close_app(app: Flask) -> None:
    """Stop the audit deliverer and close connection pools (tests, and worker exit)."""
    service = service_of(app)
    service.deliverer.stop()
    service.deliverer.session.close()
    service.http.close()
