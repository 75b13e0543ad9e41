"""Verify a ModelFactory adapter zip offline. No Django, no network.

    python -m attribution.verify ADAPTER.zip [--public-key KEY.pem] [--record RECORD.json]
    python -m attribution.verify --receipt RECEIPT.json [ADAPTER.zip] [--public-key KEY.pem] [--record RECORD.json]
    python -m attribution.verify EXPORT.zip|EXPORT_DIR [--adapter ADAPTER.zip] [--public-key KEY.pem]

Checks, in order, and exits with the first failure's code and a message naming what is wrong:
  2  the zip cannot be read, or a required file is missing
  3  an unsafe entry name (absolute path, "..", backslash) or a file the manifest does not list
  4  the signature does not match the manifest (or the pinned public key)
  5  a file's SHA-256 or size differs from the manifest
  6  attribution is inconsistent: a Datanet version root, a contributor root, a count or a share
  7  with --record: the record was not part of the training data
  8  with --record: the record was held out: it evaluated the adapter and did not train it
With --record, prints the Merkle inclusion proof of the record against its Datanet version's root. The
record may be given as uploaded: it is normalised as the ingest does (``datanets.records``) first.
With --receipt (a contributor's receipt, ``attribution.receipt``), checks the receipt without the zip:
its signature (4), every record's inclusion proof and the contributor's counts and shares (6); with
the zip as well, that the receipt belongs to the zip's manifest (6); with --record, that the record
is one the receipt lists (7).
An export of an adapter (merged weights or GGUF, zipped or unpacked) is checked by ``attribution.exports``
with the same codes; with --adapter, that it derives from that adapter zip (6).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from datanets import records as record_rules
from datanets.merkle import inclusion_proof, merkle_root, verify_inclusion

from . import exports
from .aggregation import AGGREGATIONS, METHODS
from .errors import VerificationError, safe_name
from .manifest import ROLES, SIGNED_FILES, canonical, contributor_summary, held_out_summary
from .receipt import ReceiptError, verify_receipt


@dataclass
class Report:
    manifest: dict
    public_key_sha256: str
    checked_files: int
    records: list[dict] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def _read(archive: zipfile.ZipFile, name: str) -> bytes:
    try:
        return archive.read(name)
    except KeyError:
        raise VerificationError(2, f"{name} is missing from the zip") from None


def _file_sha256(archive: zipfile.ZipFile, name: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with archive.open(name) as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def verify_zip(source, *, public_key_pem: bytes | None = None) -> Report:
    """Verify everything in the zip (a path or a file object); raise VerificationError on the first failure."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as error:
        raise VerificationError(2, f"not a readable zip: {error}") from None
    with archive:
        names = archive.namelist()
        unsafe = [n for n in names if not safe_name(n)]
        if unsafe:
            raise VerificationError(3, f"unsafe entry name(s) in the zip: {', '.join(unsafe)}")
        manifest_bytes = _read(archive, "manifest.json")
        signature = _read(archive, "manifest.sig")
        key_pem = public_key_pem or _read(archive, "signing_key.pem")
        if public_key_pem is not None and _read(archive, "signing_key.pem").strip() != public_key_pem.strip():
            raise VerificationError(4, "signing_key.pem in the zip is not the pinned public key")
        try:
            manifest = json.loads(manifest_bytes)
        except json.JSONDecodeError as error:
            raise VerificationError(2, f"manifest.json is not JSON: {error}") from None
        try:
            load_pem_public_key(key_pem).verify(base64.b64decode(signature), canonical(manifest))
        except (InvalidSignature, ValueError) as error:
            raise VerificationError(4, f"the signature does not match manifest.json ({type(error).__name__})") from None
        key_sha = hashlib.sha256(key_pem).hexdigest()
        if manifest.get("signing", {}).get("public_key_sha256") != key_sha:
            raise VerificationError(4, "the manifest names another signing key than the one that signed it")

        listed = {entry["path"]: entry for entry in manifest["files"]}
        extra = sorted(set(names) - set(listed) - set(SIGNED_FILES))
        if extra:
            raise VerificationError(3, f"file(s) not listed in the manifest: {', '.join(extra)}")
        for path, entry in sorted(listed.items()):
            if path not in names:
                raise VerificationError(5, f"{path} is listed in the manifest but missing from the zip")
            digest, size = _file_sha256(archive, path)
            if digest != entry["sha256"] or size != entry["bytes"]:
                raise VerificationError(5, f"{path} does not match its SHA-256 in the manifest (changed or swapped)")

        rows = [json.loads(line) for line in _read(archive, "records.jsonl").splitlines() if line.strip()]
    _check_attribution(manifest, rows)
    return Report(manifest=manifest, public_key_sha256=key_sha, checked_files=len(listed), records=rows)


def _check_attribution(manifest: dict, rows: list[dict]) -> None:
    by_version: dict[tuple[str, int], list[str]] = defaultdict(list)
    for row in rows:
        if row.get("role", "training") not in ROLES:
            raise VerificationError(6, f"record {row['content_hash']} has an unknown role {row['role']!r}")
        by_version[(row["datanet"], row["version"])].append(row["content_hash"])
    for datanet in manifest["datanets"]:
        hashes = by_version.pop((datanet["slug"], datanet["version"]), [])
        if len(hashes) != datanet["records"]:
            raise VerificationError(
                6,
                f"{datanet['slug']} v{datanet['version']}: {len(hashes)} records listed, manifest says {datanet['records']}",
            )
        if merkle_root(hashes) != datanet["merkle_root"]:
            raise VerificationError(
                6, f"{datanet['slug']} v{datanet['version']}: the records do not give its Merkle root"
            )
    if by_version:
        raise VerificationError(
            6, f"records.jsonl lists records of versions the manifest does not name: {sorted(by_version)}"
        )
    contributors, totals = contributor_summary(rows)
    expected = {c["id"]: c for c in contributors}
    stated = {c["id"]: c for c in manifest["contributors"]}
    if set(expected) != set(stated):
        raise VerificationError(6, "the contributors in the manifest are not those of records.jsonl")
    for cid, mine in expected.items():
        theirs = stated[cid]
        for key in ("records", "tokens", "merkle_root", "share_by_tokens"):
            if mine[key] != theirs[key]:
                raise VerificationError(
                    6, f"contributor {cid}: {key} is {theirs[key]} in the manifest, {mine[key]} from the records"
                )
    held_out = held_out_summary(rows)
    if manifest.get("held_out", {"records": 0, "tokens": 0, "merkle_root": held_out["merkle_root"]}) != held_out:
        raise VerificationError(6, f"held-out records {manifest.get('held_out')} do not match records.jsonl {held_out}")
    if manifest["totals"] != totals:
        raise VerificationError(6, f"totals {manifest['totals']} do not match the records {totals}")
    if contributors and abs(sum(c["share_by_tokens"] for c in contributors) - 1) > 1e-4:
        raise VerificationError(6, "the contributors' token shares do not add up to 1")
    _check_influence(manifest.get("influence"), expected)


def _check_influence(influence: dict | None, contributors: dict[str, dict]) -> None:
    """Influence is measured, not recomputable offline; its table must still be consistent."""
    if influence is None:
        return
    if influence.get("method") not in METHODS:
        raise VerificationError(6, "influence names no method this verifier knows")
    if influence.get("aggregation") not in AGGREGATIONS.values():
        raise VerificationError(6, "influence names no aggregation rule this verifier knows")
    rows = influence["contributors"]
    unknown = {row["id"] for row in rows} - set(contributors)
    if unknown:
        raise VerificationError(6, f"influence names contributors without records: {sorted(unknown)}")
    for row in rows:
        if row["records"] > contributors[row["id"]]["records"]:
            raise VerificationError(6, f"influence counts more records for {row['id']} than records.jsonl lists")
        if not (row["share_ci"][0] - 1e-6 <= row["share"] <= row["share_ci"][1] + 1e-6 or row["share"] == 0):
            raise VerificationError(6, f"influence share of {row['id']} lies outside its interval")
    total = sum(row["share"] for row in rows)
    if rows and total > 0 and abs(total - 1) > 1e-4:
        raise VerificationError(6, f"the influence shares add up to {total:.6f}, not 1")


def record_hashes(record) -> list[str]:
    """The record's content hash as the ingest computes it (normalised under whichever schema it fits),
    and the hash of the content exactly as given, for a record that is already canonical."""
    content = record.get("content", record) if isinstance(record, dict) else record
    hashes = []
    for schema in record_rules.SCHEMAS:
        try:
            hashes.append(record_rules.make_record(content, schema).content_hash)
        except (ValueError, TypeError):
            continue  # not a record of this schema
    hashes.append(hashlib.sha256(canonical(content)).hexdigest())
    return list(dict.fromkeys(hashes))


def prove_record(report: Report, record) -> dict:
    """The inclusion proof of ``record`` against its Datanet version's Merkle root and its role, or an error 7."""
    candidates = record_hashes(record)
    row = next((r for r in report.records if r["content_hash"] in candidates), None)
    if row is None:
        raise VerificationError(7, f"record {candidates[0]} was not part of this adapter's training data")
    target = row["content_hash"]
    version = next(
        d for d in report.manifest["datanets"] if (d["slug"], d["version"]) == (row["datanet"], row["version"])
    )
    hashes = [
        r["content_hash"] for r in report.records if (r["datanet"], r["version"]) == (row["datanet"], row["version"])
    ]
    proof = inclusion_proof(hashes, target)
    if not verify_inclusion(target, proof, version["merkle_root"]):
        raise VerificationError(7, f"record {target}: its inclusion proof does not reach the version's root")
    return {
        "content_hash": target,
        "datanet": row["datanet"],
        "version": row["version"],
        "contributor": row["contributor"],
        "merkle_root": version["merkle_root"],
        "proof": proof,
        "role": row.get("role", "training"),
    }


def check_receipt(receipt: dict, *, public_key_pem: bytes | None = None, zip_path=None, record: dict | None = None):
    """Verify a contributor's receipt, against the adapter zip when one is given; return the record's row."""
    try:
        verify_receipt(receipt, public_key_pem=public_key_pem)
    except ReceiptError as error:
        raise VerificationError(error.code, error.message) from None
    if zip_path is not None:
        manifest = verify_zip(zip_path, public_key_pem=public_key_pem).manifest
        if hashlib.sha256(canonical(manifest)).hexdigest() != receipt["manifest_sha256"]:
            raise VerificationError(6, "the receipt is for another manifest than this zip's")
        if receipt["contributor"] not in manifest["contributors"]:
            raise VerificationError(6, "the receipt's contributor entry differs from the zip's manifest")
    if record is None:
        return None
    candidates = record_hashes(record)
    row = next((r for r in receipt["records"] if r["content_hash"] in candidates), None)
    if row is None:
        raise VerificationError(7, f"record {candidates[0]} is not one of the records this receipt lists")
    return row


def _main_receipt(args, pinned: bytes | None) -> None:
    receipt = json.loads(Path(args.receipt).read_text(encoding="utf-8"))
    record = json.loads(Path(args.record).read_text(encoding="utf-8")) if args.record else None
    row = check_receipt(receipt, public_key_pem=pinned, zip_path=args.zip, record=record)
    c, a = receipt["contributor"], receipt["adapter"]
    print(
        f"OK receipt for {c['id']} in {a['slug']} v{a['version']} (manifest sha256 {receipt['manifest_sha256'][:16]}…): "
        f"signature valid, {len(receipt['records'])} records each proven in its Datanet version "
        f"({c['records']} trained the adapter), {c['tokens']} training tokens, "
        f"token share {c['share_by_tokens']}" + (", matches the zip" if args.zip else "")
    )
    if row is not None:
        print(f"INCLUDED record {row['content_hash']} in {row['datanet']} v{row['version']} ({row['use']})")
        print(json.dumps(row["proof"]))


def _main_export(args, pinned: bytes | None) -> None:
    report = exports.verify_export(args.zip, public_key_pem=pinned, adapter_zip=args.adapter)
    m, source = report.manifest, report.manifest["derived_from"]
    print(
        f"OK export {m['export']['format']} of {source['adapter']['slug']} v{source['adapter']['version']}: "
        f"signature valid (key sha256 {report.public_key_sha256[:16]}…), {report.checked_files} files match, "
        f"derives from adapter manifest sha256 {source['manifest_sha256'][:16]}… (its signature valid)"
        + (", which is that adapter zip's" if args.adapter else "")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attribution.verify", description=__doc__.splitlines()[0])
    parser.add_argument("zip", nargs="?", help="the adapter zip, or an export zip or directory, from ModelFactory")
    parser.add_argument("--public-key", help="pin the instance's public key (PEM from /api/v1/signing-key)")
    parser.add_argument("--record", help='a record (JSON: the content, or {"content": ...}) to prove was used')
    parser.add_argument("--receipt", help="a contributor's receipt (JSON) to check, with or without the zip")
    parser.add_argument("--adapter", help="with an export: the adapter zip it should derive from")
    args = parser.parse_args(argv)
    if not args.zip and not args.receipt:
        parser.error("give an adapter zip, a --receipt, or both")
    try:
        pinned = Path(args.public_key).read_bytes() if args.public_key else None
        if args.receipt:
            _main_receipt(args, pinned)
            return 0
        if exports.is_export(args.zip):
            _main_export(args, pinned)
            return 0
        report = verify_zip(args.zip, public_key_pem=pinned)
        m = report.manifest
        print(
            f"OK {m['adapter']['slug']} v{m['adapter']['version']}: signature valid (key sha256 {report.public_key_sha256[:16]}…), "
            f"{report.checked_files} files match, {m['totals']['records']} training records from {len(m['contributors'])} contributors "
            f"and {m.get('held_out', {}).get('records', 0)} held-out records consistent"
        )
        if m.get("influence"):
            top = ", ".join(f"{c['id']} {c['share']:.3f}" for c in m["influence"]["contributors"][:5])
            print(f"INFLUENCE by {m['influence']['method']}: {top}")
        if args.record:
            record = json.loads(Path(args.record).read_text(encoding="utf-8"))
            proof = prove_record(report, record)
            where = (
                f"record {proof['content_hash']} in {proof['datanet']} v{proof['version']} "
                f"(contributor {proof['contributor']}), root {proof['merkle_root']}"
            )
            if proof["role"] == "evaluation":
                print(f"HELD OUT {where}: it evaluated the adapter and did not train it")
                print(json.dumps(proof["proof"]))
                return 8
            print(f"INCLUDED {where}: it trained the adapter")
            print(json.dumps(proof["proof"]))
    except VerificationError as error:
        print(f"FAILED: {error.message}", file=sys.stderr)
        return error.code
    except (OSError, json.JSONDecodeError) as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return 2
    except (KeyError, TypeError) as error:
        print(f"FAILED: not a readable receipt or manifest ({type(error).__name__}: {error})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
