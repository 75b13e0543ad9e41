"""Check: README's `openai` fine-tuning example runs as written against the stack `make run` starts.

    .venv/bin/python bench/api_example.py

Starts the launcher on a scratch var folder (the bundled model is imported there), makes a user, a
team and a team token with the train scope, writes `codes.jsonl` (24 chats in OpenAI's format), then
runs README's example block unchanged but for `base_url` and the key, and prints what it printed
and how long it took. Exit status 0 when the example ran to its end.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.faults import start  # noqa: E402


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("**Fine-tuning from code") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def main() -> int:
    stack = start("mf-api-example-")
    scratch = stack.var_dir.parent
    try:
        from publishing import services as publishing_services
        from tests.factories import MembershipFactory, UserFactory

        user = UserFactory(username="scripter")
        team = MembershipFactory(user=user, role="owner", team__slug="clinic", team__name="Clinic").team
        _, secret = publishing_services.token_create(user=user, name="script", scope="train", team=team)
        chats = [
            {
                "messages": [
                    {"role": "user", "content": f"What does code {i} mean?"},
                    {"role": "assistant", "content": f"Code {i} means the colour {['blue', 'red', 'green'][i % 3]}."},
                ]
            }
            for i in range(24)
        ]
        (scratch / "codes.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
        code = readme_example()
        code = code.replace("http://127.0.0.1:8000/v1", f"{stack.url}/v1").replace('"mf_..."', repr(secret))
        (scratch / "example.py").write_text(code)
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "example.py"], cwd=scratch, capture_output=True, text=True, timeout=1800
        )
        took = time.monotonic() - started
    finally:
        stack.stop()
    print(result.stdout[-4000:])
    if result.returncode:
        print(result.stderr[-4000:], file=sys.stderr)
    print(f"README example: exit {result.returncode} after {took:.0f} s")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
