"""The process's one Redis connection pool for the product's own keys (rate limits, chat admission and
streams); Celery and Django's cache keep theirs. Safe across fork: redis-py reopens a pool in a child."""

from functools import lru_cache

import redis
from django.conf import settings

CONNECT_TIMEOUT_S = 5


@lru_cache(maxsize=4)
def _pool(url: str) -> redis.ConnectionPool:
    # No read timeout: BLPOP waits up to SERVING_TIMEOUT_S for the next token and brings its own deadline.
    return redis.ConnectionPool.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=None)


def redis_client() -> redis.Redis:
    """A client on the shared pool: cheap to make, so make one where needed rather than keep it."""
    return redis.Redis(connection_pool=_pool(settings.CACHE_REDIS_URL))
