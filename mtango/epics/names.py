"""PV names: what a URL may name, and which names this bridge serves.

A CA name is printable ASCII without spaces (record, optional ``.FIELD``, optional ``$`` for long
strings, optional ``[...]`` array filters or ``{...}`` JSON channel filters). The one character a
name never holds is ``/``, which would be a path separator in our URLs. The allow/deny rules are a
``.pvlist``-like list of regular expressions matched against the whole name; deny wins, as in the
CA gateway's default ``EVALUATION ORDER ALLOW, DENY``. Names from a URL arrive decoded: a URL
that is not valid percent-encoding (``pvs/%zz``) never gets here (``mtango.api.common``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from mtango.errors import bad_request

MAX_NAME_LENGTH = 255
_NAME = re.compile(rf"^[\x21-\x2e\x30-\x7e]{{1,{MAX_NAME_LENGTH}}}$")


def check_pv_name(name: str) -> str:
    """``name`` if it can be a CA name; otherwise a 400 ``BadName`` (nothing is sent upstream)."""
    if not _NAME.match(name):
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise bad_request(
            f"{shown!r} is not a valid PV name (printable ASCII without spaces or '/', at most "
            f"{MAX_NAME_LENGTH} characters)",
            "BadName",
        )
    return name


def is_long_string(name: str) -> bool:
    """``NAME.VAL$``: the IOC sends a string field as a char array, which we decode to text."""
    return name.endswith("$")


class NameRules:
    """Allow/deny regular expressions, with the decision per name remembered (bounded)."""

    def __init__(self, allow: Iterable[str], deny: Iterable[str], memory: int = 65536) -> None:
        self._allow = [re.compile(p) for p in allow]
        self._deny = [re.compile(p) for p in deny]
        self._decided: dict[str, bool] = {}
        self._memory = memory

    def allowed(self, name: str) -> bool:
        decision = self._decided.get(name)
        if decision is None:
            decision = any(p.fullmatch(name) for p in self._allow) and not any(
                p.fullmatch(name) for p in self._deny
            )
            if len(self._decided) >= self._memory:
                self._decided.clear()
            self._decided[name] = decision
        return decision
