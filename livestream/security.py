"""Tokens and roles, Origin and Host checks: who may connect, and what they may do.

* A token grants roles: ``view`` (subscribe, list), ``control`` (send controls),
  ``publish`` (append, create streams). Without configuration the server makes one random
  token granting all three. Tokens are compared in constant time.
* ``Origin`` must match an allow-list entry exactly (scheme, host and port; ``*`` stands for
  any port). The defaults are the loopback origins. No suffix or substring matching:
  ``http://127.0.0.1:8765.evil.example`` is not ``http://127.0.0.1:8765``. A request
  without ``Origin`` (not a browser) passes; a page served by this server (same origin)
  passes.
* When the server is bound to a loopback address, the ``Host`` header must name a loopback
  host, which defeats DNS rebinding.
* A notebook page that the defaults do not admit (JupyterHub, a remote or https Jupyter,
  reaching the kernel's server through jupyter-server-proxy) is admitted at run time by
  :meth:`Security.admit_page`: its exact origin, and its host for the ``Host`` check. Only
  the kernel calls it, for the origin a widget reports over its comm, which Jupyter has
  authenticated (whoever can send on that comm can already run code in the kernel).
  See docs/security.md.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .errors import ConfigError, Refusal

__all__ = [
    "DEFAULT_ORIGINS",
    "ROLES",
    "Refusal",
    "Security",
    "new_token",
]

ROLES = ("view", "control", "publish")
DEFAULT_ORIGINS = ("http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*")
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def new_token() -> str:
    """A fresh random token (32 bytes, URL-safe)."""
    return secrets.token_urlsafe(32)


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_origin(origin: str) -> tuple[str, str, str] | None:
    """(scheme, host, port) of an origin or allow-list entry; port may be ``*``."""
    try:
        scheme, rest = origin.split("://", 1)
    except ValueError:
        return None
    scheme = scheme.lower()
    if not rest or "/" in rest or "?" in rest or "#" in rest or "@" in rest:
        return None
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            return None
        host, tail = rest[: end + 1], rest[end + 1 :]
    else:
        host, _, port_part = rest.partition(":")
        tail = ":" + port_part if _ else ""
    if tail and not tail.startswith(":"):
        return None
    port = tail[1:] if tail else {"http": "80", "https": "443"}.get(scheme, "")
    if port != "*" and not port.isdigit():
        return None
    return scheme, host.lower(), port


def _split_host(header: str) -> str:
    """The host part of a ``Host`` header value (no port)."""
    if header.startswith("["):
        return header[: header.find("]") + 1] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


@dataclass
class Security:
    """The server's access policy. Build it from ``serve()``/CLI options."""

    tokens: dict[str, tuple[str, ...]] = field(default_factory=dict)
    allow_origins: tuple[str, ...] = DEFAULT_ORIGINS
    allow_hosts: tuple[str, ...] = ()
    loopback_only: bool = True

    @classmethod
    def create(
        cls,
        *,
        token: str | None = None,
        tokens: Mapping[str, Iterable[str]] | None = None,
        allow_origins: Iterable[str] = (),
        allow_hosts: Iterable[str] = (),
        bind_host: str = "127.0.0.1",
    ) -> Security:
        """A policy: ``token`` gets every role; ``tokens`` maps more tokens to their roles."""
        table: dict[str, tuple[str, ...]] = {}
        if token is not None:
            if len(token) < 8:
                raise ConfigError("a token must be at least 8 characters long")
            table[token] = ROLES
        for tok, roles in (tokens or {}).items():
            roles = tuple(roles)
            bad = [r for r in roles if r not in ROLES]
            if bad:
                raise ConfigError(f"unknown role {bad[0]!r}; roles are {', '.join(ROLES)}")
            if len(tok) < 8:
                raise ConfigError("a token must be at least 8 characters long")
            table[tok] = roles
        if not table:
            table[new_token()] = ROLES
        origins = list(DEFAULT_ORIGINS)
        for origin in allow_origins:
            origin = origin.strip().rstrip("/")
            if not origin:
                continue
            if _split_origin(origin) is None:
                raise ConfigError(
                    f"allowed origin {origin!r} is not of the form scheme://host[:port] "
                    "(port may be *), e.g. https://hub.example.org"
                )
            origins.append(origin)
        return cls(
            table, tuple(origins), tuple(h.lower() for h in allow_hosts), _is_loopback(bind_host)
        )

    @property
    def token(self) -> str:
        """A token with every role (the one printed in the server's URL)."""
        for tok, roles in self.tokens.items():
            if set(roles) == set(ROLES):
                return tok
        return next(iter(self.tokens))

    def authenticate(self, presented: str | None) -> tuple[str, ...]:
        """The roles ``presented`` grants; raises :class:`Refusal` (401/403) otherwise."""
        if not presented:
            raise Refusal(
                401,
                "missing_token",
                "this server needs a token: add ?token=<token> to the URL or send the header "
                "'Authorization: Bearer <token>' (the token is printed by `livestream serve`)",
            )
        granted: tuple[str, ...] | None = None
        given = presented.encode()
        for tok, roles in self.tokens.items():
            # Compare with every token so timing reveals nothing about which one matched.
            if hmac.compare_digest(tok.encode(), given):
                granted = roles
        if granted is None:
            raise Refusal(
                403,
                "bad_token",
                "the token was not accepted; check it against the one `livestream serve` "
                "printed, or the LIVESTREAM_TOKEN the server was started with",
            )
        return granted

    def check_origin(self, origin: str | None, host_header: str | None = None) -> None:
        """Raise :class:`Refusal` (403) unless ``origin`` is allowed."""
        if origin is None:
            return
        parsed = _split_origin(origin.strip())
        if parsed is not None and host_header:
            # Same origin: a page this server itself served.
            own = _split_origin(f"{parsed[0]}://{host_header.lower()}")
            if own is not None and own == parsed and parsed[0] in ("http", "https"):
                return
        if parsed is not None:
            for entry in self.allow_origins:
                allowed = _split_origin(entry)
                if allowed is None:
                    continue
                if allowed[:2] == parsed[:2] and allowed[2] in ("*", parsed[2]):
                    return
        raise Refusal(
            403,
            "bad_origin",
            f"origin {origin!r} is not allowed; allowed origins are "
            f"{', '.join(self.allow_origins)}. Pass --allow-origin {origin} (or set "
            "LIVESTREAM_ALLOW_ORIGIN) to allow it.",
        )

    def admit_page(self, origin: str) -> bool:
        """Admit the page at ``origin`` (``scheme://host[:port]``, exactly as the browser's
        ``location.origin`` says it): its origin joins the allow-list and, on a loopback-bound
        server, its host the hosts the ``Host`` check accepts. The token still guards every
        request. Returns whether anything changed (``False``: admitted already).

        For the kernel's own server, on behalf of a widget whose comm reported its page's
        origin: requests through jupyter-server-proxy arrive with that page's ``Origin`` and
        ``Host``. Nothing else is loosened: other origins and hosts are refused as before.

        Raises:
            ConfigError: ``origin`` is not an http(s) origin with a host (``null``, a
                ``vscode-webview://`` page, a pattern with ``*``, a URL with a path).
        """
        text = origin.strip().rstrip("/").lower()
        parsed = _split_origin(text)
        if (
            parsed is None
            or parsed[0] not in ("http", "https")
            or parsed[2] == "*"
            or not parsed[1]
            or "*" in parsed[1]
        ):
            raise ConfigError(
                f"cannot admit origin {origin!r}: expected a page origin such as "
                "https://hub.example.org or http://10.0.0.5:8888"
            )
        changed = False
        try:
            self.check_origin(text)
        except Refusal:
            self.allow_origins = (*self.allow_origins, text)
            changed = True
        host = parsed[1]
        if self.loopback_only and not _is_loopback(host) and host not in self.allow_hosts:
            self.allow_hosts = (*self.allow_hosts, host)
            changed = True
        return changed

    def check_host(self, host_header: str | None) -> None:
        """Raise :class:`Refusal` (403) for a non-loopback ``Host`` on a loopback server."""
        if not self.loopback_only:
            return
        host = _split_host((host_header or "").strip().lower())
        if _is_loopback(host) or host in self.allow_hosts:
            return
        raise Refusal(
            403,
            "bad_host",
            f"host {host_header!r} is not allowed for a server bound to loopback (this guards "
            "against DNS rebinding); connect to 127.0.0.1 or localhost, or pass --allow-host "
            f"{host or 'NAME'}",
        )
