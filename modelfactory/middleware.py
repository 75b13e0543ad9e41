"""Friendly error pages on the embedded run: with DEBUG on, Django shows everyone its technical pages."""

from django.conf import settings
from django.shortcuts import render


class FriendlyErrorsMiddleware:
    """With DEBUG on, people other than staff get the same 404 and 500 pages as in production; the
    traceback still goes to the log (django.request), and staff still see Django's debug pages."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if not settings.DEBUG or response.status_code not in (404, 500) or response.streaming:
            return response
        if not response.get("Content-Type", "").startswith("text/html"):
            return response  # the APIs answer errors in their own JSON shapes
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.is_staff:
            return response
        return render(request, f"{response.status_code}.html", status=response.status_code)
