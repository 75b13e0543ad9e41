"""Ingest of an upload: the pipeline (pipeline.py) and the row store for two databases (rowstore.py).
The use cases around it (create, ingest, cancel an upload) are in datanets/services.py."""
