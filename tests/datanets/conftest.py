import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.factories import DatanetFactory, MembershipFactory, UserFactory


@pytest.fixture
def curator(db):
    return UserFactory(username="curie")


@pytest.fixture
def datanet(curator):
    datanet = DatanetFactory(name="Cardiology QA", slug="cardiology-qa")
    MembershipFactory(team=datanet.team, user=curator, role="admin")
    return datanet


@pytest.fixture
def contributor(db):
    return UserFactory(username="hippocrates")


def jsonl_file(rows, name="records.jsonl"):
    data = "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)
    return SimpleUploadedFile(name, data.encode(), content_type="application/octet-stream")


def qa(i, answer=None):
    return {"instruction": f"Question {i}: what is finding number {i}?", "output": answer or f"Finding {i} is normal."}
