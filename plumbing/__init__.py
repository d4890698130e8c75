"""Web plumbing shared by the service, the SMART app and the sandbox EHR: reading settings."""
