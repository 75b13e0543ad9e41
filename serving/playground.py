"""The playground conversation: a session's turns with one target, each message answered side by side by
the fine-tune (adapter) and its base model, the answers filled in as their requests finish."""

from __future__ import annotations

from . import services

MAX_TURNS = 20
SIDES = ("adapter", "base")


def segments(text: str, attribution: dict | None) -> list[dict]:
    """The answer cut into plain text and attributed spans, for highlighting."""
    out, at = [], 0
    for span in (attribution or {}).get("spans", []):
        if span["start"] > at:
            out.append({"text": text[at : span["start"]]})
        out.append({"text": text[span["start"] : span["end"]], "span": span})
        at = span["end"]
    if at < len(text):
        out.append({"text": text[at:]})
    return out


def _save(session, target: services.Target, turns: list[dict]) -> None:
    playground = session.get("playground", {})
    playground[target.session_key] = turns[-MAX_TURNS:]
    session["playground"] = playground


def conversation_reset(*, session, target: services.Target) -> None:
    _save(session, target, [])


def conversation_turns(*, session, target: services.Target) -> list[dict]:
    """The session's turns for this target, with answers filled in from finished requests."""
    turns = session.get("playground", {}).get(target.session_key, [])
    changed = False
    for turn in turns:
        for side in SIDES:
            if turn.get(side) is None and turn["requests"].get(side):
                result = services.chat_result(request_id=turn["requests"][side])
                if result is not None:
                    turn[side] = {
                        "text": result.get("text", ""),
                        "error": result.get("message"),
                        "attribution": result.get("attribution"),
                    }
                    changed = True
    if changed:
        _save(session, target, turns)
    return turns


def _history(turns: list[dict], side: str, message: str) -> list[dict]:
    messages = []
    for turn in turns:
        answer = turn.get(side) or {}
        if answer.get("text"):
            messages += [{"role": "user", "content": turn["user"]}, {"role": "assistant", "content": answer["text"]}]
    return messages + [{"role": "user", "content": message}]


def conversation_send(
    *, session, target: services.Target, owner: str, message: str, temperature, top_p, max_tokens
) -> dict[str, str]:
    """Ask both sides, each with its own history; returns side -> request id. Raises ApplicationError when
    the settings are out of range or the workers are full (both answers are admitted, or neither)."""
    turns = conversation_turns(session=session, target=target)
    sampling = services.clean_sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens)
    admitted = services.chat_admit(owner=owner, count=len(SIDES))
    requests = {
        side: services.chat_start(
            target=target,
            messages=_history(turns, side, message),
            sampling=sampling,
            owner=owner,
            use_adapter=side == "adapter",
            request_id=request_id,
        )
        for side, request_id in zip(SIDES, admitted, strict=True)
    }
    turns.append({"user": message, "requests": requests, "adapter": None, "base": None})
    _save(session, target, turns)
    return requests


def conversation_shown(turns: list[dict]) -> list[dict]:
    """The turns as the page shows them: each answer cut into segments."""
    return [
        {
            **turn,
            **{
                side: {**turn[side], "segments": segments(turn[side]["text"], turn[side].get("attribution"))}
                for side in SIDES
                if turn.get(side)
            },
        }
        for turn in turns
    ]
