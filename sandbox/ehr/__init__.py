"""The sandbox EHR: an EHR simulator that fires CDS Hooks, shows cards and launches SMART apps.

``create_ehr_app(settings)`` builds the Flask app; ``python -m sandbox.ehr`` runs it. See
docs/sandbox.md for what it offers and how to use it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from typing import Any

from flask import Flask

from sandbox.ehr.auth_endpoints import auth_blueprint
from sandbox.ehr.errors import register_error_handlers
from sandbox.ehr.fhir_proxy import fhir_blueprint
from sandbox.ehr.pages import pages_blueprint, testing_blueprint
from sandbox.ehr.settings import load_settings
from sandbox.ehr.state import EXTENSION, EhrState

__all__ = ["create_ehr_app"]


def create_ehr_app(settings: Mapping[str, Any] | None = None) -> Flask:
    """A sandbox EHR app: defaults, then ``ICHIS_SANDBOX_*`` environment variables, then ``settings``."""
    config = load_settings(settings)
    # Authlib logs every issued token at DEBUG level; this sandbox never writes a token to a log.
    logging.getLogger("authlib").setLevel(max(logging.INFO, logging.getLogger("authlib").level))
    app = Flask(__name__)
    app.config.update(
        # Workspaces live in memory, so a per-process session key loses nothing on restart.
        SECRET_KEY=config.secret_key or secrets.token_hex(32),
        # Its own cookie name: apps on 127.0.0.1 share cookies across ports, and the SMART app
        # (or the CDS service) would otherwise overwrite the EHR's "session" cookie.
        SESSION_COOKIE_NAME="ichis_sandbox_ehr",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.public_base_url.startswith("https://"),
        TESTING=config.testing,
    )
    app.extensions[EXTENSION] = EhrState(config)
    register_error_handlers(app)
    app.register_blueprint(pages_blueprint)
    app.register_blueprint(auth_blueprint)
    app.register_blueprint(fhir_blueprint)
    app.register_blueprint(testing_blueprint)
    return app
