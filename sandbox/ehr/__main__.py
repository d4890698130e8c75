"""``python -m sandbox.ehr --port 8070 --fhir http://127.0.0.1:8080/fhir --cds http://127.0.0.1:8000``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from fhir_mappings.config import ConfigurationError
from sandbox.ehr import create_ehr_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.ehr", description="Run the sandbox EHR.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8070, help="port to listen on (default 8070)")
    parser.add_argument("--fhir", help="the HAPI FHIR base URL behind the EHR (setting fhir_upstream)")
    parser.add_argument("--cds", help="the CDS service base URL, before /cds-services (setting cds_base_url)")
    parser.add_argument("--public-base-url", help="the EHR's URL as browsers and services reach it")
    parser.add_argument("--data-dir", help="where keys and clients.json are kept (setting data_dir)")
    args = parser.parse_args(argv)

    overrides: dict[str, Any] = {}
    if args.fhir:
        overrides["fhir_upstream"] = args.fhir
    if args.cds:
        overrides["cds_base_url"] = args.cds
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    public = args.public_base_url or os.environ.get("ICHIS_SANDBOX_PUBLIC_BASE_URL")
    # Listening on every interface still means browsers on this machine reach it on loopback.
    url_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host  # noqa: S104 - a comparison
    overrides["public_base_url"] = public or f"http://{url_host}:{args.port}"
    if overrides["public_base_url"].startswith("http://"):
        # Authlib refuses OAuth over plain HTTP except on loopback; the sandbox runs on plain HTTP
        # inside a developer machine or a compose network, where that refusal protects nothing.
        os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        app = create_ehr_app(overrides)
    except ConfigurationError as error:
        print(f"sandbox EHR: {error}", file=sys.stderr)  # noqa: T201 - a command's error line
        return 4

    import waitress  # noqa: PLC0415 - only the command needs a server

    print(f"sandbox EHR on {overrides['public_base_url']}/", flush=True)  # noqa: T201 - tells where to go
    waitress.serve(app, host=args.host, port=args.port, threads=8, ident="ichis-sandbox-ehr")
    return 0


if __name__ == "__main__":
    sys.exit(main())
