"""Read contributed files record by record, validate them against a Datanet schema, normalise and hash.

No Django here: the ingest task, the benchmark and the tests call these functions directly.

Canonical form and content hash (documented, stable): a record is normalised (every string NFC,
trimmed; instruction records always carry ``input``, "" when absent; datanets/schemas.py) and serialised as JSON with
sorted keys, no whitespace (separators "," and ":"), non-ASCII characters kept as UTF-8. The
record's content hash is the SHA-256 of those UTF-8 bytes, in lowercase hex.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from .schemas import CHAT_ROLES, SCHEMAS, clean_text, normalise, record_text  # noqa: F401 - the records API

FORMATS = ("jsonl", "json", "csv", "parquet")
MAX_RECORD_BYTES = 64 * 1024
MAX_DEPTH = 6
BINARY_SNIFF = 8192


class FileError(ValueError):
    """The whole file is unusable (wrong kind, empty, a BOM...): nothing in it is read."""


@dataclass(frozen=True)
class Line:
    """One record as read from a file: its line number and either the raw value or an error."""

    number: int
    value: object = None
    error: str | None = None


@dataclass(frozen=True)
class NormalisedRecord:
    """One line validated and normalised, before it is stored (the stored row is datanets.models.Record)."""

    content: dict
    canonical: str
    content_hash: str
    text: str  # the record's strings joined, for duplicate detection, flags and token counts


def detect_format(filename: str) -> str:
    suffix = Path(filename).suffix.lower().lstrip(".")
    if suffix in ("jsonl", "ndjson"):
        return "jsonl"
    if suffix in FORMATS:
        return suffix
    raise FileError(f"{filename}: unsupported file type; upload .jsonl, .json, .csv or .parquet.")


def sniff(path: Path, fmt: str) -> None:
    """Refuse whole files that cannot be read as text records, before reading any record."""
    with open(path, "rb") as handle:
        head = handle.read(BINARY_SNIFF)
    if not head.strip():
        raise FileError("The file is empty: it holds no records.")
    if fmt == "parquet":
        if not head.startswith(b"PAR1"):
            raise FileError("The file is not a Parquet file (it does not start with PAR1).")
        return
    if head.startswith(codecs.BOM_UTF8):
        raise FileError("The file starts with a byte-order mark (BOM); save it as UTF-8 without BOM.")
    if b"\x00" in head:
        raise FileError(f"The file looks binary (it contains NUL bytes), not {fmt.upper()} text.")


def json_depth(value, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of a parsed JSON value, stopping once past ``limit``."""
    depth, level = 0, [value]
    while level:
        depth += 1
        if depth > limit:
            return depth
        nxt = []
        for item in level:
            if isinstance(item, dict):
                nxt.extend(item.values())
            elif isinstance(item, list):
                nxt.extend(item)
        level = [item for item in nxt if isinstance(item, dict | list)]
    return depth


def parse_json_text(text: str) -> tuple[object, str | None]:
    try:
        value = json.loads(text)
    except RecursionError:
        return None, f"JSON nested deeper than {MAX_DEPTH} levels"
    except json.JSONDecodeError as error:
        return None, f"malformed JSON: {error.msg} at column {error.colno}"
    except ValueError as error:  # e.g. an integer of more digits than Python converts (4,300)
        return None, f"unreadable JSON: {str(error).split(';')[0]}"
    if json_depth(value) > MAX_DEPTH:
        return None, f"JSON nested deeper than {MAX_DEPTH} levels"
    return value, None


def parse_jsonl_line(number: int, raw: bytes) -> Line | None:
    """One line of a JSONL file; None for a blank line."""
    if len(raw) > MAX_RECORD_BYTES:
        return Line(number, error=f"line is {len(raw):,} bytes, over the {MAX_RECORD_BYTES:,}-byte limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return Line(number, error=f"invalid UTF-8 at byte {error.start + 1} of the line")
    if not text.strip():
        return None
    value, error = parse_json_text(text)
    return Line(number, value=value, error=error)


def read_jsonl(path: Path) -> Iterator[Line]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = parse_jsonl_line(number, raw)
            if line is not None:
                yield line


def read_json_array(path: Path, chunk_size: int = 1 << 16) -> Iterator[Line]:
    """Stream the items of a top-level JSON array without loading the file; report each item's line."""
    decoder = json.JSONDecoder()
    reader = io.TextIOWrapper(open(path, "rb"), encoding="utf-8", errors="strict")
    buffer, pos, line, eof, started = "", 0, 1, False, False

    def fill() -> bool:
        nonlocal buffer, pos, eof
        try:
            chunk = reader.read(chunk_size)
        except UnicodeDecodeError:
            raise FileError(f"invalid UTF-8 near line {line}") from None
        buffer = buffer[pos:] + chunk
        pos = 0
        eof = not chunk
        return bool(chunk)

    def skip_space() -> None:
        nonlocal pos, line
        while True:
            while pos < len(buffer) and buffer[pos] in " \t\r\n":
                line += buffer[pos] == "\n"
                pos += 1
            if pos < len(buffer) or not fill():
                return

    with reader:
        fill()
        skip_space()
        if pos >= len(buffer) or buffer[pos] != "[":
            raise FileError("A .json upload must be one JSON array of records ([{...}, {...}]).")
        pos += 1
        while True:
            skip_space()
            if pos < len(buffer) and buffer[pos] == "]":
                return
            if started:
                if pos >= len(buffer) or buffer[pos] != ",":
                    raise FileError(f"line {line}: malformed JSON: expected ',' or ']' between records")
                pos += 1
                skip_space()
            started = True
            while True:
                try:
                    value, end = decoder.raw_decode(buffer, pos)
                except RecursionError:
                    raise FileError(f"line {line}: JSON nested deeper than {MAX_DEPTH} levels") from None
                except json.JSONDecodeError as error:
                    if not eof and len(buffer) - pos <= MAX_RECORD_BYTES and fill():
                        continue
                    if len(buffer) - pos > MAX_RECORD_BYTES:
                        raise FileError(f"line {line}: a record over the {MAX_RECORD_BYTES:,}-byte limit") from None
                    raise FileError(f"line {line}: malformed JSON: {error.msg}") from None
                except ValueError as error:  # e.g. an integer of more digits than Python converts
                    raise FileError(f"line {line}: unreadable JSON: {str(error).split(';')[0]}") from None
                if end == len(buffer) and not eof and fill():
                    continue  # a number or literal may continue in the next chunk
                break
            number, size = line, end - pos
            line += buffer.count("\n", pos, end)
            pos = end
            if size > MAX_RECORD_BYTES:
                yield Line(number, error=f"record over the {MAX_RECORD_BYTES:,}-byte limit")
            elif json_depth(value) > MAX_DEPTH:
                yield Line(number, error=f"JSON nested deeper than {MAX_DEPTH} levels")
            else:
                yield Line(number, value=value)


CSV_COLUMNS = {
    "instruction": ({"instruction", "output"}, {"input"}),
    "text": ({"text"}, set()),
    "preference": ({"prompt", "chosen", "rejected"}, set()),
}


def read_csv(path: Path, schema: str) -> Iterator[Line]:
    if schema not in CSV_COLUMNS:
        raise FileError(f"{schema} records cannot be uploaded as CSV; use JSONL or JSON.")
    required, optional = CSV_COLUMNS[schema]
    csv.field_size_limit(MAX_RECORD_BYTES)
    with open(path, encoding="utf-8", errors="strict", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except UnicodeDecodeError:
            raise FileError("invalid UTF-8 in the header line") from None
        header = [name.strip() for name in header]
        missing = required - set(header)
        unknown = set(header) - required - optional
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing column(s): {', '.join(sorted(missing))}")
            if unknown:
                parts.append(f"unexpected column(s): {', '.join(sorted(unknown))}")
            raise FileError(f"line 1 (header): {'; '.join(parts)}")
        while True:
            number = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                yield Line(number, error="invalid UTF-8")
                return
            except csv.Error as error:
                yield Line(number, error=f"malformed CSV: {error}")
                return
            if not row:
                continue
            if len(row) != len(header):
                yield Line(number, error=f"{len(row)} columns where the header has {len(header)}")
                continue
            yield Line(number, value=dict(zip(header, row, strict=True)))


def read_parquet(path: Path, schema: str) -> Iterator[Line]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise FileError(f"not a readable Parquet file: {error}") from None
    fields = {field.name: field.type for field in parquet.schema_arrow}
    if schema == "chat":
        expected = {"messages": "list<struct<role: string, content: string>>"}
        if "messages" not in fields:
            raise FileError("missing column: messages")
    else:
        required, optional = CSV_COLUMNS[schema]
        missing = required - set(fields)
        unknown = set(fields) - required - optional
        if missing or unknown:
            raise FileError(
                "; ".join(
                    part
                    for part in (
                        missing and f"missing column(s): {', '.join(sorted(missing))}",
                        unknown and f"unexpected column(s): {', '.join(sorted(unknown))}",
                    )
                    if part
                )
            )
        expected = {name: "string" for name in fields}
        for name, kind in fields.items():
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                raise FileError(f"column {name!r} has type {kind}, expected string")
    number = 0
    batches = parquet.iter_batches(batch_size=2048, columns=list(expected))
    while True:
        try:  # a truncated or damaged file fails here, deep in its row groups
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as error:
            raise FileError(
                f"the Parquet file is damaged or truncated ({number:,} rows read before it failed): {error}"
            ) from None
        if batch is None:
            return
        for row in batch.to_pylist():
            number += 1
            yield Line(number, value=row)


def read_lines(path: Path | str, fmt: str, schema: str) -> Iterator[Line]:
    path = Path(path)
    sniff(path, fmt)
    if fmt == "jsonl":
        return read_jsonl(path)
    if fmt == "json":
        return read_json_array(path)
    if fmt == "csv":
        return read_csv(path, schema)
    if fmt == "parquet":
        return read_parquet(path, schema)
    raise FileError(f"unsupported format {fmt!r}")


def canonical_json(content: dict) -> str:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_bytes(content: dict) -> bytes:
    """``canonical_json(content).encode()``, faster: orjson writes the same bytes for JSON made of strings,
    lists and objects (a test compares every character); anything else goes the standard way."""
    try:
        return orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # e.g. a lone surrogate, which the standard way rejects with its own message
        return canonical_json(content).encode("utf-8")


def make_record(value, schema: str) -> NormalisedRecord:
    content = normalise(value, schema)
    canonical = canonical_bytes(content)
    if len(canonical) > MAX_RECORD_BYTES:
        raise ValueError(f"record over the {MAX_RECORD_BYTES:,}-byte limit")
    return NormalisedRecord(
        content=content,
        canonical=canonical.decode(),
        content_hash=hashlib.sha256(canonical).hexdigest(),
        text=record_text(content),
    )
