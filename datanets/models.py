"""Datanets data model (built by the Datanets issue)."""
