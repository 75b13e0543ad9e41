"""Merkle trees over record hashes (SHA-256). No Django.

Leaves: the records' content hashes (lowercase hex SHA-256 of their canonical JSON), sorted
ascending as hex strings, each taken as its 32 raw bytes. Leaf node = SHA-256(0x00 || leaf bytes);
inner node = SHA-256(0x01 || left || right); a level with an odd count carries its last node up
unchanged. The root is lowercase hex. The root of no records is SHA-256 of the empty string.

To recompute a version's root from its JSONL export: for each line, take the ``content`` object,
serialise it as JSON with sorted keys, separators "," and ":" and UTF-8 (no ASCII escaping),
SHA-256 it, sort the hex digests, and fold them with the rule above (``merkle_root``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

EMPTY_ROOT = hashlib.sha256(b"").hexdigest()


def _leaf(hex_hash: str) -> bytes:
    return hashlib.sha256(b"\x00" + bytes.fromhex(hex_hash)).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(hashes: Iterable[str]) -> str:
    level = [_leaf(h) for h in sorted(hashes)]
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        nxt = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()


class MerkleBuilder:
    """``merkle_root`` of hashes fed one at a time in ascending order, holding one pending node per tree level
    (about log2 n of them) instead of every leaf: a root over a stream of database rows."""

    def __init__(self) -> None:
        self.pending: list[bytes | None] = []  # pending[level]: a node waiting for its right sibling
        self.last: str | None = None
        self.count = 0

    def add(self, hex_hash: str) -> None:
        if self.last is not None and hex_hash < self.last:
            raise ValueError("Merkle leaves must come in ascending order")
        self.last, self.count = hex_hash, self.count + 1
        node, level = _leaf(hex_hash), 0
        while True:
            if level == len(self.pending):
                self.pending.append(None)
            if self.pending[level] is None:
                self.pending[level] = node
                return
            node, self.pending[level] = _node(self.pending[level], node), None
            level += 1

    def root(self) -> str:
        """Each level's unpaired last node pairs with what was carried up from below, or is carried up itself."""
        carried: bytes | None = None
        for node in self.pending:
            if node is not None:
                carried = node if carried is None else _node(node, carried)
        return carried.hex() if carried is not None else EMPTY_ROOT


def inclusion_proof(hashes: Iterable[str], target: str) -> list[tuple[str, str]]:
    """The sibling path from ``target``'s leaf to the root: [(side, sibling hex)], side "L" or "R"."""
    ordered = sorted(hashes)
    index = ordered.index(target)
    level = [_leaf(h) for h in ordered]
    proof = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(("L" if sibling < index else "R", level[sibling].hex()))
        nxt = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level, index = nxt, index // 2
    return proof


def inclusion_proofs(hashes: Iterable[str], targets: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
    """``inclusion_proof`` for many targets at once: the tree is built once, not once per target."""
    ordered = sorted(hashes)
    position = {h: i for i, h in enumerate(ordered)}
    index = {target: position[target] for target in targets}
    proofs: dict[str, list[tuple[str, str]]] = {target: [] for target in index}
    level = [_leaf(h) for h in ordered]
    while len(level) > 1:
        for target, i in index.items():
            sibling = i ^ 1
            if sibling < len(level):
                proofs[target].append(("L" if sibling < i else "R", level[sibling].hex()))
            index[target] = i // 2
        nxt = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return proofs


def verify_inclusion(target: str, proof: list[tuple[str, str]], root: str) -> bool:
    node = _leaf(target)
    for side, sibling in proof:
        node = _node(bytes.fromhex(sibling), node) if side == "L" else _node(node, bytes.fromhex(sibling))
    return node.hex() == root
