"""Keep secrets and machine paths out of what the pipeline prints, tags and writes.

A tracking URI, a DVC remote or a Kubeflow host may carry a password
(``http://user:password@host``, ``postgresql://u:p@h/db``) or a token in its query string
(``?token=...``): every message, tag and shared output shows it through :func:`redact` instead.
A secret the pipeline knows of (one it took out of such a URI) is registered with
:func:`add_secret`, so it is masked wherever it turns up, also where no URL surrounds it.
Shared outputs (``models/run.json``, run tags) name files relative to the project, not by
absolute path.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

MASK = "***"
# Shorter registered secrets are not masked as plain text (they would garble every message
# they happen to occur in); inside a URL they are masked all the same.
MIN_SECRET_LENGTH = 4

# Characters that end a host name, or a URL, in running text.
_HOST_END = r"""(?:[:/?#\s'"`)\]},;<>]|$)"""
_HOST = rf"(?:\[[0-9A-Fa-f:.]+\]|[\w.~%-]+){_HOST_END}"
# scheme://user:password@host or scheme://token@host. The password runs to the last ``@`` that a
# host name follows in the same word, so a raw ``@``, ``/`` or ``'`` in it is masked too; failing
# that, to the first such ``@`` on the line, for a raw space (never into the next URL).
# ``host:5000/`` is a port, not a password.
_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)"
    r"(?:"
    r"""(?P<user>[^\s:/?#@'"]*):(?!\d{1,5}(?:[/?#\s'"]|$))(?!\s)"""
    rf"(?:(?:(?!://)\S)*@(?={_HOST})|(?:(?!://)[^\n])*?@(?={_HOST}))"
    rf"|(?P<token>[^\s:/?#@'\"]+)@(?={_HOST})"
    r")"
)
# ?token=..., &password=..., ;access_key=...: query parameters whose name says secret.
_QUERY_SECRET = re.compile(
    r"(?i)(?P<key>[?&;][\w.-]*"
    r"(?:token|secret|passw(?:or)?d|pwd|key|sig(?:nature)?|credential|auth)[\w.-]*=)"
    r"""[^&#\s'"]+"""
)

_secrets: set[str] = set()


def add_secret(value: str | None) -> None:
    """Mask ``value`` (also percent-encoded, or decoded) in everything :func:`redact` sees from
    now on, in this process."""
    if not value:
        return
    forms = {
        value,
        urllib.parse.unquote(value),
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote(value),
        urllib.parse.quote_plus(value),
    }
    _secrets.update(form for form in forms if len(form) >= MIN_SECRET_LENGTH)


def redact(text: str) -> str:
    """``text`` with its secrets masked: every registered secret, the password of every URL in it
    (``user:***@``, or ``***@`` for a bare token: a userinfo without a colon may itself be the
    secret) and the value of secret-named query parameters (``?token=***``)."""
    # Longest first, so a secret that contains another is masked whole.
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)

    def mask(match: re.Match[str]) -> str:
        if match["token"] is not None:
            return f"{match['scheme']}{MASK}@"
        return f"{match['scheme']}{match['user']}:{MASK}@"

    text = _USERINFO.sub(mask, text)
    return _QUERY_SECRET.sub(lambda match: f"{match['key']}{MASK}", text)


def redact_uri(uri: str) -> str:
    """``uri`` as :func:`redact` shows it, its query string masked too (it may hold a token)."""
    base, question, _ = redact(uri).partition("?")
    return f"{base}?{MASK}" if question else base


def split_userinfo(uri: str) -> tuple[str, str | None, str | None]:
    """``(uri without its user:password@, user, password)``, both percent-decoded; ``None`` for
    what the URI does not carry.

    The userinfo ends at the authority's last ``@``, as in every URL parser, but a password may
    hold characters that should have been percent-encoded (``/``, ``?``, ``#``, a space), so
    this looks for that ``@`` up to the first ``/`` after it rather than the first ``/`` at all.
    """
    scheme, sep, _ = uri.partition("://")
    if not sep:
        return uri, None, None
    match = _USERINFO.match(uri)
    if match is None or (match["user"] is None and match["token"] is None):
        return uri, None, None
    userinfo = uri[len(scheme) + 3 : match.end() - 1]  # the match ends with the "@"
    bare = scheme + "://" + uri[match.end() :]
    user, colon, password = userinfo.partition(":")
    return (
        bare,
        urllib.parse.unquote(user),
        urllib.parse.unquote(password) if colon else None,
    )


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
