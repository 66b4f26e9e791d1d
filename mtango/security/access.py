"""The one place where a request's action is allowed or refused.

A route knows its action: ``read`` (every GET) or ``write`` (attribute writes, commands, property
changes, PV puts, pvws ``write``). ``Access.check`` decides, before the backend is asked anything:

- ``writes: off`` (the default): every write is refused, 403 ``WritesOff``, whoever asks;
- ``auth: none`` (the default): nobody logs in; with writes on anyone who reaches the bridge may
  write (the bridge says so loudly at start-up);
- ``auth: basic``: HTTP Basic (``Authorization: Basic``) or a token (``Authorization: Bearer``)
  from the users file. A write without credentials, or with wrong ones, is 401 with
  ``WWW-Authenticate: Basic realm=...``; a user whose roles do not allow the target is 403;
- reads are anonymous unless ``read_access: authenticated`` (then any known user may read).

Wrong credentials are a 401 on any request, read or write. Passwords are checked in a thread (an
argon2 check is ~50 ms of CPU), and a successful check is remembered for ``REMEMBER_S`` seconds,
keyed by a SHA-256 of user and password (never the password itself).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from dataclasses import dataclass
from typing import Any

from mtango.config import Config
from mtango.errors import ApiError, ErrorEntry, forbidden
from mtango.security import passwords
from mtango.security.users import Users, load_users, token_digest

READ, WRITE = "read", "write"
REMEMBER_S = 300.0  # a successful password check holds this long
_REMEMBERED_MAX = 10000


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: a user of the users file, or ``anonymous``."""

    user: str
    roles: tuple[str, ...] = ()
    method: str = "none"  # "none", "basic", "bearer"


ANONYMOUS = Principal("anonymous")


def basic_credentials(value: str) -> tuple[str, str] | None:
    """(user, password) of the value of an ``Authorization: Basic`` header; None if malformed."""
    try:
        name, sep, password = base64.b64decode(value.strip(), validate=True).decode(
            "utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (name, password) if sep else None


class Access:
    """The access rules of one worker (built from its Config; the users file read once)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.realm = config.auth_realm
        self.users: Users | None = load_users(config.users_file) if config.auth == "basic" else None
        # With auth: none a read has nothing to check (anonymous, credentials ignored).
        self.checks_reads = self.users is not None
        self._remembered: dict[str, float] = {}

    # -- who ---------------------------------------------------------------------------------------

    def _unauthorized(self, description: str) -> ApiError:
        return ApiError(ErrorEntry("Unauthorized", description, "ERR", "auth"), status=401,
                        headers={"WWW-Authenticate": f'Basic realm="{self.realm}", '
                                 'charset="UTF-8"'})

    async def identify(self, request: Any) -> Principal | None:
        """The principal of the request's credentials; None without any; 401 when wrong."""
        if self.users is None:
            return None
        header = request.headers.get("authorization")
        if not header:
            return None
        scheme, _, value = header.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            user = self.users.by_token.get(token_digest(value.strip()))
            if user is None:
                raise self._unauthorized("this token is not known to the bridge")
            return Principal(user.name, user.roles, "bearer")
        if scheme != "basic":
            raise self._unauthorized(f"authorization scheme {scheme!r} is not accepted "
                                     "(Basic or Bearer)")
        credentials = basic_credentials(value)
        if credentials is None:
            raise self._unauthorized("malformed Basic credentials")
        name, password = credentials
        user = self.users.users.get(name)
        if user is None or user.password is None or not await self._password_ok(
                name, user.password, password):
            raise self._unauthorized("wrong user name or password")
        return Principal(user.name, user.roles, "basic")

    async def _password_ok(self, name: str, hashed: str, password: str) -> bool:
        key = hashlib.sha256(f"{name}\0{password}\0{hashed}".encode()).hexdigest()
        now = time.monotonic()
        until = self._remembered.get(key)
        if until is not None and until > now:
            return True
        ok = await asyncio.get_running_loop().run_in_executor(
            None, passwords.verify, hashed, password)
        if ok:
            if len(self._remembered) >= _REMEMBERED_MAX:
                self._remembered.clear()
            self._remembered[key] = now + REMEMBER_S
        return ok

    # -- may they --------------------------------------------------------------------------------

    async def check(self, request: Any, action: str, system: str | None = None,
                    name: str | None = None) -> Principal:
        """The principal allowed to do ``action`` (on ``name`` of ``system``), or ApiError
        401/403. ``system`` is "tango" (``name``: ``device/member``) or "epics" (a PV name)."""
        principal = await self.identify(request)
        if action == READ:
            if principal is None and self.config.read_access == "authenticated":
                raise self._unauthorized("reading needs a user of this bridge (read_access: "
                                         "authenticated)")
            return principal or ANONYMOUS
        if self.config.writes != "on":
            raise forbidden("writes are off in this bridge (writes: off): nothing was written",
                            "WritesOff", "auth")
        if self.users is None:
            return ANONYMOUS  # auth: none, writes: on: anyone may write (said at start-up)
        if principal is None:
            raise self._unauthorized("writing needs a user of this bridge with the write role")
        user = self.users.users[principal.user]
        if system is not None and name is not None:
            allowed = self.users.may_write(user, system, name)
        else:
            allowed = self.users.may_write_somewhere(user)
        if not allowed:
            raise forbidden(f"user {principal.user} may not write {name or 'here'}",
                            "WriteDenied", "auth")
        return principal

    async def refusal(self, request: Any, system: str, name: str) -> ApiError | None:
        """Why the request's user may not write ``name`` of ``system`` (the 401 or 403 a write
        would get), or None when they may: ``check`` asked without writing anything."""
        try:
            await self.check(request, WRITE, system, name)
        except ApiError as exc:
            if exc.status == 401 and request.headers.get("authorization") and \
                    self.users is not None:
                raise  # wrong credentials: a 401 on any request
            return exc
        return None
