"""Tests of the sandbox EHR (sandbox/ehr)."""
