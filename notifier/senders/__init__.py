"""Email and SMS senders; this module holds what they share (file names from dedupe keys, private writes).

The senders live in `notifier.senders.email` and `notifier.senders.sms`; this package imports neither, so
they can import these helpers without a cycle.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path

__all__ = ["safe_key", "write_private"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_MAX_KEY = 100


def safe_key(key: str) -> str:
    """Turn a dedupe key into a file-name and Message-ID safe token, the same one every time."""
    cleaned = re.sub(r"\.{2,}", ".", _UNSAFE.sub("_", key)).strip(".")
    if cleaned == key and 0 < len(cleaned) <= _MAX_KEY:
        return cleaned
    # Two keys that clean to the same text (or are cut to the same prefix) must not share a file name.
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    stem = cleaned[:_MAX_KEY].rstrip(".")
    return f"{stem}-{digest}" if stem else digest


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temporary file, fsync, rename), readable only by this user."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique temporary name: two workers re-sending the same key must not write into one temporary file.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            # The caller marks the message sent after this returns: the bytes must survive a crash.
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
