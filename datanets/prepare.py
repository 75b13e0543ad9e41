"""The CPU-bound part of an ingest: validate, normalise, hash, count tokens and flag a chunk of records.

No Django: the ingest runs it in its own process for small files and in worker processes for big
JSONL files (``prepare_jsonl`` takes raw lines, so little crosses between processes); the result is
the same either way. Storing, exact duplicates and near-duplicates need the database and stay in
the ingest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import orjson

from . import flags, records

TOKEN = re.compile(r"\w+|[^\w\s]")
# For ASCII text, what each byte is to the TOKEN regex: 0 space (\s), 1 part of a word (\w), 2 a token of its own.
_ASCII_WORD = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
_ASCII_SPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
_TOKEN_CLASS = bytes(1 if c in _ASCII_WORD else 0 if c in _ASCII_SPACE else 2 for c in range(256))


def token_counts(texts: list[str]) -> list[int]:
    """Tokens of each text as words and punctuation marks (the TOKEN regex): a tokenizer-independent
    estimate, stable across base models. ASCII texts (most) are counted all at once with numpy."""
    counts = [0] * len(texts)
    plain = []
    for at, text in enumerate(texts):
        if text.isascii():
            plain.append(at)
        else:
            counts[at] = len(TOKEN.findall(text))
    if plain:
        # Each text and a space after it (which keeps words apart and counts for nothing), as byte classes.
        kind = np.frombuffer(" ".join([texts[at] for at in plain] + [""]).encode().translate(_TOKEN_CLASS), np.uint8)
        word = kind == 1
        token = kind == 2
        token[0] |= word[0]
        token[1:] |= word[1:] & ~word[:-1]  # a word counts where it starts
        starts = np.cumsum([0] + [len(texts[at]) + 1 for at in plain[:-1]])
        for at, count in zip(plain, np.add.reduceat(token, starts, dtype=np.int64).tolist(), strict=True):
            counts[at] = count
    return counts


@dataclass(slots=True)
class Prepared:
    """A chunk of lines, prepared: the valid records, column by column in line order, with everything
    the ingest stores about them short of their near-duplicates, and the bad lines with their reasons.
    Plain lists of strings and one array pickle fast on their way back from a worker process."""

    lines: int  # lines that hold a record, good or bad (blank lines are not counted)
    errors: list[tuple[int, str]]  # (line number, reason)
    numbers: list[int]
    contents: list[str]  # canonical JSON (records.canonical_bytes)
    hashes: list[str]
    tokens: list[int]
    flags: list[list[dict]]  # personal data; the ingest adds near_duplicate
    keys: np.ndarray  # (records, flags.BANDS) int64: LSH band keys (flags.band_keys)


def prepare_lines(lines: list[records.Line], schema: str) -> Prepared:
    """The records of ``lines``, validated and prepared, and the bad lines with the same reasons as make_record."""
    errors, valid = [], []
    for line in lines:
        reason = line.error
        if reason is None:
            try:
                valid.append((line.number, records.make_record(line.value, schema)))
                continue
            except ValueError as error:
                reason = str(error)
        errors.append((line.number, reason))
    texts = [record.text for _, record in valid]
    return Prepared(
        lines=len(lines),
        errors=errors,
        numbers=[number for number, _ in valid],
        contents=[record.canonical for _, record in valid],
        hashes=[record.content_hash for _, record in valid],
        tokens=token_counts(texts),
        flags=flags.personal_data_flags_many(texts),
        keys=flags.band_keys(flags.signatures(texts)),
    )


def prepare_jsonl(first_number: int, raw_lines: list[bytes], schema: str) -> Prepared:
    """``prepare_lines`` for consecutive raw JSONL lines, the first being line ``first_number``."""
    lines = []
    loads, limit, depth = orjson.loads, records.MAX_RECORD_BYTES, records.MAX_DEPTH
    for number, raw in enumerate(raw_lines, start=first_number):
        # The usual line: orjson parses it, and with so few brackets it cannot nest too deep.
        if len(raw) <= limit and raw.count(b"{") + raw.count(b"[") <= depth:
            try:
                lines.append(records.Line(number, value=loads(raw)))
                continue
            except orjson.JSONDecodeError:
                pass  # the standard parser words the reason the same way for every line (or skips a blank one)
        line = records.parse_jsonl_line(number, raw)
        if line is not None:
            lines.append(line)
    return prepare_lines(lines, schema)
