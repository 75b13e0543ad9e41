"""Reads for Datanet pages."""

from dataclasses import dataclass

from django.db.models import Count, Q

from . import schemas
from .models import Record, RejectionReason

PAGE_SIZES = (25, 50, 100, 200)


def page_size(value) -> int:
    """The page size a person picked, if it is one of those offered."""
    size = _int(value, PAGE_SIZES[0])
    return size if size in PAGE_SIZES else PAGE_SIZES[0]


def moderation_queue(*, datanets, datanet=None, flag: str = "", contributor: str = "", status: str = "pending"):
    """The records of ``datanets`` (a list) to moderate, in id order.

    One Datanet is filtered by equality, not IN: the (datanet, status, id) index then yields the rows
    in id order and a page reads 25 of them, where IN made SQLite sort every matching row first.
    """
    records = Record.objects.select_related("datanet", "contributor", "reviewed_by")
    if datanet is None and len(datanets) == 1:
        datanet = datanets[0]
    if datanet is not None:
        records = records.filter(datanet=datanet) if datanet in datanets else records.none()
    else:
        records = records.filter(datanet__in=[d.pk for d in datanets])
    if status:
        records = records.filter(status=status)
    if flag == "any":
        records = records.exclude(flag_kinds="")
    elif flag:  # the exclude changes nothing but lets the database use the flagged records' index
        records = records.exclude(flag_kinds="").filter(flag_kinds__contains=flag)
    if contributor:
        records = records.filter(contributor__username=contributor)
    return records.order_by("id")


def contributions_by_datanet(user):
    return (
        Record.objects.filter(contributor=user)
        .values("datanet__slug", "datanet__name")
        .annotate(
            total=Count("id"),
            pending=Count("id", filter=Q(status="pending")),
            approved=Count("id", filter=Q(status="approved")),
            rejected=Count("id", filter=Q(status="rejected")),
        )
        .order_by("datanet__name")
    )


def highlighted(record: Record) -> list[tuple[str, str | None]]:
    """The record's text cut into (piece, flag kind or None) so templates can mark flagged spans."""
    text, pieces, cursor = record.text, [], 0
    for flag in sorted((f for f in record.flags if f["end"] > f["start"]), key=lambda f: f["start"]):
        if flag["start"] < cursor:
            continue
        pieces.append((text[cursor : flag["start"]], None))
        pieces.append((text[flag["start"] : flag["end"]], flag["kind"]))
        cursor = flag["end"]
    pieces.append((text[cursor:], None))
    return [piece for piece in pieces if piece[0]]


def preference_sides(record: Record, pieces: list[tuple[str, str | None]]) -> list[tuple[str, list]] | None:
    """A preference record's highlighted pieces cut into its prompt (or chat so far), chosen and rejected
    answer, for the moderation queue to show the two answers side by side; None for other records."""
    if "chosen" not in record.content:
        return None
    parts = schemas.record_parts(record.content)
    ends, at = [], 0
    for _, text in parts:
        at += len(text) + 1  # the newline that joins it to the next part
        ends.append(at)
    prompt_end, chosen_end = ends[-3], ends[-2]
    sides: dict[str, list] = {"prompt": [], "chosen": [], "rejected": []}
    at = 0
    for piece, kind in pieces:
        while piece:
            side = "prompt" if at < prompt_end else "chosen" if at < chosen_end else "rejected"
            limit = prompt_end if side == "prompt" else chosen_end if side == "chosen" else len(record.text) + 1
            taken = piece[: limit - at]
            sides[side].append((taken.strip("\n") if not kind else taken, kind))
            piece, at = piece[len(taken) :], at + len(taken)
    return [(side, [p for p in sides[side] if p[0]]) for side in ("prompt", "chosen", "rejected")]


@dataclass
class KeysetPage:
    """One page of a list ordered by id, found from the id of a neighbouring page's edge rather than
    by counting rows from the start, so page 2,000 costs what page 1 does. ``number`` is carried in
    the links for display; it is 1 whenever nothing comes before the page."""

    rows: list
    number: int
    num_pages: int
    count: int
    after: int | None  # for the next page's link: the id of this page's last row
    before: int | None  # for the previous page's link: the id of this page's first row


def _int(value, default=None):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def keyset_page(queryset, *, after=None, before=None, number=None, per_page: int = 25) -> KeysetPage:
    """The page after id ``after``, or before id ``before``, or the first page; ``queryset`` is ordered by id."""
    after, before, number = _int(after), _int(before), _int(number, 1)
    if after is not None:
        rows = list(queryset.filter(id__gt=after).order_by("id")[: per_page + 1])
        has_previous, has_next = True, len(rows) > per_page
        rows = rows[:per_page]
    elif before is not None:
        rows = list(queryset.filter(id__lt=before).order_by("-id")[: per_page + 1])
        has_previous, has_next = len(rows) > per_page, True
        rows = rows[:per_page][::-1]
    else:
        rows = list(queryset.order_by("id")[: per_page + 1])
        has_previous, has_next = False, len(rows) > per_page
        rows = rows[:per_page]
    count = queryset.count()
    num_pages = max(1, -(-count // per_page))
    number = 1 if not has_previous else min(max(number, 2), num_pages)
    if not rows:  # past the end (the rows were moderated meanwhile): offer the way back only
        has_next = False
    return KeysetPage(
        rows=rows,
        number=number,
        num_pages=num_pages,
        count=count,
        after=rows[-1].pk if rows and has_next else None,
        before=rows[0].pk if rows and has_previous else (after + 1 if has_previous and after is not None else None),
    )


def rejection_reasons(*, datanets, datanet=None):
    """The saved reasons of the teams of the Datanets on the moderation page (of one, when one is chosen)."""
    teams = {datanet.team_id} if datanet is not None else {d.team_id for d in datanets}
    return RejectionReason.objects.filter(team_id__in=teams)[:50]
