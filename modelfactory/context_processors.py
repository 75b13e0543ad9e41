"""What the navigation offers: only the pages a person can use."""

from functools import partial

from datanets import policy as datanet_policy


def _curates_any(user) -> bool:
    return datanet_policy.curated_datanets(user).exists()


def navigation(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_can_moderate": False}
    return {"nav_can_moderate": partial(_curates_any, user)}  # queried only when a page shows the link
