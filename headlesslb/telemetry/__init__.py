"""Observers of a client's events: logs, OpenTelemetry, Prometheus (see docs/observability.md).

Every module here reads :mod:`headlesslb.core.events` and nothing else of the client: the same
events feed all of them, so logs, metrics and spans agree.
"""
