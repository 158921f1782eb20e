"""Keep secrets and machine paths out of what the pipeline prints, tags and writes.

A tracking URI may carry a password (``http://user:password@host``, ``postgresql://u:p@h/db``):
every message, tag and shared output shows it through :func:`redact` instead. Shared outputs
(``models/run.json``, run tags) name files relative to the project, not by absolute path.
"""

from __future__ import annotations

import re
from pathlib import Path

MASK = "***"
# scheme://user:password@ or scheme://token@ (the userinfo part of any URL in the text).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s'\"]+)@")


def redact(text: str) -> str:
    """``text`` with the password of every URL in it masked: ``user:***@``, or ``***@`` for a
    bare token (a userinfo without a colon may itself be the secret)."""

    def mask(match: re.Match[str]) -> str:
        user, colon, _ = match["userinfo"].partition(":")
        return f"{match['scheme']}{user + ':' + MASK if colon else MASK}@"

    return _USERINFO.sub(mask, text)


def redact_uri(uri: str) -> str:
    """``uri`` as :func:`redact` shows it, its query string masked too (it may hold a token)."""
    base, question, _ = redact(uri).partition("?")
    return f"{base}?{MASK}" if question else base


def relative_to_root(value: str, root: Path) -> str:
    """``value`` with the absolute path ``root`` (also as a ``file://`` URI) made relative.

    ``/home/me/project/stages/train.py`` -> ``stages/train.py``, the root itself -> ``.``.
    Anything else is returned unchanged.
    """
    root_text = str(root).rstrip("/")
    for prefix in (root.as_uri(), "file://" + root_text, root_text):
        if value == prefix:
            return "."
        if value.startswith(prefix + "/"):
            return value[len(prefix) + 1 :]
    return value
