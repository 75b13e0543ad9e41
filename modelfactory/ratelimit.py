"""One rate limiter for /api/v1, /v1 and the playground: fixed windows counted atomically in Redis.

Each hit is one MULTI/EXEC of INCR and EXPIRE on the key of the current window, so parallel requests
cannot overwrite each other's counts (a list rewritten in the cache could). Quotas are per API token
(shared by /api/v1 and /v1), per signed-in user (playground) and per client address (anonymous); the
address comes from X-Forwarded-For only behind TRUSTED_PROXY_COUNT proxies.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from modelfactory.redis_client import redis_client

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: str
    retry_after: int  # seconds until the window turns


def parse_rate(rate: str) -> tuple[int, int]:
    """ "600/m" -> (600, 60): requests per window of seconds."""
    count, _, unit = rate.partition("/")
    return int(count), UNITS[unit.strip()[:1].lower()]


def rate_hit(key: str, rate: str) -> Verdict:
    """Count one request against ``key``'s quota; say whether it is within ``rate``."""
    allowed, seconds = parse_rate(rate)
    now = time.time()
    name = cache.make_key(f"rate:{key}:{int(now // seconds)}")
    pipe = redis_client().pipeline(transaction=True)
    pipe.incr(name)
    pipe.expire(name, seconds + 1)
    used, _ = pipe.execute()
    return Verdict(allowed=used <= allowed, limit=rate, retry_after=max(1, int(seconds - now % seconds + 0.999)))


def client_address(request) -> str:
    """The client's address: REMOTE_ADDR, or behind N trusted proxies the Nth X-Forwarded-For entry from
    the right (each proxy appends the address it heard from; what the client wrote itself is further left)."""
    remote = request.META.get("REMOTE_ADDR", "")
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies <= 0:
        return remote
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    return hops[-proxies] if len(hops) >= proxies else remote


def request_quota_key(request) -> tuple[str, str]:
    """(key, rate): the request's API token's quota, else its client address's anonymous one."""
    token = getattr(request, "api_token", None)
    if token is not None:
        return (
            f"token:{token.key_sha256[:32]}",
            settings.API_RATE_LIMIT,
        )  # not the pk: a reused pk would inherit a count
    return f"anon:{client_address(request)}", settings.API_ANON_RATE_LIMIT
