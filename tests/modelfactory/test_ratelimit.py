"""One atomic rate limiter: parallel clients cannot overrun it, a token has one quota for /api/v1 and
/v1, and a rotated X-Forwarded-For does not reset the anonymous limit."""

import threading
from collections import Counter

import pytest
from django.test import Client

from publishing import services
from tests.factories import UserFactory


def test_parallel_requests_never_pass_the_limit(transactional_db, settings):
    settings.API_RATE_LIMIT = "100/d"  # a window that does not turn during the test
    _, secret = services.token_create(user=UserFactory(), name="flood", scope="read")
    codes, lock, start = Counter(), threading.Lock(), threading.Barrier(20)

    def client_thread():
        client, mine = Client(), Counter()
        start.wait()
        for _ in range(15):
            mine[client.get("/api/v1/datanets", headers={"Authorization": f"Bearer {secret}"}).status_code] += 1
        with lock:
            codes.update(mine)

    threads = [threading.Thread(target=client_thread) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"\n20 parallel clients, 300 requests, limit 100: {codes[200]} let through, {codes[429]} refused")
    assert codes == {200: 100, 429: 200}


def test_a_token_has_one_quota_for_the_rest_and_the_openai_api(db, settings):
    settings.API_RATE_LIMIT = "3/d"
    _, secret = services.token_create(user=UserFactory(), name="both", scope="read")
    auth = {"Authorization": f"Bearer {secret}"}
    client = Client()
    assert [client.get("/api/v1/datanets", headers=auth).status_code for _ in range(2)] == [200, 200]
    assert client.get("/v1/models", headers=auth).status_code == 200
    refused = client.get("/v1/models", headers=auth)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(refused["Retry-After"]) > 0
    refused = client.get("/api/v1/datanets", headers=auth)
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0


@pytest.mark.parametrize("proxies", [0, 1])
def test_a_rotated_forwarded_for_does_not_reset_the_anonymous_limit(db, settings, proxies):
    settings.API_ANON_RATE_LIMIT = "3/d"
    settings.TRUSTED_PROXY_COUNT = proxies
    client = Client(REMOTE_ADDR="10.9.9.9")  # the proxy, or the client itself without one
    # The attacker writes a new address each time; a trusted proxy appends the address it heard from.
    codes = [
        client.get(
            "/api/v1/signing-key",
            headers={"X-Forwarded-For": f"198.51.100.{i}, 203.0.113.7" if proxies else f"198.51.100.{i}"},
        ).status_code
        for i in range(5)
    ]
    assert codes == [200, 200, 200, 429, 429]
    if proxies:  # behind the proxy, another client has a quota of its own
        other = client.get("/api/v1/signing-key", headers={"X-Forwarded-For": "203.0.113.8"})
        assert other.status_code == 200
