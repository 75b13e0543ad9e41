"""Build and sign an adapter's attribution manifest. No Django.

The manifest is signed with Ed25519 over its canonical JSON: keys sorted, separators "," and ":",
non-ASCII kept, UTF-8. The zip carries ``manifest.json`` (that canonical form), ``manifest.sig``
(the base64 signature) and ``signing_key.pem`` (the instance's public key, also served at
``/api/v1/signing-key``), beside the files the manifest lists with their SHA-256.

``influence`` (or null) holds each contributor's measured influence on the adapter's held-out loss:
the method, its parameters, and per contributor a score, a share and 95% intervals
(``attribution.influence``).

``records.jsonl`` lists every record of the Datanet versions: {"content_hash", "contributor", "datanet",
"version", "tokens", "role"}, sorted by datanet, version and hash; ``role`` is "training", or
"evaluation" for a record the trainer held out (it measured the adapter and did not train it; rows
without a role, from older manifests, trained it). From it the verifier recomputes each Datanet
version's Merkle root (all its records), each contributor's counts, shares and root (training records
only, ``datanets.merkle`` rules) and the ``held_out`` summary (evaluation records: count, tokens, root).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections import defaultdict
from collections.abc import Iterable
from itertools import groupby
from pathlib import Path
from typing import BinaryIO

from datanets.merkle import MerkleBuilder, merkle_root

SCHEMA = "modelfactory.manifest/v1"
SIGNED_FILES = ("manifest.json", "manifest.sig", "signing_key.pem")
CHUNK = 1 << 20


def canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


ROLES = ("training", "evaluation")


def trained(row: dict) -> bool:
    return row.get("role", "training") == "training"


def held_out_summary(rows: Iterable[dict]) -> dict:
    """The records that only evaluated the adapter: how many, their tokens and their Merkle root."""
    held = [row for row in rows if not trained(row)]
    return {
        "records": len(held),
        "tokens": sum(row["tokens"] for row in held),
        "merkle_root": merkle_root(row["content_hash"] for row in held),
    }


def contributor_summary(rows: Iterable[dict]) -> tuple[list[dict], dict]:
    """Per-contributor counts, token shares and Merkle roots of the training records among records.jsonl rows."""
    hashes: dict[str, list[str]] = defaultdict(list)
    tokens: dict[str, int] = defaultdict(int)
    for row in rows:
        if not trained(row):
            continue
        hashes[row["contributor"]].append(row["content_hash"])
        tokens[row["contributor"]] += row["tokens"]
    total_tokens = sum(tokens.values())
    contributors = [
        {
            "id": contributor,
            "records": len(hashes[contributor]),
            "tokens": tokens[contributor],
            "share_by_tokens": round(tokens[contributor] / total_tokens, 6) if total_tokens else 0.0,
            "merkle_root": merkle_root(hashes[contributor]),
        }
        for contributor in sorted(hashes, key=lambda c: (-tokens[c], c))
    ]
    totals = {"records": sum(len(h) for h in hashes.values()), "tokens": total_tokens}
    return contributors, totals


def contributor_summary_streamed(rows: Iterable[dict]) -> tuple[list[dict], dict]:
    """``contributor_summary`` of rows that come grouped by contributor, each group in content-hash order:
    one Merkle builder at a time, never the rows themselves (publishing streams them from the database)."""
    contributors, total_tokens = [], 0
    for contributor, group in groupby((row for row in rows if trained(row)), key=lambda row: row["contributor"]):
        builder, tokens = MerkleBuilder(), 0
        for row in group:
            builder.add(row["content_hash"])
            tokens += row["tokens"]
        total_tokens += tokens
        contributors.append(
            {"id": contributor, "records": builder.count, "tokens": tokens, "merkle_root": builder.root()}
        )
    if len({c["id"] for c in contributors}) != len(contributors):
        raise ValueError("rows must come grouped by contributor")
    for contributor in contributors:
        contributor["share_by_tokens"] = round(contributor["tokens"] / total_tokens, 6) if total_tokens else 0.0
    contributors.sort(key=lambda c: (-c["tokens"], c["id"]))
    return contributors, {"records": sum(c["records"] for c in contributors), "tokens": total_tokens}


def build_manifest(
    *,
    adapter: dict,
    files: dict[str, Path],
    base_model: dict,
    datanets: list[dict],
    contributors: list[dict],
    totals: dict,
    held_out: dict,
    handles: dict[str, str],
    training: dict,
    evaluation: dict,
    timestamps: dict,
    public_key_pem: bytes,
    influence: dict | None = None,
) -> dict:
    """``files`` maps paths inside the zip to local files (records.jsonl included); ``contributors``,
    ``totals`` and ``held_out`` summarise records.jsonl (``contributor_summary``, ``held_out_summary``)."""
    contributors = [{**contributor, "handle": handles.get(contributor["id"])} for contributor in contributors]
    return {
        "schema": SCHEMA,
        "adapter": adapter,
        "files": [
            {"path": name, "sha256": sha256_file(path), "bytes": Path(path).stat().st_size}
            for name, path in sorted(files.items())
        ],
        "base_model": base_model,
        "datanets": datanets,
        "contributors": contributors,
        "totals": totals,
        "held_out": held_out,
        "influence": influence,
        "training": training,
        "evaluation": evaluation,
        "timestamps": timestamps,
        "signing": {"algorithm": "Ed25519", "public_key_sha256": hashlib.sha256(public_key_pem).hexdigest()},
    }


def sign(manifest: dict, private_key) -> bytes:
    return base64.b64encode(private_key.sign(canonical(manifest)))


RECORDS_ORDER = ("datanet", "version", "content_hash")


def records_jsonl_write(rows: Iterable[dict], handle: BinaryIO) -> int:
    """Write records.jsonl from rows that already come in its order (datanet, version, content hash), one
    row at a time, so a publish never holds the training set; returns how many rows it wrote."""
    last, written = None, 0
    for row in rows:
        key = tuple(row[k] for k in RECORDS_ORDER)
        if last is not None and key < last:
            raise ValueError("records.jsonl rows must come sorted by datanet, version and content hash")
        handle.write(canonical(row) + b"\n")
        last, written = key, written + 1
    return written


def records_jsonl(rows: list[dict]) -> bytes:
    buffer = io.BytesIO()
    records_jsonl_write(sorted(rows, key=lambda r: tuple(r[k] for k in RECORDS_ORDER)), buffer)
    return buffer.getvalue()
