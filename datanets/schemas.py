"""The record schemas of a Datanet: what a valid record is, its normalised content, its text. No Django.

A record is normalised before it is hashed (datanets/records.py): every string NFC and trimmed,
instruction records always carry ``input`` ("" when absent), chat roles lowercased. Preference
records hold a prompt (a string) or a chat history (``messages`` ending with a user turn), and two
answers to it: ``chosen`` (the better one) and ``rejected``; both non-empty and different. OpenAI's DPO
lines (``input.messages``, ``preferred_output``, ``non_preferred_output``) are taken as the same records.
"""

from __future__ import annotations

import unicodedata

SCHEMAS = ("instruction", "chat", "text", "preference")
CHAT_ROLES = ("system", "user", "assistant")
FIELDS = {
    "instruction": {"instruction", "input", "output"},
    "text": {"text"},
    "chat": {"messages"},
    "preference": {"prompt", "messages", "chosen", "rejected"},
}
OPENAI_PREFERENCE = {"input", "preferred_output", "non_preferred_output"}  # OpenAI's DPO file format


def clean_text(value, field: str) -> str:
    if value is None:
        raise ValueError(f"{field!r} is missing")
    if not isinstance(value, str):
        raise ValueError(f"{field!r} must be a string, not {type(value).__name__}")
    text = (value if value.isascii() else unicodedata.normalize("NFC", value)).strip()  # ASCII is already NFC
    if "\x00" in text:
        raise ValueError(f"{field!r} contains a NUL character")
    return text


def filled(value, field: str) -> str:
    text = clean_text(value, field)
    if not text:
        raise ValueError(f"{field!r} is empty")
    return text


def normalise_messages(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list of {role, content}")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise ValueError(f"messages[{i}] must have exactly 'role' and 'content'")
        role = clean_text(message["role"], f"messages[{i}].role").lower()
        if role not in CHAT_ROLES:
            raise ValueError(f"messages[{i}].role {role!r} is not one of {', '.join(CHAT_ROLES)}")
        content = clean_text(message["content"], f"messages[{i}].content")
        if not content:
            raise ValueError(f"messages[{i}].content is empty")
        out.append({"role": role, "content": content})
    return out


def from_openai_preference(value: dict) -> dict:
    """OpenAI's DPO line ({"input": {"messages": [...]}, "preferred_output": [{"role": "assistant",
    "content": ...}], "non_preferred_output": [...]}) as a preference record: the same record, the same hash."""
    unknown = set(value) - OPENAI_PREFERENCE
    if unknown:
        raise ValueError(f"unexpected field(s): {', '.join(sorted(map(str, unknown)))}")
    source = value.get("input")
    if not isinstance(source, dict) or set(source) != {"messages"}:
        raise ValueError("'input' must be an object holding 'messages' (the chat so far)")

    def answer(field: str):
        given = value.get(field)
        if not (isinstance(given, list) and len(given) == 1 and isinstance(given[0], dict)):
            raise ValueError(f"{field!r} must be a list of one assistant message")
        if set(given[0]) != {"role", "content"} or given[0]["role"] != "assistant":
            raise ValueError(f"{field}[0] must have exactly 'role' (assistant) and 'content'")
        return given[0]["content"]

    return {
        "messages": source["messages"],
        "chosen": answer("preferred_output"),
        "rejected": answer("non_preferred_output"),
    }


def normalise_preference(value: dict) -> dict:
    if ("prompt" in value) == ("messages" in value):
        raise ValueError("a preference record needs either 'prompt' or 'messages' (the chat so far), not both")
    if "prompt" in value:
        content = {"prompt": filled(value["prompt"], "prompt")}
    else:
        messages = normalise_messages(value["messages"])
        if messages[-1]["role"] != "user":
            raise ValueError("'messages' must end with the user turn that 'chosen' and 'rejected' answer")
        content = {"messages": messages}
    content["chosen"] = filled(value.get("chosen"), "chosen")
    content["rejected"] = filled(value.get("rejected"), "rejected")
    if content["chosen"] == content["rejected"]:
        raise ValueError("'chosen' and 'rejected' are the same answer")
    return content


def normalise(value, schema: str) -> dict:
    """Validate one raw record against ``schema`` and return its normalised content (or raise ValueError)."""
    if not isinstance(value, dict):
        raise ValueError(f"a record must be a JSON object, not {type(value).__name__}")
    if schema not in FIELDS:
        raise ValueError(f"unknown schema {schema!r}")
    if schema == "preference" and "preferred_output" in value:
        value = from_openai_preference(value)
    unknown = set(value) - FIELDS[schema]
    if unknown:
        raise ValueError(f"unexpected field(s): {', '.join(sorted(map(str, unknown)))}")
    if schema == "instruction":
        return {
            "instruction": filled(value.get("instruction"), "instruction"),
            "input": clean_text(value.get("input") or "", "input"),
            "output": filled(value.get("output"), "output"),
        }
    if schema == "text":
        return {"text": filled(value.get("text"), "text")}
    if schema == "preference":
        return normalise_preference(value)
    out = normalise_messages(value.get("messages"))
    if not {"user", "assistant"} <= {m["role"] for m in out}:
        raise ValueError("a chat needs at least one user and one assistant message")
    return {"messages": out}


def record_parts(content: dict) -> list[tuple[str, str]]:
    """(part, text) of each string of the record, in the order its text joins them."""
    parts = [(m["role"], m["content"]) for m in content.get("messages", ())]
    fields = ("instruction", "input", "output", "text", "prompt", "chosen", "rejected")
    return parts + [(field, content[field]) for field in fields if content.get(field)]


def record_text(content: dict) -> str:
    """The record's strings joined by newlines: what flags, near-duplicates and token counts read."""
    return "\n".join(text for _, text in record_parts(content))
