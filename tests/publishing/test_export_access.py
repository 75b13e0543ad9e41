"""Roles x export endpoints (page request, page download, API request, status and download): whoever may not
see the adapter gets the same 404 as for a missing one; a read-only token may not export."""

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse

from publishing import services
from publishing.models import Adapter, AdapterExport
from tests.factories import MembershipFactory, UserFactory
from tests.publishing.test_access_matrix import ROLES, as_role


@pytest.fixture
def built_export(adapter):
    """A ready export row with a stored zip: these tests are about who reaches it, not how it is built
    (test_exports builds one on a worker)."""
    name = default_storage.save(f"adapters/{adapter.slug}/v{adapter.version}/exports/x.zip", ContentFile(b"zip"))
    files = {"merged": {"name": name, "filename": "x.zip", "bytes": 3, "sha256": "0" * 64}}
    return AdapterExport.objects.create(
        adapter=adapter, requested_by=adapter.published_by, status="succeeded", files=files
    )


def test_matrix(built_export):
    """One trained adapter for both visibilities: training is what costs."""
    for visibility in ("team", "public"):
        Adapter.objects.filter(pk=built_export.adapter_id).update(visibility=visibility)
        walk_roles(built_export.adapter, visibility)
    assert AdapterExport.objects.get().status == "succeeded"  # asking again for a ready export rebuilds nothing
    Adapter.objects.filter(pk=built_export.adapter_id).update(visibility="team")
    team_token_for_another_team(built_export.adapter)
    built_export.delete()
    nothing_listed_before_a_request(built_export.adapter)


def walk_roles(adapter, visibility):
    slug, version = adapter.slug, adapter.version
    request = reverse("adapter_export", args=[slug, version])
    download = reverse("adapter_export_download", args=[slug, version, "merged"])
    api = f"/api/v1/adapters/{slug}/versions/{version}/exports"
    missing_api = "/api/v1/adapters/no-such-adapter/versions/1/exports"
    for role in ROLES:
        client, user = as_role(role, adapter)
        sees = visibility == "public" or role in ("team member", "team admin", "staff")
        page = client.get(reverse("adapter_detail", args=[slug, version]))
        if user is None:
            assert client.post(request).status_code == 302 and client.get(download).status_code == 302  # log in
            assert ("export-download" in page.content.decode()) is False
            assert client.get(api).status_code == 401
            continue
        assert client.post(request).status_code == (302 if sees else 404), role
        assert client.get(download).status_code == (200 if sees else 404), role
        assert client.get(reverse("adapter_export_download", args=[slug, version, "gguf-f16"])).status_code == 404
        if sees:
            assert page.content.decode().count('class="export-download"') == 1, role
        _, secret = services.token_create(user=user, name="t", scope="download")
        headers = {"Authorization": f"Bearer {secret}"}
        missing = client.post(missing_api, headers=headers)
        for method, url in (("post", api), ("get", api), ("get", f"{api}/merged/download")):
            response = getattr(client, method)(url, headers=headers)
            expected = (202 if method == "post" else 200) if sees else 404
            assert response.status_code == expected, (role, method, url)
            if not sees:
                assert response.content == missing.content  # the same answer as for no adapter at all
        if sees:
            files = client.get(api, headers=headers).json()["files"]
            assert [f["format"] for f in files] == ["merged"] and files[0]["download_url"] == f"{api}/merged/download"
        _, read_only = services.token_create(user=user, name="r", scope="read")
        expected = 403 if sees else 404
        assert client.post(api, headers={"Authorization": f"Bearer {read_only}"}).status_code == expected, role


def team_token_for_another_team(adapter):
    member = MembershipFactory(team=adapter.team, role="member").user
    elsewhere = MembershipFactory(user=member, role="member").team
    _, secret = services.token_create(user=member, name="other team", scope="download", team=elsewhere)
    api = f"/api/v1/adapters/{adapter.slug}/versions/{adapter.version}/exports"
    client = Client()
    for url in (api, f"{api}/merged/download"):
        assert client.get(url, headers={"Authorization": f"Bearer {secret}"}).status_code == 404


def nothing_listed_before_a_request(adapter):
    member = MembershipFactory(team=adapter.team, role="member").user
    _, secret = services.token_create(user=member, name="t", scope="download")
    api = f"/api/v1/adapters/{adapter.slug}/versions/{adapter.version}/exports"
    response = Client().get(api, headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 404 and "POST" in response.json()["detail"]
    client = Client()
    client.force_login(UserFactory())  # signed in, not in the team: the page says nothing about exports
    assert (
        client.get(reverse("adapter_export_download", args=[adapter.slug, adapter.version, "merged"])).status_code
        == 404
    )
