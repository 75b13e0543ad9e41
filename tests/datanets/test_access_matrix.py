"""Who may do what with a Datanet: roles x visibilities x pages, downloads and actions, in one matrix."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from datanets import services
from datanets.models import Record
from tests.datanets.conftest import jsonl_file, qa
from tests.factories import DatanetFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "outsider", "granted", "member", "curator", "admin", "staff"]

# (role) -> (view page, contribute, train/export, curate) for each visibility
EXPECTED = {
    "public": {
        "anonymous": (True, False, False, False),
        "outsider": (True, True, True, False),
        "granted": (True, True, True, False),
        "member": (True, True, True, False),
        "curator": (True, True, True, True),
        "admin": (True, True, True, True),
        "staff": (True, True, True, True),
    },
    "permissioned": {
        "anonymous": (True, False, False, False),
        "outsider": (True, True, False, False),
        "granted": (True, True, True, False),
        "member": (True, True, True, False),
        "curator": (True, True, True, True),
        "admin": (True, True, True, True),
        "staff": (True, True, True, True),
    },
    "private": {
        "anonymous": (False, False, False, False),
        "outsider": (False, False, False, False),
        "granted": (False, False, False, False),
        "member": (True, True, True, False),
        "curator": (True, True, True, True),
        "admin": (True, True, True, True),
        "staff": (True, True, True, True),
    },
}


def make_user(role, datanet):
    if role == "anonymous":
        return None
    user = UserFactory(is_staff=role == "staff")
    if role in ("member", "admin"):
        MembershipFactory(team=datanet.team, user=user, role=role)
    if role == "curator":
        datanet.curators.add(user)
    if role == "granted":
        team = MembershipFactory(user=user, role="owner").team
        request = (
            services.access_request_create(datanet=datanet, team=team, by=user)
            if (datanet.visibility == "permissioned")
            else None
        )
        if request:
            services.access_request_decide(request=request, by=UserFactory(is_staff=True), grant=True)
    return user


@pytest.fixture
def published(request):
    """A Datanet of the given visibility with one published version and one finished upload."""
    visibility = request.param
    datanet = DatanetFactory(visibility="public")
    author = UserFactory()
    upload = services.upload_create(datanet=datanet, contributor=author, file=jsonl_file([qa(1)]))
    services.upload_ingest(upload=upload)
    Record.objects.update(status="approved")
    services.version_publish(datanet=datanet, by=UserFactory(is_staff=True))
    datanet.visibility = visibility
    datanet.save()
    return datanet, upload


@pytest.mark.parametrize("published", list(EXPECTED), indirect=True)
@pytest.mark.parametrize("role", ROLES)
def test_matrix(client, published, role):
    datanet, upload = published
    view, contribute, train, curate = EXPECTED[datanet.visibility][role]
    user = make_user(role, datanet)
    if user is not None:
        client.force_login(user)

    def status(name, *args):
        return client.get(reverse(name, args=args)).status_code

    hidden = 302 if user is None else 404  # anonymous users are sent to log in first
    assert status("datanet_detail", datanet.slug) == (200 if view else 404)
    assert status("version_detail", datanet.slug, 1) == (200 if view else 404)
    assert status("datanet_contribute", datanet.slug) == (200 if contribute else hidden)
    assert status("version_export", datanet.slug, 1) == (200 if train else hidden)
    assert status("upload_detail", upload.pk) == (200 if curate else hidden)
    assert status("upload_report", upload.pk) == (200 if curate else hidden)

    listed = datanet.name in client.get(reverse("datanet_list")).content.decode()
    assert listed is view
    moderation = client.get(reverse("moderation"))
    if user is None:
        assert moderation.status_code == 302
    else:
        Record.objects.update(status="pending")
        page = client.get(reverse("moderation")).content.decode()
        assert (f"record-{Record.objects.get().pk}" in page) is curate

    from datanets import policy

    if user is not None:
        assert policy.can_train_on(user, datanet) is train
        assert policy.can_curate_datanet(user, datanet) is curate
        assert (datanet in policy.trainable_datanets(user)) is train


def test_contributor_sees_own_upload_but_not_others(client, datanet, contributor):
    upload = services.upload_create(datanet=datanet, contributor=contributor, file=jsonl_file([qa(1)]))
    client.force_login(contributor)
    assert client.get(reverse("upload_detail", args=[upload.pk])).status_code == 200
    client.force_login(UserFactory())
    assert client.get(reverse("upload_detail", args=[upload.pk])).status_code == 404


def test_moderation_page_is_constant_in_queries(client, datanet, curator, django_assert_max_num_queries):
    author = UserFactory()
    upload = services.upload_create(datanet=datanet, contributor=author, file=jsonl_file([qa(i) for i in range(60)]))
    services.upload_ingest(upload=upload)
    client.force_login(curator)
    with django_assert_max_num_queries(12):
        response = client.get(reverse("moderation"))
    assert response.content.decode().count('name="records"') == 25


def test_contributed_text_is_rendered_inert(client, datanet, curator):
    author = UserFactory()
    services.record_create(
        datanet=datanet,
        contributor=author,
        value={"instruction": "<script>alert(1)</script>", "output": "<img src=x onerror=alert(2)>"},
    )
    client.force_login(curator)
    page = client.get(reverse("moderation")).content.decode()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page


def test_report_csv_neutralises_formulas(client, datanet, contributor):
    upload = services.upload_create(
        datanet=datanet, contributor=contributor, file=jsonl_file([qa(1), '{"instruction": "=HYPERLINK(1)"}'])
    )
    services.upload_ingest(upload=upload)
    upload.refresh_from_db()
    upload.errors = [{"line": 2, "reason": '=HYPERLINK("http://x")'}, {"line": 3, "reason": "@SUM(A1)"}]
    upload.save()
    client.force_login(contributor)
    body = client.get(reverse("upload_report", args=[upload.pk])).content.decode()
    assert "'=HYPERLINK" in body and "'@SUM" in body
    assert "\n=" not in body and ",=" not in body


def test_moderation_pages_by_keyset_with_page_numbers_and_constant_queries(client, datanet, curator):
    author = UserFactory()
    upload = services.upload_create(datanet=datanet, contributor=author, file=jsonl_file([qa(i) for i in range(60)]))
    services.upload_ingest(upload=upload)
    ids = list(Record.objects.order_by("id").values_list("id", flat=True))
    client.force_login(curator)

    def shown(response):
        return [int(value) for value in re.findall(r'name="records" value="(\d+)"', response.content.decode())]

    def link(response, label):
        found = re.search(rf'href="\?([^"]*)">[^<]*{label}', response.content.decode())
        return found and "?" + found.group(1).replace("&amp;", "&")

    with CaptureQueriesContext(connection) as first_page:
        first = client.get(reverse("moderation"), {"datanet": datanet.slug})
    assert shown(first) == ids[:25] and "Page 1 of 3 (60 records)" in first.content.decode()
    assert link(first, "Previous") is None
    second = client.get(reverse("moderation") + link(first, "Next"))
    assert shown(second) == ids[25:50] and "Page 2 of 3" in second.content.decode()
    with CaptureQueriesContext(connection) as last_page:
        third = client.get(reverse("moderation") + link(second, "Next"))
    assert shown(third) == ids[50:] and "Page 3 of 3" in third.content.decode() and link(third, "Next") is None
    assert f"datanet={datanet.slug}" in link(third, "Previous")  # filters are kept
    back = client.get(reverse("moderation") + link(third, "Previous"))
    assert shown(back) == ids[25:50] and "Page 2 of 3" in back.content.decode()
    assert shown(client.get(reverse("moderation") + link(back, "Previous"))) == ids[:25]
    assert len(last_page) == len(first_page)  # a deep page costs the queries of the first

    # Records approved meanwhile leave the queue: the next page still starts after the last one seen.
    services.records_moderate(records_qs=Record.objects.filter(id__in=ids[:30]), by=curator, approve=True)
    after = client.get(reverse("moderation") + link(first, "Next"))
    assert shown(after) == ids[30:55] and "of 2 (30 records)" in after.content.decode()
    assert shown(client.get(reverse("moderation"), {"after": "junk"})) == ids[30:55]  # a bad cursor: page 1


def test_moderation_queue_of_a_curator_of_two_datanets_pages_across_both(client, datanet, curator):
    other = DatanetFactory(name="Oncology QA", slug="oncology-qa")
    other.curators.add(curator)
    author = UserFactory()
    for target, start in ((datanet, 0), (other, 100), (datanet, 200)):
        rows = [qa(i) for i in range(start, start + 10)]
        services.upload_ingest(upload=services.upload_create(datanet=target, contributor=author, file=jsonl_file(rows)))
    ids = list(Record.objects.order_by("id").values_list("id", flat=True))
    client.force_login(curator)
    first = client.get(reverse("moderation")).content.decode()
    assert re.findall(r'name="records" value="(\d+)"', first) == [str(i) for i in ids[:25]]
    assert "Page 1 of 2 (30 records)" in first
    only_other = client.get(reverse("moderation"), {"datanet": "oncology-qa"}).content.decode()
    assert "(10 records)" not in only_other and len(re.findall(r'name="records"', only_other)) == 10
