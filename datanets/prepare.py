"""The CPU-bound part of an ingest: validate, normalise, hash, count tokens and flag a chunk of records.

No Django: the ingest runs it in its own process for small files and in worker processes for big
JSONL files (``prepare_jsonl`` takes raw lines, so little crosses between processes); the result is
the same either way. Storing, exact duplicates and near-duplicates need the database and stay in
the ingest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import flags, records

TOKEN = re.compile(r"\w+|[^\w\s]")
# For ASCII text: the characters the TOKEN regex counts one by one (neither \w nor \s).
_ASCII_WORD_OR_SPACE = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_ \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
_NOT_WORD_TO_SPACE = bytes(c if c in _ASCII_WORD_OR_SPACE[:63] else 32 for c in range(256))


def token_count(text: str) -> int:
    """Tokens as words and punctuation marks: a tokenizer-independent estimate, stable across base models."""
    if text.isascii():  # the same count as the regex, without building a list of matches
        data = text.encode()
        return len(data.translate(_NOT_WORD_TO_SPACE).split()) + len(data.translate(None, _ASCII_WORD_OR_SPACE))
    return len(TOKEN.findall(text))


@dataclass(slots=True)
class Prepared:
    """A valid record with everything the ingest stores about it, short of its near-duplicates."""

    number: int
    content: dict
    content_hash: str
    text: str
    tokens: int
    flags: list[dict]  # personal data; the ingest adds near_duplicate
    signature: bytes  # MinHash, as stored on the record (flags.signature_bytes)
    keys: list[int]  # LSH band keys (flags.band_keys)


def prepare_lines(lines: list[records.Line], schema: str) -> list[records.Line | Prepared]:
    """Each line as a Prepared record, or as a Line with its error (the same reasons as make_record)."""
    out: list[records.Line | Prepared] = []
    valid: list[tuple[int, records.Record]] = []
    for line in lines:
        reason = line.error
        if reason is None:
            try:
                record = records.make_record(line.value, schema)
            except ValueError as error:
                reason = str(error)
        if reason is not None:
            out.append(line if line.error else records.Line(line.number, error=reason))
            continue
        valid.append((len(out), record))
        out.append(None)  # type: ignore[arg-type]  # filled below
    if valid:
        signatures = flags.signatures([record.text for _, record in valid])
        keys = flags.band_keys(signatures)
        for (at, record), signature, record_keys in zip(valid, signatures, keys, strict=True):
            out[at] = Prepared(
                number=lines[at].number,
                content=record.content,
                content_hash=record.content_hash,
                text=record.text,
                tokens=token_count(record.text),
                flags=flags.personal_data_flags(record.text),
                signature=flags.signature_bytes(signature),
                keys=record_keys,
            )
    return out


def prepare_jsonl(first_number: int, raw_lines: list[bytes], schema: str) -> list[records.Line | Prepared]:
    """``prepare_lines`` for consecutive raw JSONL lines, the first being line ``first_number``."""
    lines = []
    for number, raw in enumerate(raw_lines, start=first_number):
        line = records.parse_jsonl_line(number, raw)
        if line is not None:
            lines.append(line)
    return prepare_lines(lines, schema)
