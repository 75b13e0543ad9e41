"""Flags for moderators: likely personal data and secrets in a record's text, and near-duplicates.

No Django. Each flag is {"kind", "start", "end"}: a character span of the record's text, so the
moderation page can highlight it.
"""

from __future__ import annotations

import re

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
SECRET_HINTS = (
    "akia",
    "sk-",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "xox",
    "private key",
    "api",
    "secret",
    "token",
    "password",
)


# A secret-like word, an '@' or 9 digits: one pass of RE2 over many texts finds what deserves a scan.
_WORTH_A_SCAN = "(?i)" + "|".join(re.escape(hint) for hint in SECRET_HINTS) + "|@|[0-9](?:[^0-9]*[0-9]){8}"


def personal_data_flags_many(texts: list[str]) -> list[list[dict]]:
    """``personal_data_flags`` of each text. The cheap tests run on all the texts at once (pyarrow's
    RE2, in C), so only the few texts that have a secret-like word, an '@' or 9 digits are scanned."""
    import pyarrow as pa
    import pyarrow.compute as pc

    maybe = pc.match_substring_regex(pa.array(texts, pa.string()), _WORTH_A_SCAN)
    return [personal_data_flags(text) if scan else [] for text, scan in zip(texts, maybe.to_pylist(), strict=True)]


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
_A = _PERMUTATIONS[0].astype(np.uint32)
_B = _PERMUTATIONS[1].astype(np.uint32)
_TEXT_BYTES = 1 << 18  # word bytes hashed in one numpy pass: about 40,000 shingles, 10 MiB once permuted

# For ASCII text (most records), bytes.translate finds the same words as the \w+ regex, several times faster.
_ASCII_WORD = b"abcdefghijklmnopqrstuvwxyz0123456789_"
_NON_WORD_TO_SPACE = bytes(c if c in _ASCII_WORD else 32 for c in range(256))

# The shingle hash (documented in README.md): arithmetic modulo 2^64.
_MASK = (1 << 64) - 1
_P = 0x100000001B3  # odd, so it has an inverse modulo 2^64
_P_INVERSE = pow(_P, -1, 1 << 64)
_M = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD)
_KEY = 0x94D049BB133111EB


def word_bytes(text: str) -> bytes:
    """The record's lowercased \\w+ words as UTF-8, separated by spaces (perhaps several)."""
    lowered = text.lower()
    if lowered.isascii():
        return lowered.encode().translate(_NON_WORD_TO_SPACE)
    return " ".join(_WORD.findall(lowered)).encode()


def _fmix64_int(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK
    return h ^ (h >> 33)


def shingle_hash(words: tuple[bytes, ...]) -> int:
    """The 32-bit hash of a shingle (up to 5 consecutive words), one at a time: the definition that
    ``signatures`` computes for a whole batch with numpy (a test checks both agree, through datasketch).

    Each word w (bytes b_0..b_n-1) hashes to fmix64(sum b_j * P^j xor n); a shingle of words w_0..w_k
    to the top 32 bits of fmix64(sum hash(w_i) * M_i), all modulo 2^64 (MurmurHash3's 64-bit finaliser).
    """
    total = 0
    for i, word in enumerate(words):
        value = sum(byte * pow(_P, j, 1 << 64) for j, byte in enumerate(word)) & _MASK
        total += _fmix64_int(value ^ len(word)) * _M[i]
    return _fmix64_int(total & _MASK) >> 32


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def _fmix32(hv: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer: datasketch's affine32 scheme pre-mixes every input hash with it."""
    hv = hv ^ (hv >> np.uint32(16))
    hv = hv * np.uint32(0x85EBCA6B)
    hv = hv ^ (hv >> np.uint32(13))
    hv = hv * np.uint32(0xC2B2AE35)
    return hv ^ (hv >> np.uint32(16))


def _powers(base: int, n: int) -> np.ndarray:
    """base^0 .. base^(n-1) modulo 2^64 (read-only: from a table computed once for a usual group)."""
    if n <= len(_POWERS.get(base, ())):
        return _POWERS[base][:n]
    powers = np.full(n, base, dtype=np.uint64)
    powers[0] = 1
    return np.multiply.accumulate(powers, out=powers)  # uint64 wraps: modulo 2^64


_POWERS: dict[int, np.ndarray] = {}
for _base in (_P, _P_INVERSE):  # a group's bytes and its separating spaces; only a huge record takes more
    _POWERS[_base] = _powers(_base, _TEXT_BYTES + 1)
    _POWERS[_base].flags.writeable = False


def _group_signatures(texts: list[bytes]) -> np.ndarray:
    """Signatures of a few records' word bytes in one pass: every word hashed at once by prefix sums
    (sum b_j * P^j over the whole buffer, then divided by P^start), then every shingle, then every
    permutation, then each record's minimum."""
    n = len(texts)
    buffer = np.frombuffer(b" ".join(texts) + b" ", dtype=np.uint8)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=n)[:-1] + 1, out=starts[1:])
    edges = np.diff((buffer != 32).view(np.int8), prepend=np.int8(0))
    first, last = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # each word is buffer[first:last]
    prefix = np.zeros(len(buffer) + 1, dtype=np.uint64)
    np.cumsum(buffer * _powers(_P, len(buffer)), out=prefix[1:])
    words = _fmix64(
        (prefix[last] - prefix[first]) * _powers(_P_INVERSE, len(buffer))[first] ^ (last - first).astype(np.uint64)
    )
    owner = np.searchsorted(starts, first, side="right") - 1  # the record of each word
    counts = np.bincount(owner, minlength=n)
    count = len(words)
    # Shingles of SHINGLE words that stay within one record...
    span = max(count - SHINGLE + 1, 0)
    long = np.zeros(span, dtype=np.uint64)
    for i in range(SHINGLE):
        long += words[i : i + span] * np.uint64(_M[i])
    inside = owner[:span] == owner[SHINGLE - 1 : SHINGLE - 1 + span]
    # ...and one shingle of all its words for a record of fewer (none: the hash of no words, 0).
    few = np.flatnonzero(counts < SHINGLE)
    begin = np.cumsum(counts) - counts
    short = np.zeros(len(few), dtype=np.uint64)
    for i in range(SHINGLE - 1):
        has = counts[few] > i
        short[has] += words[begin[few[has]] + i] * np.uint64(_M[i])
    hashes, record = long[inside], owner[:span][inside]  # in record order
    if len(few):
        order = np.argsort(np.concatenate([record, few]), kind="stable")
        hashes, record = np.concatenate([hashes, short])[order], np.concatenate([record, few])[order]
    values = (_fmix64(hashes) >> np.uint64(32)).astype(np.uint32)
    permuted = _fmix32(values)[None, :] * _A[:, None]  # one row per permutation: contiguous minima below
    permuted += _B[:, None]  # uint32 arithmetic wraps: that is the mod 2^32
    return np.minimum.reduceat(permuted, np.searchsorted(record, np.arange(n)), axis=1).T


def signatures(texts: list[str]) -> np.ndarray:
    """MinHash signatures of many texts at once, shape (len(texts), NUM_PERM), uint32.

    Row i equals datasketch's ``MinHash(num_perm=64, seed=1, scheme="affine32", hashfunc=shingle_hash)``
    updated with the text's word 5-shingles (a text of fewer words is one shingle): the same
    permutations, computed for a group of records at once instead of a MinHash object per record.
    """
    out = np.empty((len(texts), NUM_PERM), dtype=np.uint32)
    data = [word_bytes(text) for text in texts]
    start = size = 0
    for end, item in enumerate(data):
        if size and size + len(item) > _TEXT_BYTES:
            out[start:end] = _group_signatures(data[start:end])
            start, size = end, 0
        size += len(item) + 1
    if start < len(data):
        out[start:] = _group_signatures(data[start:])
    return out


def band_keys(signatures: np.ndarray) -> np.ndarray:
    """LSH band keys, shape (len(signatures), BANDS), int64: one key per band of ROWS values.

    Two records are near-duplicate candidates when any band matches exactly, as in datasketch's
    MinHashLSH. A key mixes the band's number and values with MurmurHash3's 64-bit finaliser, so it
    fits an indexed database column; a false match is about a 2^-64 chance.
    """
    values = np.asarray(signatures, dtype=np.uint64).reshape(len(signatures), BANDS, ROWS)
    keys = np.broadcast_to(np.arange(1, BANDS + 1, dtype=np.uint64), values.shape[:2])
    for row in range(ROWS):
        keys = _fmix64((keys ^ values[:, :, row]) * np.uint64(_KEY))
    return keys.view(np.int64)
