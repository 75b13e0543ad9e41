"""Exports of a published adapter version: requested here (`services`), built by a task (`tasks`)."""

from .services import export_file_open, export_request, export_run  # noqa: F401
