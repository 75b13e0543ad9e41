"""Log-in throttling (django-axes): wrong passwords lock out the account and the address, not forever."""

import pytest
from django.test import Client
from django.urls import reverse

from tests.factories import PASSWORD, UserFactory


def log_in(client, username, password):
    return client.post(reverse("login"), {"username": username, "password": password})


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


@pytest.fixture(autouse=True)
def limits(settings):
    settings.AXES_FAILURE_LIMIT = 5


def test_the_right_password_after_many_wrong_ones_is_refused(db):
    victim = UserFactory()
    attacker = Client(REMOTE_ADDR="198.51.100.7")
    codes = [log_in(attacker, victim.username, f"guess-{i}").status_code for i in range(30)]
    assert codes[:4] == [200] * 4 and set(codes[5:]) == {429}, codes
    right = log_in(attacker, victim.username, PASSWORD)
    assert right.status_code == 429 and not logged_in(attacker)
    assert "Too many wrong passwords" in right.content.decode()


def test_an_account_is_locked_whatever_address_the_guesses_come_from(db):
    victim = UserFactory()
    for i in range(6):
        log_in(Client(REMOTE_ADDR=f"198.51.100.{i}"), victim.username, "wrong")
    fresh = Client(REMOTE_ADDR="203.0.113.50")
    assert log_in(fresh, victim.username, PASSWORD).status_code == 429 and not logged_in(fresh)
    other = UserFactory()
    assert log_in(fresh, other.username, PASSWORD).status_code == 302 and logged_in(fresh)


def test_an_address_is_locked_whatever_accounts_it_guesses(db):
    attacker = Client(REMOTE_ADDR="198.51.100.9")
    for i in range(6):
        log_in(attacker, f"someone{i}", "wrong")
    user = UserFactory()
    assert log_in(attacker, user.username, PASSWORD).status_code == 429 and not logged_in(attacker)
    elsewhere = Client(REMOTE_ADDR="203.0.113.60")
    assert log_in(elsewhere, user.username, PASSWORD).status_code == 302


def test_a_right_password_resets_the_count(db):
    user = UserFactory()
    client = Client(REMOTE_ADDR="198.51.100.10")
    for _ in range(3):
        log_in(client, user.username, "wrong")
    assert log_in(client, user.username, PASSWORD).status_code == 302
    client.logout()
    for _ in range(3):
        log_in(client, user.username, "wrong")
    assert log_in(client, user.username, PASSWORD).status_code == 302
