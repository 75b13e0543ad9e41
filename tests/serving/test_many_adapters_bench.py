"""bench/serving.py's many-adapter runs as a smoke case: requests cycling through more adapters than the old
count bound reload them from disk under that bound, and never once the bound is memory."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(
    r"^(.+?): (\d+) adapter\(s\) (in turn|at random), \d+ requests: ([\d.]+) tokens/s .* (\d+) cold loads$"
)


def test_cycling_through_adapters_thrashes_a_count_bound_and_not_a_memory_bound(tiny_model_dir):
    command = [sys.executable, "bench/serving.py", "--model", str(tiny_model_dir), "--skip-engine", "--skip-index"]
    command += ["--many", "4", "--many-requests", "8", "--lru", "2"]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = {(m[1], int(m[2]), m[3]): (float(m[4]), int(m[5])) for m in map(LINE.match, out.stdout.splitlines()) if m}
    assert set(runs) == {
        (d, n, o) for d in ("LRU of 2", "memory-bound") for n, o in [(1, "in turn"), (4, "in turn"), (4, "at random")]
    }
    assert runs[("LRU of 2", 4, "in turn")][1] >= 2  # 4 adapters in turn, 2 kept: the evicted ones come back
    assert runs[("memory-bound", 4, "in turn")][1] == runs[("memory-bound", 4, "at random")][1] == 0
    assert all(rate > 0 for rate, _ in runs.values())
