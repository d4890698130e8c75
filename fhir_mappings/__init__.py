"""The FHIR R4 boundary: code tables, units, Observation and order mappers, baseline choice.

Pure, except ``client`` (the one module that talks to FHIR servers).
"""
