"""Filters for the model card, a Markdown file with YAML front matter: escaped for those, not for HTML.

The card is rendered with autoescaping off (an apostrophe stays an apostrophe); text people typed goes
through ``md`` so it cannot open Markdown or HTML markup, and front-matter values through ``yaml``.
"""

import json
import re

from django import template

register = template.Library()

MARKUP = re.compile(r"([\\`*_\[\]<>|#~]|&(?=#?\w+;))")
PLAIN_YAML = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._/+-]*\Z")


@register.filter
def md(value) -> str:
    """Backslash-escape what Markdown reads as markup (emphasis, links, code, raw HTML, entities, tables,
    headings), and keep each line of typed text from starting a list or a block of its own."""
    text = MARKUP.sub(r"\\\1", str(value))
    return re.sub(r"(?m)^(\s*)([-+=]|\d+[.)])(?=\s|$)", r"\1\\\2", text)


@register.filter
def yaml(value) -> str:
    """A YAML scalar on one line: as it is when plainly safe, else double-quoted (JSON is valid YAML)."""
    text = str(value)
    return text if PLAIN_YAML.match(text) and not text.endswith(" ") else json.dumps(text, ensure_ascii=False)
