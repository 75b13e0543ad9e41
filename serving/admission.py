"""How many answers may wait or run at once: per user (or API token) and for the whole service.

Each answer in flight is a member of two Redis sorted sets, its owner's and everyone's, scored by when
it was admitted; it leaves them when the worker pushes its last event, or once it is older than twice
SERVING_TIMEOUT_S (a worker that died never says). Admission adds first and counts after, in one
MULTI, so parallel requests can be refused together but never admitted past a bound.
"""

from __future__ import annotations

import time
import uuid

import redis
from django.conf import settings

from modelfactory.exceptions import ApplicationError

EVERYONE = "mf:chat:inflight"


def _owner_key(owner: str) -> str:
    return f"{EVERYONE}:{owner}"


def chat_admit(client: redis.Redis, *, owner: str, count: int = 1) -> list[str]:
    """Request ids for ``count`` answers of ``owner``, or an ApplicationError with extra["status"] 429
    (this owner has too many in flight) or 503 (the service's queue is full)."""
    ids, now = [uuid.uuid4().hex for _ in range(count)], time.time()
    keep_s = int(2 * settings.SERVING_TIMEOUT_S)
    pipe = client.pipeline(transaction=True)
    for key in (_owner_key(owner), EVERYONE):
        pipe.zremrangebyscore(key, 0, now - keep_s)
        pipe.zadd(key, dict.fromkeys(ids, now))
        pipe.zcard(key)
        pipe.expire(key, keep_s)
    results = pipe.execute()
    mine, everyone = results[2], results[6]
    if mine <= settings.SERVING_MAX_PER_USER and everyone <= settings.SERVING_MAX_QUEUE:
        return ids
    chat_release(client, owner=owner, request_ids=ids)
    if mine > settings.SERVING_MAX_PER_USER:
        raise ApplicationError(
            f"Busy: you have {settings.SERVING_MAX_PER_USER} answers in progress; try again when one has finished.",
            extra={"status": 429},
        )
    raise ApplicationError(
        "Busy: the inference service has a full queue; try again in a few seconds.", extra={"status": 503}
    )


def chat_release(client: redis.Redis, *, owner: str, request_ids: list[str]) -> None:
    pipe = client.pipeline(transaction=True)
    for key in (_owner_key(owner), EVERYONE):
        pipe.zrem(key, *request_ids)
    pipe.execute()
