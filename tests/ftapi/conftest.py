import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from publishing import services as publishing_services
from tests.factories import MembershipFactory, UserFactory


def chat_lines(n: int, start: int = 0) -> bytes:
    """n records in OpenAI's chat format: what each made-up code means."""
    return b"".join(
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "You explain codes."},
                    {"role": "user", "content": f"What does code {i} mean?"},
                    {"role": "assistant", "content": f"Code {i} means the colour blue."},
                ]
            }
        ).encode()
        + b"\n"
        for i in range(start, start + n)
    )


def jsonl(content: bytes, name: str = "train.jsonl") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="application/jsonl")


@pytest.fixture
def owner(db):
    return UserFactory(username="ana")


@pytest.fixture
def team(owner):
    return MembershipFactory(user=owner, role="member", team__slug="clinic", team__name="Clinic").team


@pytest.fixture
def token(owner, team):
    """A team token with the train scope: it uploads and fine-tunes."""
    return publishing_services.token_create(user=owner, name="ci", scope="train", team=team)[1]
