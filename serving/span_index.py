"""Suffix-array index over the training records' tokens: which spans of an answer were in the data. No Django.

Layout: the records' token ids are concatenated with a separator after each record (a value no
tokenizer produces, so no match crosses a record boundary) and stored big-endian, so that comparing
raw bytes compares token sequences; ``sa.npy`` is the suffix array (pydivsufsort) and
``offsets.npy`` the start of each record, which maps a position to its record by binary search.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEPARATOR = 0xFFFFFFFF
DTYPE = np.dtype(">u4")
FILES = ("tokens.npy", "sa.npy", "offsets.npy", "meta.json")


@dataclass(frozen=True)
class Span:
    """answer_ids[start:end] occurs in the records; ``records`` are the first few records holding it."""

    start: int
    end: int
    records: list[int]
    occurrences: int


def build(records: Iterable[list[int]], dest: Path | str) -> dict:
    """Write the index of these token sequences (one per record, in record order) to ``dest``."""
    from pydivsufsort import divsufsort

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    chunks, offsets, position = [], [], 0
    for ids in records:
        offsets.append(position)
        chunks.append(np.asarray(list(ids) + [SEPARATOR], dtype=np.uint32))
        position += len(chunks[-1])
    tokens = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint32)
    sa = divsufsort(tokens) if len(tokens) else np.zeros(0, dtype=np.int32)
    np.save(dest / "tokens.npy", tokens.astype(DTYPE))
    np.save(dest / "sa.npy", sa)
    np.save(dest / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    meta = {"records": len(offsets), "tokens": int(len(tokens) - len(offsets))}
    (dest / "meta.json").write_text(json.dumps(meta))
    return meta


class _Suffixes:
    """The suffix array as a sequence of byte strings, for bisect: suffix i is at most ``width`` tokens."""

    def __init__(self, data: bytes, sa: np.ndarray, width: int):
        self.data, self.sa, self.width = data, sa, width

    def __len__(self) -> int:
        return len(self.sa)

    def __getitem__(self, i: int) -> bytes:
        start = int(self.sa[i]) * 4
        return self.data[start : start + self.width * 4]


class SpanIndex:
    def __init__(self, directory: Path | str):
        directory = Path(directory)
        tokens = np.load(directory / "tokens.npy", mmap_mode="r")
        self.data = tokens.tobytes()  # bytes slices compare lexicographically, like the token sequences
        self.sa = np.load(directory / "sa.npy")
        self.offsets = np.load(directory / "offsets.npy")
        self.meta = json.loads((directory / "meta.json").read_text())

    def _common(self, query: bytes, suffix_rank: int) -> int:
        """Tokens that the query and the suffix at this rank share at their start."""
        start = int(self.sa[suffix_rank]) * 4
        other = self.data[start : start + len(query)]
        n = min(len(query), len(other)) // 4
        a = np.frombuffer(query, dtype=DTYPE, count=n)
        b = np.frombuffer(other, dtype=DTYPE, count=n)
        differ = np.flatnonzero(a != b)
        return int(differ[0]) if len(differ) else n

    def longest_match(self, ids: list[int], max_tokens: int = 256) -> tuple[int, int, int]:
        """(length, first rank, end rank) of the longest prefix of ``ids`` found in the records.

        The suffix sharing the longest prefix with the query sorts next to where the query would go,
        so one binary search and two comparisons find it; the ranks holding that prefix are contiguous.
        """
        if not len(self.sa) or not ids:
            return 0, 0, 0
        query = np.asarray(ids[:max_tokens], dtype=DTYPE).tobytes()
        width = len(query) // 4
        suffixes = _Suffixes(self.data, self.sa, width)
        rank = bisect.bisect_left(suffixes, query)
        best = max(
            self._common(query, rank - 1) if rank > 0 else 0,
            self._common(query, rank) if rank < len(self.sa) else 0,
        )
        if best == 0:
            return 0, rank, rank
        prefix = query[: best * 4]
        narrow = _Suffixes(self.data, self.sa, best)
        lo = bisect.bisect_left(narrow, prefix)
        hi = bisect.bisect_right(narrow, prefix, lo=lo)
        return best, lo, hi

    def record_of(self, position: int) -> int:
        return int(np.searchsorted(self.offsets, position, side="right") - 1)

    def find_spans(self, ids: list[int], min_tokens: int, max_records: int = 3) -> list[Span]:
        """Maximal spans of at least ``min_tokens`` tokens of ``ids`` that occur in the records, left to right."""
        spans, i = [], 0
        while i + min_tokens <= len(ids):
            length, lo, hi = self.longest_match(ids[i:])
            if length < min_tokens:
                i += 1
                continue
            positions = sorted(int(p) for p in self.sa[lo : min(hi, lo + 64)])
            records = []
            for position in positions:
                record = self.record_of(position)
                if record not in records:
                    records.append(record)
                if len(records) == max_records:
                    break
            spans.append(Span(i, i + length, records, hi - lo))
            i += length
        return spans
