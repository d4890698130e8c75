"""The IChIS SMART on FHIR app: a confidential SMART App Launch 2.2 client and the clinician-facing
details page, served under ``/smart`` by the same Flask app as the CDS service.

``install_smart_app(app, settings, environ)`` adds it to the app ``cds_service.create_app`` built.
See docs/smart.md for what it shows, how a hospital registers it, and its settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from flask import Flask

from smart_app.runtime import ServiceRuntime, SmartRuntime, Spool, attach
from smart_app.session import CookieCodec, SessionStore, session_secret
from smart_app.settings import SmartSettings, frame_ancestors, load_smart_settings
from smart_app.views import blueprint

__all__ = ["SmartSettings", "install_smart_app"]

log = logging.getLogger("ichis.smart")


def install_smart_app(
    app: Flask,
    settings: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    service: ServiceRuntime,
    http: requests.Session,
    clock: Callable[[], datetime],
    spool: Spool,
    table: Mapping[str, Any] | None = None,
) -> None:
    """Serve the SMART app under ``/smart`` on the CDS service's ``app``.

    ``table`` is the site file's ``[smart]`` table; ``ICHIS_SMART_*`` variables from ``environ``
    (default ``os.environ``) override it, and ``settings`` (tests) override both.
    The service's runtime gives the site's mapping configuration, ``data_dir``, the public base
    URL and the ``allow_http_fhir`` development switch. A ConfigurationError stops the start.
    """
    allow_http = bool(service.settings.allow_http_fhir)
    smart = load_smart_settings(settings, environ, allow_http=allow_http, table=table)
    data_dir = Path(service.settings.data_dir)
    secret = session_secret(smart.session_secret, data_dir)
    attach(
        app,
        SmartRuntime(
            settings=smart,
            store=SessionStore(data_dir / "smart.sqlite"),
            codec=CookieCodec(secret, smart.session_max_age_seconds),
            # The service's connection pool (closed with the app by close_app).
            http=http,
            allow_http=allow_http,
            frame_ancestors=frame_ancestors(smart),
            service=service,
            clock=clock,
            spool=spool,
        ),
    )
    app.register_blueprint(blueprint)
    if not smart.trusted_iss:
        log.warning("the SMART app trusts no EHR (trusted_iss is empty): every launch will be refused")
    if not smart.client_secret:
        log.warning("the SMART app has no client secret (client_secret): every launch will be refused")
