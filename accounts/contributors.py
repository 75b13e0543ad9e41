"""Contributor identity outside the instance: a stable pseudonym, or the username where the contributor
consented to being named. Pseudonyms are keyed by CONTRIBUTOR_SECRET, not SECRET_KEY, so that rotating
the secret key renames nobody (published manifests keep naming the same people)."""

import hashlib
import hmac

from django.conf import settings

from .models import ContributorPreference


def contributor_pseudonym(user_id: int) -> str:
    """Stable per instance, not reversible without the instance's contributor secret."""
    key = settings.CONTRIBUTOR_SECRET.encode()
    digest = hmac.new(key, f"contributor:{user_id}".encode(), hashlib.sha256).hexdigest()
    return f"c-{digest[:16]}"


def contributor_handles() -> dict[str, str]:
    """Pseudonym -> username of every contributor who opted in to being named by handle."""
    opted = ContributorPreference.objects.filter(show_handle=True).select_related("user")
    return {contributor_pseudonym(pref.user_id): pref.user.username for pref in opted}


def contributor_labels(user_ids: list[int]) -> dict[int, str]:
    """How manifests name these contributors: their username where they opted in, else their pseudonym."""
    shown = dict(
        ContributorPreference.objects.filter(user_id__in=user_ids, show_handle=True).values_list(
            "user_id", "user__username"
        )
    )
    return {pk: shown.get(pk) or contributor_pseudonym(pk) for pk in user_ids}


def contributor_preference_set(*, user, show_handle: bool) -> ContributorPreference:
    """Opt in (or out) of being named by username in manifests published from now on."""
    preference, _ = ContributorPreference.objects.update_or_create(user=user, defaults={"show_handle": show_handle})
    return preference


def contributor_shows_handle(user) -> bool:
    return ContributorPreference.objects.filter(user=user, show_handle=True).exists()
