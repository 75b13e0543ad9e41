"""Who may see site-wide things: the health detail (worker names, errors, storage backend)."""


def can_view_health_detail(user) -> bool:
    """Everyone sees whether each part is up; what is wrong and where is for site staff."""
    return user.is_authenticated and user.is_staff
