"""Contributor pseudonyms are keyed by their own secret: rotating SECRET_KEY renames nobody."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pseudonym_of(user_id: int, var: Path, **env) -> str:
    """contributor_pseudonym(user_id) in a fresh Django process with only the given settings variables."""
    drop = {"SECRET_KEY", "CONTRIBUTOR_SECRET", "DEBUG", "ALLOWED_HOSTS", "DATABASE_URL"}
    clean = {k: v for k, v in os.environ.items() if k not in drop}
    clean.update(MF_VAR_DIR=str(var), DJANGO_SETTINGS_MODULE="modelfactory.settings", **env)
    code = f"import django; django.setup(); from accounts.contributors import contributor_pseudonym as p; print(p({user_id}))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_rotating_the_secret_key_keeps_every_pseudonym(tmp_path):
    production = {"DEBUG": "0", "ALLOWED_HOSTS": "mf.example.org"}
    before = pseudonym_of(7, tmp_path / "a", SECRET_KEY="old" * 20, CONTRIBUTOR_SECRET="c" * 50, **production)
    after = pseudonym_of(7, tmp_path / "b", SECRET_KEY="new" * 20, CONTRIBUTOR_SECRET="c" * 50, **production)
    assert before == after and before.startswith("c-")
    assert pseudonym_of(8, tmp_path / "b", SECRET_KEY="new" * 20, CONTRIBUTOR_SECRET="c" * 50, **production) != after
    assert pseudonym_of(7, tmp_path / "b", SECRET_KEY="new" * 20, CONTRIBUTOR_SECRET="d" * 50, **production) != after


def test_without_a_contributor_secret_the_first_one_is_kept_under_var(tmp_path):
    """The stored default starts as the secret key of the first start (pseudonyms published before the setting
    existed stay valid) and then outlives a new secret key."""
    var = tmp_path / "var"
    first = pseudonym_of(7, var, SECRET_KEY="old" * 20)
    assert (var / "contributor_secret").read_text() == "old" * 20
    assert pseudonym_of(7, var, SECRET_KEY="new" * 20) == first
    assert pseudonym_of(7, tmp_path / "elsewhere", SECRET_KEY="new" * 20) != first
