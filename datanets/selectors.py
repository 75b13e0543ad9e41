"""Reads for Datanet pages."""

from django.db.models import Count, Q

from .models import Record


def moderation_queue(*, datanets, datanet=None, flag: str = "", contributor: str = "", status: str = "pending"):
    records = Record.objects.filter(datanet__in=datanets).select_related("datanet", "contributor", "reviewed_by")
    if datanet is not None:
        records = records.filter(datanet=datanet)
    if status:
        records = records.filter(status=status)
    if flag == "any":
        records = records.exclude(flag_kinds="")
    elif flag:
        records = records.filter(flag_kinds__contains=flag)
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
    pieces, cursor = [], 0
    for flag in sorted((f for f in record.flags if f["end"] > f["start"]), key=lambda f: f["start"]):
        if flag["start"] < cursor:
            continue
        pieces.append((record.text[cursor : flag["start"]], None))
        pieces.append((record.text[flag["start"] : flag["end"]], flag["kind"]))
        cursor = flag["end"]
    pieces.append((record.text[cursor:], None))
    return [piece for piece in pieces if piece[0]]
