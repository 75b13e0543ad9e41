"""Benchmark: Datanet ingest throughput and memory, and moderation/Datanet page latency at scale.

    .venv/bin/python bench/ingest.py                 # 10k, 100k and 1M records, pages at 100k
    .venv/bin/python bench/ingest.py --sizes 10000 100000
    .venv/bin/python bench/ingest.py --sizes 100000 --near 0.5   # half the records near duplicates

Each ingest size runs in its own process (fresh database under a temp dir, embedded SQLite unless
DATABASE_URL is set) so that its peak RSS is its own. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = (
    "patient presented with acute chest pain radiating left arm troponin elevated ecg showed st elevation "
    "inferior leads aspirin heparin catheter laboratory angioplasty right coronary artery stent recovered "
    "discharged follow clinic weeks later beta blocker statin lifestyle advice smoking cessation diet"
).split()


def generate(path: Path, n: int, seed: int = 0, near: float = 0.0) -> int:
    """n instruction records of about 500 bytes each (100k records is about 50 MB); a share ``near`` of
    them are near duplicates of the record before (one word of the answer changed)."""
    rng = random.Random(seed)
    with open(path, "w") as handle:
        instruction, answer = "", []
        for i in range(n):
            if answer and rng.random() < near:
                answer[rng.randrange(len(answer))] = rng.choice(WORDS) + "s"  # a word the others lack
            else:
                instruction, answer = f"Case {i}: {' '.join(rng.choices(WORDS, k=12))}?", rng.choices(WORDS, k=55)
            handle.write(json.dumps({"instruction": instruction, "output": " ".join(answer)}) + "\n")
    return path.stat().st_size


def run_one(n: int, pages: bool, near: float = 0.0) -> dict:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelfactory.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.files.uploadedfile import SimpleUploadedFile  # noqa: F401
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from accounts.models import Membership, Team
    from datanets import services
    from datanets.models import Datanet, Record, Upload

    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    User = get_user_model()
    curator = User.objects.create_user("curator", password="x")
    contributor = User.objects.create_user("contributor", password="x")
    team = Team.objects.create(name="Bench", slug="bench")
    Membership.objects.create(team=team, user=curator, role="owner")
    datanet = Datanet.objects.create(name="Bench", slug="bench", team=team, created_by=curator)

    data = Path(os.environ["MF_VAR_DIR"]) / "records.jsonl"
    size = generate(data, n, near=near)
    from django.core.files import File

    with open(data, "rb") as handle:
        upload = Upload(
            datanet=datanet, contributor=contributor, filename="records.jsonl", format="jsonl", size_bytes=size
        )
        upload.file.save("records.jsonl", File(handle), save=False)
        upload.save()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu_before = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    start = time.perf_counter()
    upload = services.upload_ingest(upload=upload)
    seconds = time.perf_counter() - start
    # CPU seconds of the ingest's process and of its worker processes: unlike the wall clock, they do
    # not depend on what else the machine runs.
    cpu = [
        round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1)
        for before, after in zip(
            cpu_before,
            [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)],
            strict=True,
        )
    ]
    result = {
        "records": n,
        "file_mb": round(size / 1e6, 1),
        "status": upload.status,
        "flagged": upload.flagged,
        "seconds": round(seconds, 2),
        "records_per_s": round(n / seconds),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "cpu_s": cpu[0],
        "workers_cpu_s": cpu[1],
        "rss_before_mb": round(rss_before / 1024),
        "database": connection.vendor,
    }
    if pages:
        from django.test.utils import override_settings

        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:  # what autovacuum does soon after a bulk load: plans need statistics
                cursor.execute("ANALYZE")

        # DEBUG is off for honest timings; serve static names without collectstatic's manifest.
        override_settings(
            STORAGES={
                **settings.STORAGES,
                "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
            }
        ).enable()
        client = Client()
        client.force_login(curator)
        contributor_client = Client()
        contributor_client.force_login(contributor)
        # Page 2,000 of the queue, reached the way its links do: after the last id of page 1,999.
        deep = Record.objects.filter(datanet=datanet).order_by("id").values_list("id", flat=True)[1999 * 25 - 1]
        timings = {}
        for name, url, who in (
            ("moderation p1", "/moderation/", client),
            ("moderation p2000", f"/moderation/?after={deep}&page=2000", client),
            ("moderation flagged", "/moderation/?flag=any", client),
            ("datanet detail", f"/datanets/{datanet.slug}/", client),
            ("datanet list", "/datanets/", client),
            ("my contributions", "/contributions/", contributor_client),
        ):
            samples, queries = [], 0
            for _ in range(15):
                with CaptureQueriesContext(connection) as captured:
                    t = time.perf_counter()
                    response = who.get(url)
                    samples.append((time.perf_counter() - t) * 1000)
                assert response.status_code == 200, (url, response.status_code)
                queries = len(captured)
            samples.sort()
            timings[name] = {
                "median_ms": round(statistics.median(samples), 1),
                "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 1),
                "queries": queries,
            }
        result["pages"] = timings
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--pages-at", type=int, default=100_000, help="time the pages after this size's ingest")
    parser.add_argument("--near", type=float, default=0.0, help="share of records that are near duplicates")
    parser.add_argument("--child", type=int)
    parser.add_argument("--pages", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.pages, args.near)))
        return
    from modelfactory import embedded_redis

    redis_dir = tempfile.mkdtemp(prefix="mf-bench-redis-")
    redis = (
        None if os.environ.get("REDIS_URL") else embedded_redis.start(Path(redis_dir) / "redis.sock", Path(redis_dir))
    )
    print(
        f"{'records':>9} {'file MB':>8} {'seconds':>8} {'records/s':>10} {'peak RSS MB':>12} "
        f"{'CPU s':>6} {'workers CPU s':>14} {'flagged':>8}  database"
    )
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as var:
            env = {**os.environ, "MF_VAR_DIR": var, "MF_REDIS_SOCKET": f"{redis_dir}/redis.sock"}
            env.update(DEBUG="0", SECRET_KEY="bench-" + "x" * 50, ALLOWED_HOSTS="testserver")
            env.pop("MODELS_DIR", None)
            env.pop("MEDIA_ROOT", None)
            command = [sys.executable, __file__, "--child", str(n), "--near", str(args.near)]
            command += ["--pages"] if n == args.pages_at else []
            out = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
            if out.returncode:
                print(out.stderr[-3000:])
                raise SystemExit(out.returncode)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{r['records']:>9} {r['file_mb']:>8} {r['seconds']:>8} {r['records_per_s']:>10} "
                f"{r['peak_rss_mb']:>12} {r['cpu_s']:>6} {r['workers_cpu_s']:>14} {r['flagged']:>8}  {r['database']}"
            )
            for page, figures in r.get("pages", {}).items():
                print(
                    f"    page {page:<20} median {figures['median_ms']:>7} ms  p95 {figures['p95_ms']:>7} ms  "
                    f"{figures['queries']} queries"
                )
    if redis is not None:
        redis.terminate()


if __name__ == "__main__":
    main()
