"""Cohort validation of IChIS: a per-patient table from FHIR Bulk Data, and the paper's survival analysis.

``extract`` reads NDJSON (a folder or a Bulk Data ``$export``) with one extraction plan run on DuckDB or
Spark, and scores each patient through ``fhir_mappings.assessment.assess``; ``analyze`` fits
Kaplan-Meier, log-rank and Cox models and writes the paper's Tables 3 and 4 with plots; ``synth``
writes a synthetic cohort calibrated to the published strata.
"""

from cohort.errors import CohortError

__all__ = ["CohortError"]
