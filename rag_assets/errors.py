"""Errors the CLI reports in its own words, importable without Dagster."""


class IngestFailed(RuntimeError):
    """A run failed; the message is the step's own error."""
