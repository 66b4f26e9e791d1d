"""The users file (``users_file``): who exists, their password hashes, tokens and roles.

::

    users:
      alice: {password: "$argon2id$v=19$...", roles: [write]}
      bob:   {password: "$argon2id$v=19$...", roles: [read]}
      robot: {tokens: ["<sha256 of the token, hex>"], roles: [operator]}
    roles:                       # optional: roles that may write where their rules allow
      operator:
        tango_allow: ["sys/tg_test/1/.*"]   # regular expressions, whole "device/member" name
        tango_deny: []
        pv_allow: ["demo:w:.*"]             # regular expressions, whole PV name
        pv_deny: []

Built-in roles: ``read`` (may read when reads need a login) and ``write`` (may write anything the
bridge serves). A role of ``roles:`` may write where its rules allow (deny wins, as in
``epics_allow``/``epics_deny``); any role lets its user read. Passwords are argon2 hashes only
(``python main.py hash-password``); tokens (for ``Authorization: Bearer``) are kept as the SHA-256
of the token: they are long random strings, for which a fast hash is enough.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtango.epics.names import NameRules
from mtango.security.passwords import is_hash

READ, WRITE = "read", "write"
BUILT_IN = (READ, WRITE)


class UsersFileError(ValueError):
    """The users file cannot be used (the bridge does not start)."""


@dataclass(frozen=True)
class User:
    name: str
    password: str | None  # argon2 hash
    roles: tuple[str, ...]
    tokens: frozenset[str] = frozenset()  # SHA-256 hex digests


@dataclass
class Role:
    name: str
    tango: NameRules | None = None  # None: everything
    pv: NameRules | None = None


@dataclass
class Users:
    users: dict[str, User] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=dict)
    by_token: dict[str, User] = field(default_factory=dict)

    def may_write(self, user: User, system: str, name: str) -> bool:
        """Whether one of ``user``'s roles lets it write ``name`` (``device/member`` for Tango,
        the PV name for EPICS)."""
        for role_name in user.roles:
            if role_name == WRITE:
                return True
            role = self.roles.get(role_name)
            if role is None:
                continue
            rules = role.tango if system == "tango" else role.pv
            if rules is not None and rules.allowed(name):
                return True
        return False

    def may_write_somewhere(self, user: User) -> bool:
        return any(r == WRITE or r in self.roles for r in user.roles)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _strings(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsersFileError(f"{what} must be a list of strings")
    return value


def _rules(spec: dict[str, Any], prefix: str, role: str) -> NameRules | None:
    allow = _strings(spec.get(f"{prefix}_allow"), f"roles.{role}.{prefix}_allow")
    deny = _strings(spec.get(f"{prefix}_deny"), f"roles.{role}.{prefix}_deny")
    if not allow:
        return None if not deny else NameRules([], deny)
    try:
        return NameRules(allow, deny)
    except re.error as exc:
        raise UsersFileError(f"roles.{role}: bad regular expression: {exc}") from exc


def parse_users(data: Any) -> Users:
    if not isinstance(data, dict) or not isinstance(data.get("users"), dict):
        raise UsersFileError("the users file needs a 'users:' mapping of user names")
    found = Users()
    for name, spec in (data.get("roles") or {}).items():
        if name in BUILT_IN:
            raise UsersFileError(f"role {name!r} is built in; give your role another name")
        if not isinstance(spec, dict):
            raise UsersFileError(f"roles.{name} must be a mapping")
        unknown = set(spec) - {"tango_allow", "tango_deny", "pv_allow", "pv_deny"}
        if unknown:
            raise UsersFileError(f"roles.{name}: unknown keys {sorted(unknown)}")
        tango = _rules(spec, "tango", name)
        pv = _rules(spec, "pv", name)
        found.roles[str(name)] = Role(str(name), tango, pv)
    for name, spec in data["users"].items():
        if not isinstance(spec, dict):
            raise UsersFileError(f"users.{name} must be a mapping")
        unknown = set(spec) - {"password", "roles", "tokens"}
        if unknown:
            raise UsersFileError(f"users.{name}: unknown keys {sorted(unknown)}")
        password = spec.get("password")
        if password is not None and (not isinstance(password, str) or not is_hash(password)):
            raise UsersFileError(f"users.{name}.password must be an argon2 hash (python main.py "
                                 "hash-password), never the password itself")
        roles = tuple(_strings(spec.get("roles"), f"users.{name}.roles"))
        for role in roles:
            if role not in BUILT_IN and role not in found.roles:
                raise UsersFileError(f"users.{name}: unknown role {role!r}")
        tokens = _strings(spec.get("tokens"), f"users.{name}.tokens")
        if any(not re.fullmatch(r"[0-9a-f]{64}", t) for t in tokens):
            raise UsersFileError(f"users.{name}.tokens must be SHA-256 digests (64 hex digits) "
                                 "of the tokens, never the tokens themselves")
        user = User(str(name), password, roles, frozenset(tokens))
        found.users[user.name] = user
        for digest in tokens:
            if digest in found.by_token:
                raise UsersFileError(f"a token is given to both {found.by_token[digest].name} "
                                     f"and {user.name}")
            found.by_token[digest] = user
    return found


def load_users(path: str) -> Users:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsersFileError(f"cannot read the users file {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsersFileError(f"the users file {path} is not YAML: {exc}") from exc
    return parse_users(data)
