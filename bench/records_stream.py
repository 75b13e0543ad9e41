"""Benchmark: peak Python memory of writing records.jsonl and the per-contributor summary for N records,
all rows in a list (as publishing did) against streamed rows (as it does now). Pure code, synthetic rows.

    .venv/bin/python bench/records_stream.py --records 200000 --contributors 200
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import tempfile
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from attribution import manifest as manifest_lib  # noqa: E402


def rows(n: int, contributors: int, order: str):
    """Rows as the database hands them: in records.jsonl order, or grouped by contributor."""
    rng = random.Random(0)
    made = [(hashlib.sha256(f"record {i}".encode()).hexdigest(), rng.randrange(contributors)) for i in range(n)]
    key = (lambda r: r[0]) if order == "file" else (lambda r: (r[1], r[0]))
    for content_hash, contributor in sorted(made, key=key):
        yield {
            "content_hash": content_hash,
            "contributor": f"c-{contributor:016x}",
            "datanet": "bench",
            "version": 1,
            "tokens": 100,
            "role": "training",
        }


def peak(work) -> float:
    tracemalloc.start()
    work()
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--contributors", type=int, default=200)
    args = parser.parse_args()
    n, c = args.records, args.contributors
    # The sources are materialised outside the measurement, as the database holds them outside Python.
    file_order, by_contributor = list(rows(n, c, "file")), list(rows(n, c, "contributor"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.jsonl"

        def in_memory():
            listed = [dict(row) for row in file_order]  # publishing built one dict per row and kept them
            path.write_bytes(manifest_lib.records_jsonl(listed))
            manifest_lib.contributor_summary(listed)

        def streamed():
            with open(path, "wb") as handle:
                manifest_lib.records_jsonl_write((dict(row) for row in file_order), handle)
            manifest_lib.contributor_summary_streamed(dict(row) for row in by_contributor)

        print(
            f"{n:,} records, {c} contributors: peak Python memory in a list {peak(in_memory):.1f} MiB, "
            f"streamed {peak(streamed):.2f} MiB"
        )


if __name__ == "__main__":
    main()
