"""An Ollama Modelfile for an exported GGUF: its TEMPLATE, SYSTEM and stop tokens read off the model's own
chat template. No Django.

Ollama templates are Go templates, not Jinja, so the chat template is not translated: it is rendered on a
conversation of marked messages and the turn markup is read off the result. That works for templates of
the common shape, every turn written as PREFIX + role + SEPARATOR + content + SUFFIX (ChatML, Llama 3,
the bundled SmolLM2's), with an optional default system prompt put in when a conversation has none
(SYSTEM, which Ollama inserts the same way). The Go template built from the parts is checked against
the Jinja one on two conversations; a template of another shape is refused rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

MARK = "7f3a9c"
SYSTEM, USER_1, ASSISTANT_1, USER_2 = (f"{part}-{MARK}" for part in ("SYS", "U1", "A1", "U2"))


class UnsupportedTemplate(ValueError):
    """The chat template is not of the turn-markup shape an Ollama template can be built from."""


@dataclass(frozen=True)
class TurnMarkup:
    start: str  # before the first turn (a literal BOS, usually empty)
    prefix: str  # before the role
    separator: str  # between the role and the content
    suffix: str  # after the content
    default_system: str | None

    def render(self, messages: list[dict]) -> str:
        """What the Go template renders for these messages (Ollama adds SYSTEM first when none is given)."""
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.default_system}, *messages]
        turns = "".join(f"{self.prefix}{m['role']}{self.separator}{m['content']}{self.suffix}" for m in messages)
        return f"{self.start}{turns}{self.prefix}assistant{self.separator}"

    def go_template(self) -> str:
        return (
            f"{self.start}{{{{ range .Messages }}}}{self.prefix}{{{{ .Role }}}}{self.separator}"
            f"{{{{ .Content }}}}{self.suffix}{{{{ end }}}}{self.prefix}assistant{self.separator}"
        )


def _pieces(text: str, marks: list[str]) -> list[str]:
    pieces, rest = [], text
    for mark in marks:
        before, found, rest = rest.partition(mark)
        if not found:
            raise UnsupportedTemplate("The chat template does not write message contents as given.")
        pieces.append(before)
    return [*pieces, rest]


def _common_suffix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return a[len(a) - n :]


def turn_markup(render) -> TurnMarkup:
    """Read the turn markup off ``render(messages) -> str`` (the chat template, with the generation prompt)."""
    conversation = [("system", SYSTEM), ("user", USER_1), ("assistant", ASSISTANT_1), ("user", USER_2)]
    p0, p1, p2, p3, p4 = _pieces(
        render([{"role": r, "content": c} for r, c in conversation]), [c for _, c in conversation]
    )
    head, found, separator = p1.partition("user")
    if (
        not found
        or p2 != f"{head}assistant{separator}"
        or p3 != p1
        or p4 != p2
        or not p0.endswith("system" + separator)
    ):
        raise UnsupportedTemplate("The chat template does not mark every turn the same way.")
    before_first = p0[: -len("system" + separator)]
    prefix = _common_suffix(before_first, head)
    markup = TurnMarkup(
        start=before_first[: len(before_first) - len(prefix)],
        prefix=prefix,
        separator=separator,
        suffix=head[: len(head) - len(prefix)],
        default_system=None,
    )
    alone = render([{"role": "user", "content": USER_1}])
    if alone != markup.render([{"role": "user", "content": USER_1}]):
        opening = f"{markup.start}{prefix}system{separator}"
        rest = f"{markup.suffix}{prefix}user{separator}{USER_1}{markup.suffix}{prefix}assistant{separator}"
        if not (alone.startswith(opening) and alone.endswith(rest)):
            raise UnsupportedTemplate("The chat template adds something other than a default system prompt.")
        markup = TurnMarkup(**{**markup.__dict__, "default_system": alone[len(opening) : len(alone) - len(rest)]})
    for messages in ([{"role": r, "content": c} for r, c in conversation], [{"role": "user", "content": USER_1}]):
        if render(messages) != markup.render(messages):
            raise UnsupportedTemplate("An Ollama template built from the chat template renders differently.")
    return markup


def _quoted(text: str) -> str:
    if '"""' in text:
        raise UnsupportedTemplate('The chat template contains """, which a Modelfile cannot quote.')
    return f'"""{text}"""'


def modelfile(
    *,
    gguf_name: str,
    render,
    stop_tokens: list[str],
    context_length: int,
    greedy: bool,
    title: str,
    license_name: str = "",
) -> str:
    """The Modelfile text. ``render`` is the chat template (messages -> prompt with the generation prompt);
    ``stop_tokens`` the end-of-turn tokens (the end of a turn and the start of a next one are added)."""
    markup = turn_markup(render)
    stops = [token for token in (markup.suffix.strip(), markup.prefix.strip(), *stop_tokens) if token]
    lines = [f"# {title}", f"FROM ./{gguf_name}", f"TEMPLATE {_quoted(markup.go_template())}"]
    if markup.default_system is not None:
        lines.append(f"SYSTEM {_quoted(markup.default_system)}")
    lines += [f'PARAMETER stop "{token}"' for token in dict.fromkeys(stops)]
    lines.append(f"PARAMETER num_ctx {min(context_length, 8192)}")
    if greedy:
        lines.append("PARAMETER temperature 0")  # the merged model's generation config decodes greedily
    if license_name:
        lines.append(f"LICENSE {_quoted(license_name)}")
    return "\n".join(lines) + "\n"
