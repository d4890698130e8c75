"""``ichis serve``: the service under gunicorn, configured from flags and ICHIS_* variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from cds_service import close_app, create_app
from cds_service.logs import configure_logging
from cds_service.wiring import service_of

#: Gunicorn's access line without the query string and the referrer: both can carry an OAuth
#: ``code``, ``state`` or ``launch`` (the SMART callback), which must never reach a log.
ACCESS_LOG_FORMAT = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)s "%(a)s"'


class IchisServer(BaseApplication):
    """Gunicorn with our app factory; the app is built once in the master (preload) so that a
    configuration error stops the start with one clear message instead of failing every worker."""

    def __init__(self, options: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> None:
        self.options = dict(options)
        self.overrides = dict(overrides or {})
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self) -> Flask:
        return create_app(self.overrides)


def _post_worker_init(worker: Any) -> None:
    """Start audit delivery in each worker at once: a restarted service delivers what its spool
    holds even before the first request arrives."""
    service_of(worker.wsgi).deliverer.ensure_running()


def _worker_exit(server: Any, worker: Any) -> None:
    """Let the deliverer finish the record in flight; what is left stays in the spool."""
    app = getattr(worker, "wsgi", None)
    if app is not None:
        close_app(app)


def serve(
    host: str, port: int, workers: int, overrides: Mapping[str, Any] | None = None, threads: int = 4
) -> None:
    # Threaded workers: keep-alive connections from EHRs, and FHIR call-backs of one request do
    # not hold up the others of the same worker while they wait on the network.
    options = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "preload_app": True,
        "worker_class": "gthread",
        "keepalive": 5,
        "timeout": 30,
        "graceful_timeout": 20,
        "accesslog": "-" if os.environ.get("ICHIS_ACCESS_LOG") else None,
        "access_log_format": ACCESS_LOG_FORMAT,
        "post_worker_init": _post_worker_init,
        "worker_exit": _worker_exit,
    }
    configure_logging(os.environ.get("ICHIS_LOG_LEVEL", "INFO"))
    IchisServer(options, overrides).run()
