"""``ichis cohort extract | analyze | synth``: the command line of the cohort tool.

Errors are one line on standard error with a non-zero exit code (2 usage, 3 input, 4 configuration,
5 server, 1 anything else the tool could not do); progress bars go to standard error, results to
files and a short summary to standard output.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cohort.definition import load_definition
from cohort.engines import open_engine
from cohort.errors import CohortConfigError, CohortError, CohortInputError, CohortUsageError
from cohort.extract import ExtractionSummary, extract_rows, write_summary
from cohort.sources import discover
from cohort.synth import SYNTHETIC_NOTICE, SynthOptions, write_cohort
from cohort.table import read_table, write_rows
from fhir_mappings.config import ConfigurationError, read_site_file

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_INTERRUPTED = 130


def _say(text: str) -> None:
    """One line of the command's summary on standard output."""
    sys.stdout.write(text + "\n")


def _progress(label: str, total: int | None, unit: str = "it") -> Callable[[int], None]:
    """A tqdm bar on standard error (silent when it is not a terminal); returns its update function."""
    bar = tqdm(
        total=total, desc=label, unit=unit, file=sys.stderr, disable=None, leave=False, unit_scale=True
    )

    def update(n: int) -> None:
        bar.update(n)

    return update


def _read_config(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        return read_site_file(Path(path))
    except ConfigurationError as error:
        raise CohortConfigError(str(error)) from None


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date like 2023-08-31") from None


def _formats(text: str) -> list[str]:
    found = [f.strip() for f in text.split(",") if f.strip()]
    if not found or any(f not in ("parquet", "csv") for f in found):
        raise argparse.ArgumentTypeError("--format takes parquet, csv or both (parquet,csv)")
    return found


def _auth(args: argparse.Namespace) -> Any:
    # The Bulk Data client (requests, PyJWT, cryptography) loads only when a server is asked for.
    from cohort.bulk import DEFAULT_SCOPE, BackendAuth  # noqa: PLC0415

    if not args.client_id:
        if args.private_key:
            raise CohortUsageError("--private-key needs --client-id (SMART Backend Services)")
        return None
    if not args.private_key or not args.key_id:
        raise CohortUsageError("--client-id needs --private-key and --key-id (SMART Backend Services)")
    try:
        pem = Path(args.private_key).read_bytes()
    except OSError as error:
        raise CohortConfigError(f"cannot read --private-key {args.private_key}: {error.strerror}") from None
    return BackendAuth(
        client_id=args.client_id,
        private_key_pem=pem,
        key_id=args.key_id,
        algorithm=args.auth_alg,
        scope=args.scope or DEFAULT_SCOPE,
        token_url=args.token_url,
    )


def _extract(args: argparse.Namespace) -> int:

    if args.cutoff > datetime.now(UTC).date() + timedelta(days=1):
        # Patients would be censored at a day not yet lived: follow-up times that no one observed.
        # (One day of slack: the site's today may be tomorrow in UTC.)
        raise CohortUsageError(f"--cutoff {args.cutoff} is in the future: follow-up after today is not known")
    definition = load_definition(_read_config(args.config), args.cutoff)
    out = Path(args.out)
    inputs = [Path(p) for p in args.inputs]
    if args.fhir_server:
        if inputs:
            raise CohortUsageError("give either NDJSON inputs or --fhir-server, not both")
        folder = Path(args.download_dir) if args.download_dir else out / "ndjson"
        from cohort.bulk import BulkClient  # noqa: PLC0415 - as in _auth

        client = BulkClient(args.fhir_server, auth=_auth(args), max_wait=args.max_wait)
        downloaded = _progress("$export download", None, "B")
        client.export(folder, group=args.group, on_status=lambda s: None, on_bytes=downloaded)
        inputs = [folder]
    elif not inputs:
        raise CohortUsageError("give NDJSON files or folders, or --fhir-server URL for a Bulk Data $export")
    sources = discover(inputs)
    summary = ExtractionSummary()
    with open_engine(args.engine, args.spark_master) as engine:

        def progress(label: str, total: int | None) -> Callable[[int], None]:
            return _progress(label, total, "patients")

        rows = extract_rows(engine, sources, definition, summary, progress)
        paths = write_rows(rows, out, args.format)
    summary_path = write_summary(summary, out, definition.cutoff)
    _say(f"cohort table: {', '.join(str(p) for p in paths)}")
    _say(
        f"patients with a first checkpoint-inhibitor dose by {definition.cutoff}: {summary.cohort_patients}; "
        f"rows: {summary.rows}; IChIS complete: {summary.scored_complete}"
    )
    # Who was left out and why (the counts of a flow diagram): on standard error and in the file.
    sys.stderr.write(
        f"patients seen: {summary.patients_seen}; with a first dose: {summary.cohort_patients}; "
        f"rows: {summary.rows} (summary: {summary_path})\n"
    )
    for reason, count in sorted(summary.left_out.items(), key=lambda item: (-item[1], item[0])):
        sys.stderr.write(f"left out: {count} patient(s): {reason}\n")
    if summary.synthetic_rows:
        _say(f"SYNTHETIC DATA: {summary.synthetic_rows} rows come from synthetic patients")
    for skipped in summary.skipped_files:
        _say(f"not read: {skipped}")
    for name in summary.bom_files:
        _say(f"read without the byte-order mark it starts with: {name}")
    return EXIT_OK


def _analyze(args: argparse.Namespace) -> int:
    # The statistics stack (lifelines, matplotlib) loads only for this command.
    from cohort.report import analyze, parse_covariates  # noqa: PLC0415

    if args.bootstrap < 0:
        raise CohortUsageError("--bootstrap must be 0 (no intervals) or more resamples")
    table = read_table(Path(args.table))
    tick = _progress("endpoints", 2)
    outputs = analyze(
        table,
        Path(args.out),
        source=str(args.table),
        covariates=parse_covariates(args.covariates),
        progress=tick,
        extraction=_extraction_summary(Path(args.table)),
        resamples=args.bootstrap,
        seed=args.seed,
        bootstrap_progress=lambda label, total: _progress(label, total, "resamples"),
    )
    if outputs.synthetic:
        _say("SYNTHETIC DATA: the analysed table comes from synthetic patients")
    for endpoint, analysis in outputs.analyses.items():
        medians = ", ".join(f"IChIS {g.level}: {g.median.text()}" for g in analysis.groups_["ichis"])
        test = analysis.logrank_["ichis"]
        if test is not None:
            p = f"; log-rank p {'<0.001' if test.p < 0.001 else f'{test.p:.3f}'}"
        else:
            p = f"; log-rank not estimable ({analysis.logrank_problems_.get('ichis', 'no test')})"
        _say(f"{endpoint.upper()} median days (95% CI, log-log): {medians}{p}")
    _say(f"report: {outputs.folder / 'report.html'}")
    return EXIT_OK


def _extraction_summary(table: Path) -> dict[str, Any] | None:
    """``extraction-summary.json`` beside the table (the flow diagram's counts), if it is there."""
    path = (table if table.is_dir() else table.parent) / "extraction-summary.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise CohortInputError(f"cannot read {path}: {error}") from None
    return document if isinstance(document, dict) else None


def _synth(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise CohortUsageError("-n must be at least 1")
    options = SynthOptions(
        labs_per_cycle=not args.no_cycle_labs,
        extra_observations=args.extra_observations,
        patients_without_ici=args.bystanders,
    )
    summary = write_cohort(
        Path(args.out),
        args.n,
        args.seed,
        args.cutoff,
        options=options,
        compress=args.gzip,
        progress=_progress("synthetic patients", args.n, "patients"),
    )
    _say(SYNTHETIC_NOTICE)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.resources.items()))
    _say(f"wrote {summary.patients} synthetic patients to {summary.folder} ({counts})")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ichis cohort",
        description="Validate IChIS on a hospital's own patients: extract a cohort table, analyse survival.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    extract = commands.add_parser("extract", help="FHIR Bulk Data NDJSON -> per-patient table (Parquet, CSV)")
    extract.add_argument("inputs", nargs="*", help="NDJSON files or folders (.ndjson, .ndjson.gz)")
    extract.add_argument("--out", required=True, help="output folder (cohort.parquet, cohort.csv)")
    extract.add_argument("--cutoff", required=True, type=_date, help="data cut-off date (YYYY-MM-DD)")
    extract.add_argument("--config", help="site configuration (TOML; [cohort] section)")
    extract.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb")
    extract.add_argument("--spark-master", help="Spark master URL (default local[2])")
    extract.add_argument(
        "--format", type=_formats, default=["parquet", "csv"], help="parquet,csv (default both)"
    )
    bulk = extract.add_argument_group("Bulk Data $export")
    bulk.add_argument("--fhir-server", help="FHIR base URL to export from instead of NDJSON inputs")
    bulk.add_argument("--group", help="export Group/ID/$export instead of the whole system")
    bulk.add_argument("--download-dir", help="where the exported NDJSON goes (default OUT/ndjson)")
    bulk.add_argument("--max-wait", type=float, default=3600.0, help="seconds to wait for the export (3600)")
    bulk.add_argument("--client-id", help="SMART Backend Services client id")
    bulk.add_argument("--private-key", help="PEM private key that signs the client assertion")
    bulk.add_argument("--key-id", help="kid of the signing key as registered with the server")
    bulk.add_argument("--auth-alg", choices=("RS384", "ES384"), default="RS384")
    bulk.add_argument("--token-url", help="token endpoint (default: from .well-known/smart-configuration)")
    bulk.add_argument("--scope", help="scopes to request (default: system/<Type>.rs for each type read)")
    extract.set_defaults(handler=_extract)

    analyze = commands.add_parser(
        "analyze", help="Kaplan-Meier, log-rank, Cox: Tables 3 and 4, plots, report"
    )
    analyze.add_argument("table", help="cohort.parquet or cohort.csv (or the folder holding it)")
    analyze.add_argument("--out", required=True, help="output folder")
    analyze.add_argument("--covariates", help="multivariate covariates, e.g. 'pfs=pdl1,agent;os=ecog,agent'")
    analyze.add_argument(
        "--bootstrap", type=int, default=1000, help="resamples for the C and AUC intervals (default 1000)"
    )
    # Defaults as cohort.validation.RESAMPLES and SEED (not imported here: --help stays fast).
    analyze.add_argument("--seed", type=int, default=2024, help="seed of the bootstrap (default 2024)")
    analyze.set_defaults(handler=_analyze)

    synth = commands.add_parser("synth", help="write a SYNTHETIC cohort as NDJSON (calibrated to the paper)")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("-n", type=int, default=143, help="patients (default 143, as in the paper)")
    synth.add_argument("--seed", type=int, default=1)
    synth.add_argument(
        "--cutoff", type=_date, default=date(2023, 8, 31), help="data cut-off (default 2023-08-31)"
    )
    synth.add_argument("--gzip", action="store_true", help="write .ndjson.gz")
    synth.add_argument(
        "--no-cycle-labs", action="store_true", help="only baseline blood counts (smaller files)"
    )
    synth.add_argument("--extra-observations", type=int, default=0, help="vital signs per patient (volume)")
    synth.add_argument("--bystanders", type=int, default=0, help="patients without a checkpoint inhibitor")
    synth.set_defaults(handler=_synth)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one cohort subcommand; a CohortError becomes one line on standard error and its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        code: int = args.handler(args)
        return code
    except CohortError as error:
        sys.stderr.write(f"ichis cohort: {error}\n")
        return error.exit_code
    except OSError as error:
        # An output folder that cannot be made or written (read errors of the input are CohortErrors).
        where = f"{error.filename}: " if error.filename else ""
        sys.stderr.write(f"ichis cohort: cannot write {where}{error.strerror or error}\n")
        return EXIT_OTHER
    except KeyboardInterrupt:
        sys.stderr.write("ichis cohort: interrupted\n")
        return EXIT_INTERRUPTED
