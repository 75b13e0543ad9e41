"""Flags for moderators: likely personal data and secrets in a record's text, and near-duplicates.

No Django. Each flag is {"kind", "start", "end"}: a character span of the record's text, so the
moderation page can highlight it.
"""

from __future__ import annotations

import re
import zlib

import numpy as np
from datasketch import MinHash, MinHashLSH
from stdnum import iban, luhn

EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b")
PHONE = re.compile(r"(?<![\w+])\+?\(?\d{1,4}\)?(?:[ .-]?\(?\d{2,4}\)?){2,5}(?!\w)")
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
SECRETS = re.compile(
    r"\bAKIA[0-9A-Z]{16}\b"  # AWS access key id
    r"|\bsk-[A-Za-z0-9_-]{20,}\b"  # OpenAI-style secret key
    r"|\bgh[pousr]_[A-Za-z0-9]{36,}\b"  # GitHub token
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}\b"  # Slack token
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|\b(?:api[_-]?key|secret|token|password)\s*[:=]\s*['\"]?[A-Za-z0-9_\-/+=]{16,}",
    re.IGNORECASE,
)


DROP_DIGITS = str.maketrans("", "", "0123456789")
SECRET_HINTS = ("akia", "sk-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xox", "private key", "api", "secret", "token",
                "password")  # fmt: skip


def personal_data_flags(text: str) -> list[dict]:
    flags = []
    taken: list[tuple[int, int]] = []

    def add(kind: str, match: re.Match) -> None:
        start, end = match.span()
        if any(start < e and s < end for s, e in taken):
            return
        taken.append((start, end))
        flags.append({"kind": kind, "start": start, "end": end})

    # Cheap tests first: most records have no '@', no run of digits and no secret-like words.
    lowered = text.lower()
    if any(hint in lowered for hint in SECRET_HINTS):
        for match in SECRETS.finditer(text):
            add("secret", match)
    if "@" in text:
        for match in EMAIL.finditer(text):
            add("email", match)
    if len(text) - len(text.translate(DROP_DIGITS)) < 9:  # phones, cards and IBANs have 9+ digits
        return sorted(flags, key=lambda flag: flag["start"])
    for match in IBAN.finditer(text):
        if iban.is_valid(match.group().replace(" ", "")):
            add("iban", match)
    for match in CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and luhn.is_valid(digits):
            add("card_number", match)
    for match in PHONE.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 9 <= len(digits) <= 15:
            add("phone", match)
    return sorted(flags, key=lambda flag: flag["start"])


NUM_PERM = 64
SHINGLE = 5
SCHEME = "affine32"
_WORD = re.compile(r"\w+")


# Computed once: building a MinHash's permutations costs more than hashing a whole record.
_PERMUTATIONS = MinHash(num_perm=NUM_PERM, seed=1, scheme=SCHEME).permutations


def _crc32(data: bytes) -> int:
    """Stable across processes and fast (C); the affine permutations do the mixing."""
    return zlib.crc32(data)


def minhash(text: str) -> MinHash:
    words = _WORD.findall(text.lower())
    shingles = {" ".join(words[i : i + SHINGLE]).encode() for i in range(max(1, len(words) - SHINGLE + 1))}
    signature = MinHash(num_perm=NUM_PERM, seed=1, scheme=SCHEME, hashfunc=_crc32, permutations=_PERMUTATIONS)
    signature.update_batch(list(shingles))
    return signature


def signature_bytes(signature: MinHash) -> bytes:
    return signature.hashvalues.astype(np.uint64).tobytes()


def signature_from_bytes(data: bytes) -> MinHash:
    return MinHash(
        num_perm=NUM_PERM,
        seed=1,
        hashvalues=np.frombuffer(data, dtype=np.uint64),
        scheme=SCHEME,
        hashfunc=_crc32,
        permutations=_PERMUTATIONS,
    )


class NearDuplicateIndex:
    """Records whose estimated Jaccard similarity of word 5-shingles is at least ``threshold``."""

    def __init__(self, threshold: float = 0.7):
        self.lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)

    def add(self, key: str, signature: MinHash) -> None:
        if key not in self.lsh:
            self.lsh.insert(key, signature)

    def similar(self, signature: MinHash) -> list[str]:
        return self.lsh.query(signature)
