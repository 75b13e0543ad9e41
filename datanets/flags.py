"""Flags for moderators: likely personal data and secrets in a record's text, and near-duplicates.

No Django. Each flag is {"kind", "start", "end"}: a character span of the record's text, so the
moderation page can highlight it.
"""

from __future__ import annotations

import re
import zlib
from hashlib import blake2b
from itertools import chain

import numpy as np
from datasketch import MinHash
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
# LSH banding for a Jaccard threshold of 0.7 with 64 permutations: the (bands, rows) that
# datasketch's MinHashLSH picks for these settings (a test checks they still agree).
THRESHOLD = 0.7
BANDS, ROWS = 8, 8
_WORD = re.compile(r"\w+")


# Computed once: building a MinHash's permutations costs more than hashing a whole record.
_PERMUTATIONS = MinHash(num_perm=NUM_PERM, seed=1, scheme=SCHEME).permutations
_CELLS = 1 << 16  # shingles permuted at once: 16 MiB of uint32 values
_A = _PERMUTATIONS[0].astype(np.uint32)
_B = _PERMUTATIONS[1].astype(np.uint32)

# For ASCII text (most records), bytes.translate finds the same words as the \w+ regex, several times faster.
_ASCII_WORD = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
_NON_WORD_TO_SPACE = bytes(c if c in _ASCII_WORD else 32 for c in range(256))


def words(text: str) -> list:
    """The record's lowercased words (\\w+), as bytes for ASCII text and str otherwise."""
    lowered = text.lower()
    if lowered.isascii():
        return lowered.encode().translate(_NON_WORD_TO_SPACE).split()
    return _WORD.findall(lowered)


def shingle_hashes(text: str) -> list[int]:
    """CRC-32 of the UTF-8 bytes of each word 5-shingle (words joined by one space), duplicates kept."""
    found = words(text)
    if found and isinstance(found[0], str):
        found = [word.encode() for word in found]
    crc = zlib.crc32
    if len(found) <= SHINGLE:
        return [crc(b" ".join(found))]
    joined = memoryview(b" ".join(found))
    starts = [0]
    for word in found:
        starts.append(starts[-1] + len(word) + 1)
    return [crc(joined[starts[i] : starts[i + SHINGLE] - 1]) for i in range(len(found) - SHINGLE + 1)]


def _fmix32(hv: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer: datasketch's affine32 scheme pre-mixes every input hash with it."""
    hv = hv ^ (hv >> np.uint32(16))
    hv = hv * np.uint32(0x85EBCA6B)
    hv = hv ^ (hv >> np.uint32(13))
    hv = hv * np.uint32(0xC2B2AE35)
    return hv ^ (hv >> np.uint32(16))


def signatures(texts: list[str]) -> np.ndarray:
    """MinHash signatures of many texts at once, shape (len(texts), NUM_PERM), uint32.

    Row i equals datasketch's ``MinHash(num_perm=64, seed=1, scheme="affine32", hashfunc=zlib.crc32)``
    updated with the text's shingles: the same hash and permutations, but one vectorised permutation
    for a group of records instead of a MinHash object per record.
    """
    out = np.empty((len(texts), NUM_PERM), dtype=np.uint32)
    per_text = [shingle_hashes(text) for text in texts]
    counts = np.fromiter(map(len, per_text), dtype=np.int64, count=len(per_text))
    order = np.argsort(counts, kind="stable")
    start = 0
    while start < len(order):
        # Records of similar length together, padded to the longest: at most _CELLS shingles at a time.
        end = start + 1
        while end < len(order) and (end - start + 1) * int(counts[order[end]]) <= _CELLS:
            end += 1
        group = order[start:end]
        width = int(counts[group[-1]])
        sizes = counts[group]
        flat = np.fromiter(chain.from_iterable(per_text[i] for i in group), dtype=np.uint32, count=int(sizes.sum()))
        offsets = np.zeros(len(group), dtype=np.int64)
        np.cumsum(sizes[:-1], out=offsets[1:])
        column = np.arange(width)
        # Past a record's last shingle, repeat its first: a repeated shingle leaves the minimum unchanged.
        padded = flat[offsets[:, None] + np.where(column < sizes[:, None], column, 0)]
        permuted = _fmix32(padded)[:, :, None] * _A + _B  # uint32 arithmetic wraps: that is the mod 2^32
        out[group] = permuted.min(axis=1)
        start = end
    return out


def band_keys(signatures: np.ndarray) -> list[list[int]]:
    """LSH band keys: per signature, one signed 64-bit key per band of ROWS values.

    Two records are near-duplicate candidates when any band matches exactly, as in datasketch's
    MinHashLSH. A key is BLAKE2b-64 of the band's number and values, so it fits an indexed
    database column; a false match between different bands is a 2^-64 chance.
    """
    width = ROWS * 4
    keys = []
    for row in np.ascontiguousarray(signatures, dtype="<u4"):
        data = row.tobytes()
        keys.append([
            int.from_bytes(blake2b(bytes((band,)) + data[band * width : (band + 1) * width], digest_size=8).digest(),
                           "little", signed=True)
            for band in range(BANDS)
        ])  # fmt: skip
    return keys


def signature_bytes(signature: np.ndarray) -> bytes:
    """How a signature is stored on a record: its 64 values as little-endian uint64."""
    return signature.astype("<u8").tobytes()


def signature_from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<u8").astype(np.uint32)
