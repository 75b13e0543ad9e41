"""Benchmark: build, sign and zip an attribution manifest for an adapter trained on N records, then
verify the zip offline. Pure code (no Django, no database): the costs of publishing and checking.

    .venv/bin/python bench/manifest.py --records 100000 --contributors 200
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from attribution import manifest as manifest_lib  # noqa: E402
from attribution.verify import verify_zip  # noqa: E402
from datanets.merkle import merkle_root  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--contributors", type=int, default=200)
    parser.add_argument("--adapter-mb", type=float, default=10.0, help="size of the fake adapter weights")
    args = parser.parse_args()
    rng = random.Random(0)
    rows = [
        {
            "content_hash": hashlib.sha256(f"record {i}".encode()).hexdigest(),
            "contributor": f"c-{rng.randrange(args.contributors):016x}",
            "datanet": "bench",
            "version": 1,
            "tokens": rng.randint(20, 400),
        }
        for i in range(args.records)
    ]
    key = Ed25519PrivateKey.generate()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "adapter").mkdir()
        (tmp / "adapter" / "adapter_model.safetensors").write_bytes(rng.randbytes(int(args.adapter_mb * 2**20)))
        (tmp / "adapter" / "adapter_config.json").write_text("{}")
        (tmp / "README.md").write_text("# bench\n")

        start = time.perf_counter()
        (tmp / "records.jsonl").write_bytes(manifest_lib.records_jsonl(rows))
        datanets = [
            {
                "slug": "bench",
                "name": "Bench",
                "version": 1,
                "records": len(rows),
                "license": "CC-BY-4.0",
                "tokens": sum(r["tokens"] for r in rows),
                "merkle_root": merkle_root(r["content_hash"] for r in rows),
            }
        ]
        files = {
            "adapter/adapter_model.safetensors": tmp / "adapter" / "adapter_model.safetensors",
            "adapter/adapter_config.json": tmp / "adapter" / "adapter_config.json",
            "README.md": tmp / "README.md",
            "records.jsonl": tmp / "records.jsonl",
        }
        contributors, totals = manifest_lib.contributor_summary(rows)
        manifest = manifest_lib.build_manifest(
            adapter={"slug": "bench", "name": "Bench", "version": 1, "description": ""},
            files=files,
            base_model={"name": "x"},
            datanets=datanets,
            contributors=contributors,
            totals=totals,
            held_out=manifest_lib.held_out_summary(rows),
            handles={},
            training={},
            evaluation={},
            timestamps={},
            public_key_pem=public_pem,
        )
        zip_path = tmp / "bench.zip"
        with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for inside, local in sorted(files.items()):
                archive.write(local, inside)
            archive.writestr("manifest.json", manifest_lib.canonical(manifest))
            archive.writestr("manifest.sig", manifest_lib.sign(manifest, key))
            archive.writestr("signing_key.pem", public_pem)
        build = time.perf_counter() - start

        start = time.perf_counter()
        verify_zip(zip_path)
        verify = time.perf_counter() - start
        start = time.perf_counter()
        target = rows[len(rows) // 2]["content_hash"]
        from datanets.merkle import inclusion_proof, verify_inclusion

        proof = inclusion_proof([r["content_hash"] for r in rows], target)
        assert verify_inclusion(target, proof, datanets[0]["merkle_root"])
        prove = time.perf_counter() - start
        print(
            f"{args.records:,} records, {args.contributors} contributors, adapter {args.adapter_mb} MB, "
            f"zip {zip_path.stat().st_size / 2**20:.1f} MB, manifest {len(manifest_lib.canonical(manifest)) / 1024:.0f} KB"
        )
        print(f"build + sign + zip: {build:.2f} s")
        print(f"verify (signature, file hashes, every root and count): {verify:.2f} s")
        print(f"one inclusion proof ({len(proof)} steps): {prove * 1000:.1f} ms")


if __name__ == "__main__":
    main()
