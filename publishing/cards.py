"""Model cards for pages: the YAML front matter as data, the Markdown body as HTML that is safe to show. No Django.

The card comes from the signed zip and quotes names and descriptions people typed, so raw HTML in it is
never passed through: markdown-it-py (CommonMark, tables) runs with HTML off, which escapes every tag,
and its link validation drops javascript:, vbscript:, file: and data: links.
"""

from __future__ import annotations

import yaml
from markdown_it import MarkdownIt

_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")


def split_front_matter(text: str) -> tuple[dict, str]:
    """(front matter as a dict, body); a card without front matter, or with unreadable YAML, keeps it all."""
    if not text.startswith("---\n"):
        return {}, text
    end = text.find("\n---\n", 4)
    if end < 0:
        return {}, text
    try:
        data = yaml.safe_load(text[4:end])
    except yaml.YAMLError:
        return {}, text
    return (data if isinstance(data, dict) else {}), text[end + 5 :]


def render_card(text: str) -> tuple[list[tuple[str, str]], str]:
    """([(front matter key, value as text)], the body as safe HTML)."""
    front, body = split_front_matter(text)
    rows = [(str(k), ", ".join(map(str, v)) if isinstance(v, list) else str(v)) for k, v in front.items()]
    return rows, _MARKDOWN.render(body)
