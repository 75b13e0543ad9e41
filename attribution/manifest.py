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
import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from datanets.merkle import merkle_root

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


def build_manifest(
    *,
    adapter: dict,
    files: dict[str, Path],
    base_model: dict,
    datanets: list[dict],
    records: list[dict],
    handles: dict[str, str],
    training: dict,
    evaluation: dict,
    timestamps: dict,
    public_key_pem: bytes,
    influence: dict | None = None,
) -> dict:
    """``files`` maps paths inside the zip to local files (records.jsonl included)."""
    contributors, totals = contributor_summary(records)
    for contributor in contributors:
        contributor["handle"] = handles.get(contributor["id"])
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
        "held_out": held_out_summary(records),
        "influence": influence,
        "training": training,
        "evaluation": evaluation,
        "timestamps": timestamps,
        "signing": {"algorithm": "Ed25519", "public_key_sha256": hashlib.sha256(public_key_pem).hexdigest()},
    }


def sign(manifest: dict, private_key) -> bytes:
    return base64.b64encode(private_key.sign(canonical(manifest)))


def records_jsonl(rows: list[dict]) -> bytes:
    ordered = sorted(rows, key=lambda r: (r["datanet"], r["version"], r["content_hash"]))
    return b"".join(canonical(row) + b"\n" for row in ordered)
