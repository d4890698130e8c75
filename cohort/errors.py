"""The one exception family of the cohort tool; the CLI turns each into one line and an exit code."""

from __future__ import annotations


class CohortError(Exception):
    """A cohort step that cannot go on; the message is one line saying what to fix."""

    exit_code = 1


class CohortUsageError(CohortError):
    """Arguments that do not fit together (a missing --cutoff, an unknown engine)."""

    exit_code = 2


class CohortInputError(CohortError):
    """Input that cannot be read: a missing folder, a file that is not NDJSON, a table without columns."""

    exit_code = 3


class CohortConfigError(CohortError):
    """A ``[cohort]`` or mapping setting that cannot be used; the message names the setting."""

    exit_code = 4


class CohortServerError(CohortError):
    """A FHIR server or authorization server that refused or failed a Bulk Data step."""

    exit_code = 5


class CohortNothingToAnalyse(CohortError):
    """A table in which no patient can be analysed (no complete IChIS with a follow-up time)."""

    exit_code = 6
