"""The ``ichis`` command: ``score`` one patient's resources from a file (more subcommands join it).

Exit codes (also in the README):
  0  the file was read and assessed (whatever the score's status)
  2  wrong usage (unknown option, missing argument, bad --at)
  3  the input file cannot be read or is not FHIR JSON / NDJSON
  4  the configuration file cannot be read or is invalid
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_CONFIG = 4


class CliError(Exception):
    """A failure the user can fix; carries the exit code and a one-line message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def read_site_config(path: str | None) -> dict[str, Any]:
    """The parsed TOML site configuration, or {} without a file."""
    if not path:
        return {}
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise CliError(EXIT_CONFIG, f"cannot read configuration {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise CliError(EXIT_CONFIG, f"configuration {path} is not valid TOML: {error}") from None


def parse_at(text: str | None) -> datetime:
    """--at: an ISO 8601 instant with a zone offset; default now in UTC."""
    from fhir_mappings.fhirtime import in_range

    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            EXIT_USAGE, f"--at '{text}' is not an ISO 8601 time, e.g. 2024-03-01T10:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise CliError(EXIT_USAGE, f"--at '{text}' needs a time zone, e.g. 2024-03-01T10:00:00+09:00")
    if not in_range(moment):
        raise CliError(EXIT_USAGE, f"--at '{text}' is outside the dates that can be compared")
    return moment


def _score(args: argparse.Namespace) -> int:
    from fhir_mappings.assessment import assess, assessment_json
    from fhir_mappings.bundles import FhirInputError, outcome_error, parse_document
    from fhir_mappings.config import ConfigurationError, load_mapping_config
    from fhir_mappings.subjects import CallPatient, patients_named

    at = parse_at(args.at)
    try:
        config = load_mapping_config(read_site_config(args.config))
    except ConfigurationError as error:
        raise CliError(EXIT_CONFIG, f"configuration: {error}") from None
    try:
        # utf-8-sig: a byte-order mark (Windows tools write one) is read as nothing (RFC 8259, 8.1).
        text = Path(args.file).read_text("utf-8-sig") if args.file != "-" else sys.stdin.read()
        text = text.removeprefix("\ufeff")
    except OSError as error:
        raise CliError(EXIT_INPUT, f"cannot read {args.file}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise CliError(EXIT_INPUT, f"{args.file} is not UTF-8 text") from None
    try:
        entries = parse_document(text)
    except FhirInputError as error:
        raise CliError(EXIT_INPUT, f"{args.file}: {error}") from None
    for resource, _ in entries:
        if (reported := outcome_error(resource)) is not None:
            # A server's error outcome beside results says they may be partial: a score from them
            # would look complete.
            raise CliError(
                EXIT_INPUT,
                f"{args.file} carries an error OperationOutcome ({reported}); its results may be incomplete",
            )
    if args.patient:
        try:
            patient = CallPatient.parse(args.patient)
        except ValueError:
            raise CliError(EXIT_USAGE, f"--patient '{args.patient}' is not a patient id") from None
    else:
        named = patients_named(entries)
        if len(named) > 1:
            # Scoring results of several patients together would mix their blood counts.
            raise CliError(
                EXIT_INPUT,
                f"{args.file} holds results of {len(named)} patients; choose one with --patient ID",
            )
        if not named:
            # A result that names no patient cannot be told from another patient's: never scored.
            raise CliError(
                EXIT_INPUT,
                f"{args.file} names no patient (no Patient and no result subject); "
                "results without a subject are never scored",
            )
        patient = CallPatient(named.pop())
    assessment = assess(entries, at, config, patient=patient)
    json.dump(assessment_json(assessment), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return EXIT_OK


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise CliError(EXIT_USAGE, f"{name}='{raw}' is not a whole number") from None


def _prepare_metrics_dir() -> None:
    """Prometheus multiprocess mode: every gunicorn worker writes its samples to one directory,
    set before the metrics are created, emptied at each start (old workers' files are stale).
    It must be known before ``cds_service`` is imported, so it comes from the environment:
    PROMETHEUS_MULTIPROC_DIR, else ICHIS_DATA_DIR/metrics, else var/metrics."""
    directory = Path(os.environ.get("ICHIS_DATA_DIR", "var")) / "metrics"
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def _serve(args: argparse.Namespace) -> int:
    _prepare_metrics_dir()
    from cds_service import create_app
    from cds_service.server import serve
    from fhir_mappings.config import ConfigurationError

    overrides = {"config_file": args.config} if args.config else {}
    host = args.host or os.environ.get("ICHIS_HOST", "127.0.0.1")
    port = args.port if args.port is not None else _env_int("ICHIS_PORT", 8080)
    workers = args.workers if args.workers is not None else _env_int("ICHIS_WORKERS", 2)
    threads = args.threads if args.threads is not None else _env_int("ICHIS_THREADS", 4)
    try:
        create_app(overrides)  # fail here, once, with one line, on a bad configuration
    except ConfigurationError as error:
        raise CliError(EXIT_CONFIG, f"configuration: {error}") from None
    serve(host, port, workers, overrides, threads)
    return EXIT_OK


def _cohort(args: argparse.Namespace) -> int:
    from cohort.cli import main as cohort_main

    return cohort_main(args.args)


def _demo(args: argparse.Namespace) -> int:
    from sandbox.demo import DemoStack, run

    stack = DemoStack(
        data_dir=Path(args.data_dir),
        hapi_port=args.hapi_port,
        service_port=args.service_port,
        ehr_port=args.ehr_port,
        fhir=args.fhir,
        say=lambda text: print(text, flush=True),
    )
    return run(stack)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ichis",
        description="IChIS (immune checkpoint inhibitor score) from FHIR blood counts.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    score = commands.add_parser(
        "score",
        help="score one patient's FHIR resources (Bundle JSON or NDJSON)",
        description="Score one patient's resources and print the result as JSON.",
    )
    score.add_argument("file", help="a FHIR Bundle (JSON) or NDJSON file; - for standard input")
    score.add_argument("--at", help="reference time, ISO 8601 with zone (default: now, UTC)")
    score.add_argument("--config", help="site configuration (TOML)")
    score.add_argument(
        "--patient", help="score this patient's resources only (for files of several patients)"
    )
    score.set_defaults(handler=_score)
    run = commands.add_parser(
        "serve",
        help="run the CDS Hooks service under gunicorn",
        description="Run the CDS Hooks service (and, later, the SMART app) under gunicorn.",
    )
    run.add_argument("--host", help="address to bind (ICHIS_HOST, default 127.0.0.1)")
    run.add_argument("--port", type=int, help="port (ICHIS_PORT, default 8080)")
    run.add_argument("--workers", type=int, help="worker processes (ICHIS_WORKERS, default 2)")
    run.add_argument("--threads", type=int, help="threads per worker (ICHIS_THREADS, default 4)")
    run.add_argument("--config", help="site configuration, TOML (ICHIS_CONFIG_FILE)")
    run.set_defaults(handler=_serve)
    demo = commands.add_parser(
        "demo",
        help="run HAPI FHIR, the demo patients, the service and the sandbox EHR; print the URL",
        description="Start the whole stack on this machine and print the URL to open.",
    )
    demo.add_argument("--data-dir", default="var/demo", help="where the demo keeps its data (var/demo)")
    demo.add_argument("--fhir", help="use this FHIR server instead of starting HAPI")
    demo.add_argument("--hapi-port", type=int, default=8090)
    demo.add_argument("--service-port", type=int, default=8080)
    demo.add_argument("--ehr-port", type=int, default=8070)
    demo.set_defaults(handler=_demo)
    # The cohort tool parses its own arguments (extract, analyze, synth); every token goes to it.
    cohort = commands.add_parser(
        "cohort",
        help="cohort validation: extract a table from Bulk Data, survival analysis, synthetic data",
        add_help=False,
        prefix_chars="\x00",
    )
    cohort.add_argument("args", nargs=argparse.REMAINDER)
    cohort.set_defaults(handler=_cohort)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        code: int = args.handler(args)
        sys.stdout.flush()  # here, so that a closed pipe is met inside the try
        return code
    except CliError as error:
        print(f"ichis: {error}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`ichis score x | head`): no traceback, and none at exit either.
        # https://docs.python.org/3/library/signal.html#note-on-sigpipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
