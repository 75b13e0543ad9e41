"""A contributor's receipt for one adapter: build, sign and verify it without the adapter. No Django.

A receipt names the adapter and the SHA-256 of its signed manifest (``manifest.json`` in the zip),
repeats the contributor's entry of the manifest (pseudonym, records, tokens, token share, Merkle root
of their records) and their influence share with its interval, and lists each of their records with
its Datanet version and the inclusion proof of its hash against that version's Merkle root. The
instance signs the receipt with the key that signs manifests: Ed25519 over the canonical JSON
(``attribution.manifest.canonical``) of the receipt without its ``signature`` field.

Offline, ``verify_receipt`` checks the signature, every inclusion proof, that the records give the
contributor's Merkle root, count and tokens, and that the shares are consistent. Given the adapter
zip too, ``attribution.verify`` also checks that the receipt belongs to that zip's manifest.
"""

from __future__ import annotations

import base64
import hashlib
from collections import defaultdict

from datanets.merkle import inclusion_proofs, merkle_root, verify_inclusion

from .manifest import canonical

SCHEMA = "modelfactory.receipt/v1"


class ReceiptError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def build_receipt(
    *,
    adapter: dict,
    manifest: dict,
    manifest_sha256: str,
    contributor_id: str,
    records: list[dict],
    version_hashes: dict[tuple[str, int], list[str]],
    issued_at: str,
) -> dict:
    """``records``: the contributor's rows {record_id, content_hash, datanet, version, tokens, use};
    ``version_hashes``: every record hash of each Datanet version the adapter was trained on."""
    contributor = next((c for c in manifest["contributors"] if c["id"] == contributor_id), None)
    if contributor is None:
        raise ReceiptError(6, f"{contributor_id} has no records in this adapter's manifest")
    influence = manifest.get("influence") or {}
    measured = next((c for c in influence.get("contributors", []) if c["id"] == contributor_id), None)
    mine: dict[tuple[str, int], list[str]] = defaultdict(list)
    for row in records:
        mine[(row["datanet"], row["version"])].append(row["content_hash"])
    proofs = {key: inclusion_proofs(version_hashes[key], hashes) for key, hashes in mine.items()}
    ordered = sorted(records, key=lambda r: (r["datanet"], r["version"], r["content_hash"]))
    return {
        "schema": SCHEMA,
        "adapter": adapter,
        "manifest_sha256": manifest_sha256,
        "contributor": contributor,
        "totals": manifest["totals"],
        "influence": {"method": influence["method"], **measured} if measured else None,
        "datanets": [
            {"slug": d["slug"], "version": d["version"], "merkle_root": d["merkle_root"], "records": d["records"]}
            for d in manifest["datanets"]
            if (d["slug"], d["version"]) in mine
        ],
        "records": [
            {**row, "proof": [list(step) for step in proofs[(row["datanet"], row["version"])][row["content_hash"]]]}
            for row in ordered
        ],
        "issued_at": issued_at,
    }


def sign_receipt(receipt: dict, private_key, public_key_pem: bytes) -> dict:
    signed = {
        **receipt,
        "signing": {"algorithm": "Ed25519", "public_key_sha256": hashlib.sha256(public_key_pem).hexdigest()},
        "public_key_pem": public_key_pem.decode("ascii"),
    }
    return {**signed, "signature": base64.b64encode(private_key.sign(canonical(signed))).decode("ascii")}


def _check_signature(receipt: dict, public_key_pem: bytes | None) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    embedded = receipt.get("public_key_pem", "").encode("ascii")
    if public_key_pem is not None and embedded.strip() != public_key_pem.strip():
        raise ReceiptError(4, "the receipt was signed with another key than the pinned public key")
    if receipt.get("signing", {}).get("public_key_sha256") != hashlib.sha256(embedded).hexdigest():
        raise ReceiptError(4, "the receipt names another signing key than the one it carries")
    unsigned = {k: v for k, v in receipt.items() if k != "signature"}
    try:
        load_pem_public_key(embedded).verify(base64.b64decode(receipt.get("signature", "")), canonical(unsigned))
    except (InvalidSignature, ValueError) as error:
        raise ReceiptError(4, f"the signature does not match the receipt ({type(error).__name__})") from None


def verify_receipt(receipt: dict, *, public_key_pem: bytes | None = None) -> None:
    """Raise ReceiptError (4: signature, 6: inconsistent) unless the receipt is signed and consistent."""
    if receipt.get("schema") != SCHEMA:
        raise ReceiptError(2, f"not a ModelFactory receipt (schema {receipt.get('schema')!r})")
    _check_signature(receipt, public_key_pem)
    roots = {(d["slug"], d["version"]): d["merkle_root"] for d in receipt["datanets"]}
    for row in receipt["records"]:
        root = roots.get((row["datanet"], row["version"]))
        if root is None or not verify_inclusion(row["content_hash"], row["proof"], root):
            raise ReceiptError(6, f"record {row['content_hash']}: its proof does not reach its version's root")
    # The manifest's contributor entry counts the records that trained the adapter, not the held-out ones.
    contributor = receipt["contributor"]
    records = [row for row in receipt["records"] if row.get("use") != "evaluation"]
    tokens = sum(row["tokens"] for row in records)
    stated = (contributor["records"], contributor["tokens"], contributor["merkle_root"])
    if stated != (len(records), tokens, merkle_root(row["content_hash"] for row in records)):
        raise ReceiptError(6, "the records listed do not give the contributor's count, tokens and Merkle root")
    total = receipt["totals"]["tokens"]
    if total and abs(contributor["share_by_tokens"] - round(tokens / total, 6)) > 1e-6:
        raise ReceiptError(6, "the token share does not follow from the tokens")
    influence = receipt.get("influence")
    if influence and not (
        influence["share_ci"][0] - 1e-6 <= influence["share"] <= influence["share_ci"][1] + 1e-6
        or influence["share"] == 0
    ):
        raise ReceiptError(6, "the influence share lies outside its interval")
