"""The ``ichis`` command line."""
