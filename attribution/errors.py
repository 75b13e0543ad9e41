"""What the offline checks share: the error that carries a verifier exit code, and safe archive member names."""

from __future__ import annotations

from pathlib import PurePosixPath


class VerificationError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def safe_name(name: str) -> bool:
    """Whether an archive member's name stays inside the folder it is unpacked into."""
    if not name or name.startswith("/") or "\\" in name:
        return False
    parts = PurePosixPath(name).parts
    return ".." not in parts and not (parts and ":" in parts[0])
