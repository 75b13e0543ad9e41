"""Sign and verify an export of a published adapter (merged weights, or a GGUF with its Modelfile). No Django.

An export, as a zip or the directory it unpacks to, holds its files beside:
  export_manifest.json  canonical JSON (``manifest.canonical``): schema, what was exported and with what,
                        ``derived_from`` (the adapter's slug, version and manifest SHA-256, its base model)
                        and every other file with its SHA-256 and size
  export_manifest.sig   base64 Ed25519 signature of export_manifest.json
  signing_key.pem       the instance's public key (also at /api/v1/signing-key)
  adapter_manifest.json, adapter_manifest.sig
                        the signed manifest of the adapter it derives from, so the link is checked offline

``python -m attribution.verify EXPORT.zip`` (or the unpacked directory) checks it, with verify's exit codes:
2 unreadable or a required file missing, 3 an unsafe name or an unlisted file, 4 a signature (the export's
or the adapter manifest's) that does not match, 5 a file whose SHA-256 or size differs, 6 an adapter
manifest that is not the one ``derived_from`` names (or, with --adapter, not that adapter zip's).
"""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import VerificationError, safe_name
from .manifest import canonical, sha256_file, sign

SCHEMA = "modelfactory.export/v1"
SIGNED_FILES = ("export_manifest.json", "export_manifest.sig", "signing_key.pem")
ADAPTER_MANIFEST, ADAPTER_SIGNATURE = "adapter_manifest.json", "adapter_manifest.sig"


def build_export_manifest(
    *, export: dict, adapter_manifest: dict, files: dict[str, Path], public_key_pem: bytes, created_at: str
) -> dict:
    """``files`` maps names inside the export to local files, the adapter manifest and its signature included."""
    return {
        "schema": SCHEMA,
        "export": export,
        "derived_from": {
            "adapter": {k: adapter_manifest["adapter"][k] for k in ("slug", "name", "version")},
            "manifest_sha256": hashlib.sha256(canonical(adapter_manifest)).hexdigest(),
            "manifest_path": ADAPTER_MANIFEST,
            "base_model": adapter_manifest["base_model"],
        },
        "files": [
            {"path": name, "sha256": sha256_file(path), "bytes": Path(path).stat().st_size}
            for name, path in sorted(files.items())
        ],
        "created_at": created_at,
        "signing": {"algorithm": "Ed25519", "public_key_sha256": hashlib.sha256(public_key_pem).hexdigest()},
    }


def write_signature_files(directory: Path, manifest: dict, private_key, public_key_pem: bytes) -> None:
    (directory / "export_manifest.json").write_bytes(canonical(manifest))
    (directory / "export_manifest.sig").write_bytes(sign(manifest, private_key))
    (directory / "signing_key.pem").write_bytes(public_key_pem)


def write_adapter_manifest(directory: Path, adapter_manifest: dict, signature: bytes) -> dict[str, Path]:
    (directory / ADAPTER_MANIFEST).write_bytes(canonical(adapter_manifest))
    (directory / ADAPTER_SIGNATURE).write_bytes(signature)
    return {name: directory / name for name in (ADAPTER_MANIFEST, ADAPTER_SIGNATURE)}


def zip_directory(directory: Path, zip_path: Path) -> Path:
    """Weights hardly deflate: they are stored, which keeps zipping at the speed of a copy."""
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(directory).as_posix())
    return zip_path


# Verification -----------------------------------------------------------------------------------


class _Zip:
    def __init__(self, path):
        self.archive = zipfile.ZipFile(path)

    def names(self) -> list[str]:
        return [n for n in self.archive.namelist() if not n.endswith("/")]

    def open(self, name: str):
        return self.archive.open(name)


class _Directory:
    def __init__(self, path: Path):
        self.root = Path(path)

    def names(self) -> list[str]:
        links = [p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_symlink()]
        if links:
            raise VerificationError(3, f"links in the export directory: {', '.join(links)}")
        return [p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()]

    def open(self, name: str):
        return open(self.root / name, "rb")


def is_export(source) -> bool:
    """Whether ``source`` (a path) is an export rather than an adapter zip."""
    source = Path(source)
    if source.is_dir():
        return (source / "export_manifest.json").exists()
    try:
        with zipfile.ZipFile(source) as archive:
            return "export_manifest.json" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


@dataclass
class ExportReport:
    manifest: dict
    public_key_sha256: str
    checked_files: int


def _read(tree, name: str) -> bytes:
    if name not in tree.names():
        raise VerificationError(2, f"{name} is missing from the export")
    with tree.open(name) as handle:
        return handle.read()


def _digest(tree, name: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with tree.open(name) as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _check_signature(key_pem: bytes, signature: bytes, document: dict, what: str) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        load_pem_public_key(key_pem).verify(base64.b64decode(signature), canonical(document))
    except (InvalidSignature, ValueError) as error:
        raise VerificationError(4, f"the signature does not match {what} ({type(error).__name__})") from None


def _json(tree, name: str) -> dict:
    try:
        return json.loads(_read(tree, name))
    except json.JSONDecodeError as error:
        raise VerificationError(2, f"{name} is not JSON: {error}") from None


def _check_adapter_zip(adapter_zip, adapter_sha: str, key_pem: bytes) -> None:
    """The adapter zip's signed manifest is the one the export derives from (its records and files are
    checked by verifying the adapter zip itself)."""

    try:
        tree = _Zip(adapter_zip)
    except (zipfile.BadZipFile, OSError) as error:
        raise VerificationError(2, f"the adapter zip is not readable: {error}") from None
    manifest = _json(tree, "manifest.json")
    _check_signature(key_pem, _read(tree, "manifest.sig"), manifest, "the adapter zip's manifest.json")
    if hashlib.sha256(canonical(manifest)).hexdigest() != adapter_sha:
        raise VerificationError(6, "this export derives from another adapter manifest than that zip's")


def verify_export(source, *, public_key_pem: bytes | None = None, adapter_zip=None) -> ExportReport:
    """Verify an export zip or directory; raise VerificationError on the first failure."""

    try:
        tree = _Directory(source) if Path(source).is_dir() else _Zip(source)
    except (zipfile.BadZipFile, OSError) as error:
        raise VerificationError(2, f"not a readable zip or directory: {error}") from None
    names = tree.names()
    unsafe = [n for n in names if not safe_name(n)]
    if unsafe:
        raise VerificationError(3, f"unsafe entry name(s) in the export: {', '.join(unsafe)}")
    manifest = _json(tree, "export_manifest.json")
    key_pem = _read(tree, "signing_key.pem")
    if public_key_pem is not None and key_pem.strip() != public_key_pem.strip():
        raise VerificationError(4, "signing_key.pem in the export is not the pinned public key")
    _check_signature(key_pem, _read(tree, "export_manifest.sig"), manifest, "export_manifest.json")
    key_sha = hashlib.sha256(key_pem).hexdigest()
    if manifest.get("signing", {}).get("public_key_sha256") != key_sha:
        raise VerificationError(4, "the export manifest names another signing key than the one that signed it")

    listed = {entry["path"]: entry for entry in manifest["files"]}
    extra = sorted(set(names) - set(listed) - set(SIGNED_FILES))
    if extra:
        raise VerificationError(3, f"file(s) not listed in the export manifest: {', '.join(extra)}")
    for path, entry in sorted(listed.items()):
        if path not in names:
            raise VerificationError(5, f"{path} is listed in the export manifest but missing")
        if _digest(tree, path) != (entry["sha256"], entry["bytes"]):
            raise VerificationError(5, f"{path} does not match its SHA-256 in the export manifest (changed or swapped)")

    adapter_manifest = _json(tree, manifest["derived_from"]["manifest_path"])
    adapter_sha = hashlib.sha256(canonical(adapter_manifest)).hexdigest()
    if adapter_sha != manifest["derived_from"]["manifest_sha256"]:
        raise VerificationError(6, "the adapter manifest in the export is not the one it names as its source")
    _check_signature(key_pem, _read(tree, ADAPTER_SIGNATURE), adapter_manifest, ADAPTER_MANIFEST)
    if adapter_zip is not None:
        _check_adapter_zip(adapter_zip, adapter_sha, key_pem)
    return ExportReport(manifest=manifest, public_key_sha256=key_sha, checked_files=len(listed))
