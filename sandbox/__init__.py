"""Sandbox: what stands in for a hospital in development and tests (FHIR server, EHR simulator, demo data)."""
