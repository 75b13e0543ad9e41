"""`python -m attribution.verify` on exports: a genuine export passes, zipped or unpacked; a tampered one fails
with the code that says what is wrong. Pure code: exports of the tiny model built without Django."""

import json
import shutil
import subprocess
import sys
import zipfile

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attribution import manifest as manifest_lib
from attribution.verify import main as verify
from exporting.build import Signer, Source, build_exports
from training.model_import import weights_sha256


def _key():
    key = Ed25519PrivateKey.generate()
    return key, key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _adapter_zip(path, manifest, key, pem):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("manifest.json", manifest_lib.canonical(manifest))
        archive.writestr("manifest.sig", manifest_lib.sign(manifest, key))
        archive.writestr("signing_key.pem", pem)
    return path


@pytest.fixture(scope="module")
def exports(tiny_model_dir, tmp_path_factory):
    """The three signed export zips of a LoRA adapter on the tiny model, and the adapter's manifest zip."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    tmp = tmp_path_factory.mktemp("exports")
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    torch.manual_seed(0)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.05)
    model.save_pretrained(tmp / "adapter")
    key, pem = _key()
    manifest = {
        "adapter": {"slug": "tiny", "name": "Tiny", "version": 1},
        "base_model": {"name": "Tiny Llama", "weights_sha256": weights_sha256(tiny_model_dir)},
    }
    source = Source(tiny_model_dir, tmp / "adapter", manifest, manifest_lib.sign(manifest, key))
    (tmp / "work").mkdir()
    zips = build_exports(source, Signer(key, pem), tmp / "work")
    return {"zips": zips, "adapter_zip": _adapter_zip(tmp / "tiny-v1.zip", manifest, key, pem), "pem": pem, "key": key}


def unpacked(exports, fmt, tmp_path):
    directory = tmp_path / fmt
    zipfile.ZipFile(exports["zips"][fmt]).extractall(directory)
    return directory


def test_a_genuine_export_verifies_zipped_and_unpacked(exports, tmp_path):
    for fmt, zip_path in exports["zips"].items():
        assert verify([str(zip_path), "--adapter", str(exports["adapter_zip"])]) == 0, fmt
        assert verify([str(unpacked(exports, fmt, tmp_path))]) == 0, fmt
    pinned = tmp_path / "key.pem"
    pinned.write_bytes(exports["pem"])
    done = subprocess.run(
        [sys.executable, "-m", "attribution.verify", str(exports["zips"]["gguf-q8_0"]), "--public-key", str(pinned)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "OK export gguf of tiny v1" in done.stdout, done.stderr


def test_changed_weights_fail(exports, tmp_path):
    directory = unpacked(exports, "gguf-f16", tmp_path)
    gguf = next(directory.glob("*.gguf"))
    data = bytearray(gguf.read_bytes())
    data[-100] ^= 0x01  # one bit of one weight
    gguf.write_bytes(bytes(data))
    assert verify([str(directory)]) == 5


def test_a_changed_modelfile_fails_and_so_does_a_rezipped_one(exports, tmp_path):
    directory = unpacked(exports, "gguf-q8_0", tmp_path)
    modelfile = directory / "Modelfile"
    modelfile.write_text(modelfile.read_text().replace("temperature 0", "temperature 1"))
    assert verify([str(directory)]) == 5
    rezipped = shutil.make_archive(str(tmp_path / "rezipped"), "zip", directory)
    assert verify([rezipped]) == 5


def test_an_edited_manifest_fails_its_signature(exports, tmp_path):
    directory = unpacked(exports, "merged", tmp_path)
    manifest = json.loads((directory / "export_manifest.json").read_text())
    weights = next(f for f in manifest["files"] if f["path"] == "model.safetensors")
    (directory / "model.safetensors").write_bytes(b"other weights")
    weights.update(sha256="0" * 64, bytes=13)  # the attacker's hash for their file
    (directory / "export_manifest.json").write_bytes(manifest_lib.canonical(manifest))
    assert verify([str(directory)]) == 4


def test_an_added_file_or_another_key_fails(exports, tmp_path):
    directory = unpacked(exports, "merged", tmp_path)
    (directory / "extra.safetensors").write_bytes(b"x")
    assert verify([str(directory)]) == 3
    (directory / "extra.safetensors").unlink()
    _, other = _key()
    (tmp_path / "other.pem").write_bytes(other)
    assert verify([str(directory), "--public-key", str(tmp_path / "other.pem")]) == 4


def test_an_export_of_another_adapter_fails(exports, tmp_path):
    manifest = {"adapter": {"slug": "tiny", "name": "Tiny", "version": 2}, "base_model": {"name": "Tiny Llama"}}
    other = _adapter_zip(tmp_path / "tiny-v2.zip", manifest, exports["key"], exports["pem"])
    assert verify([str(exports["zips"]["merged"]), "--adapter", str(other)]) == 6
