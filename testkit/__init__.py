"""Helpers for the tests and the benchmarks, never imported by the product: a tiny real model
(tiny_model.py), generated Datanets with known attribution (synthetic.py) and rank statistics (ranks.py)."""
