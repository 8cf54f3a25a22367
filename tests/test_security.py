"""The access policy, table by table: origins, hosts, tokens and roles, admitted pages.

Pure: no server, no socket. The handshake tests (test_server.py, test_bad_input.py) check
that the server applies this policy before the upgrade; these check the policy itself.
"""

from __future__ import annotations

import pytest

from conftest import TOKEN
from livestream.errors import ConfigError
from livestream.security import ROLES, Refusal, Security


def policy(**options: object) -> Security:
    return Security.create(token=TOKEN, **options)  # type: ignore[arg-type]


# (origin, Host header, extra allowed origins, allowed?)
ORIGINS = [
    (None, "127.0.0.1:8765", (), True),  # not a browser
    ("http://127.0.0.1:8888", "127.0.0.1:8765", (), True),  # a loopback page, any port
    ("http://localhost:8888", "127.0.0.1:8765", (), True),
    ("http://[::1]:8888", "127.0.0.1:8765", (), True),
    ("http://127.0.0.1", "127.0.0.1:8765", (), True),  # no port is 80, which `*` covers
    ("https://127.0.0.1:8888", "127.0.0.1:8765", (), False),  # another scheme
    ("http://127.0.0.1:8765.evil.example", "127.0.0.1:8765", (), False),  # no suffix match
    ("http://evil.example", "127.0.0.1:8765", (), False),
    ("http://localhost.evil.example:80", "127.0.0.1:8765", (), False),
    ("null", "127.0.0.1:8765", (), False),  # a sandboxed frame or a file: page
    ("http://dash.example.org", "dash.example.org", (), True),  # same origin as the Host
    ("https://dash.example.org", "dash.example.org:443", (), True),
    ("http://dash.example.org", "other.example.org", (), False),
    ("https://hub.example.org", "127.0.0.1:8765", ("https://hub.example.org",), True),
    ("https://hub.example.org:8443", "127.0.0.1:8765", ("https://hub.example.org",), False),
    ("https://hub.example.org:8443", "127.0.0.1:8765", ("https://hub.example.org:*",), True),
    ("https://sub.hub.example.org", "127.0.0.1:8765", ("https://hub.example.org",), False),
    ("HTTP://LOCALHOST:9", "127.0.0.1:8765", (), True),  # schemes and hosts are not cased
]


@pytest.mark.parametrize(("origin", "host", "extra", "allowed"), ORIGINS)
def test_origins_match_exactly(
    origin: str | None, host: str, extra: tuple[str, ...], allowed: bool
) -> None:
    sec = policy(allow_origins=extra)
    if allowed:
        sec.check_origin(origin, host)
        return
    with pytest.raises(Refusal) as refused:
        sec.check_origin(origin, host)
    assert refused.value.status == 403 and refused.value.code == "bad_origin"
    assert f"--allow-origin {origin}" in refused.value.message  # the flag that fixes it


# (bind address, Host header, extra allowed hosts, allowed?)
HOSTS = [
    ("127.0.0.1", "127.0.0.1:8765", (), True),
    ("127.0.0.1", "localhost:8765", (), True),
    ("127.0.0.1", "[::1]:8765", (), True),
    ("127.0.0.1", "127.9.8.7", (), True),  # all of 127/8 is loopback
    ("127.0.0.1", "evil.example:8765", (), False),  # DNS rebinding
    ("127.0.0.1", "localhost.evil.example", (), False),
    ("127.0.0.1", "127.0.0.1.evil.example", (), False),
    ("127.0.0.1", "", (), False),
    ("127.0.0.1", None, (), False),
    ("127.0.0.1", "dash.example.org", ("dash.example.org",), True),
    ("127.0.0.1", "DASH.example.org:443", ("dash.example.org",), True),
    ("0.0.0.0", "anything.example", (), True),  # bound to the network: no Host check
]


@pytest.mark.parametrize(("bind", "host", "extra", "allowed"), HOSTS)
def test_hosts_on_a_loopback_server(
    bind: str, host: str | None, extra: tuple[str, ...], allowed: bool
) -> None:
    sec = policy(bind_host=bind, allow_hosts=extra)
    if allowed:
        sec.check_host(host)
        return
    with pytest.raises(Refusal) as refused:
        sec.check_host(host)
    assert refused.value.code == "bad_host" and "--allow-host" in refused.value.message


@pytest.mark.parametrize(
    ("presented", "status", "code"),
    [
        (None, 401, "missing_token"),
        ("", 401, "missing_token"),
        ("wrong-token-0123456789", 403, "bad_token"),
        (TOKEN[:-1], 403, "bad_token"),  # a prefix is not the token
        (TOKEN + "x", 403, "bad_token"),
    ],
)
def test_bad_tokens_are_refused(presented: str | None, status: int, code: str) -> None:
    with pytest.raises(Refusal) as refused:
        policy().authenticate(presented)
    assert (refused.value.status, refused.value.code) == (status, code)
    assert TOKEN not in refused.value.message  # a refusal never echoes a secret


def test_tokens_grant_their_roles() -> None:
    sec = Security.create(tokens={"viewer-token-1": ["view"], "writer-token-1": ["publish"]})
    assert sec.authenticate("viewer-token-1") == ("view",)
    assert sec.authenticate("writer-token-1") == ("publish",)
    assert policy().authenticate(TOKEN) == ROLES


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"token": "short"}, "at least 8 characters"),
        ({"tokens": {"viewer-token-1": ["admin"]}}, "unknown role 'admin'"),
        ({"allow_origins": ["hub.example.org"]}, r"scheme://host\[:port\]"),
    ],
)
def test_bad_configuration_says_what_to_fix(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Security.create(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("origin", "admitted_host"),
    [("https://hub.example.org", "hub.example.org"), ("http://10.0.0.5:8888", "10.0.0.5")],
)
def test_admit_page_adds_exactly_that_origin_and_host(origin: str, admitted_host: str) -> None:
    sec = policy()
    assert sec.admit_page(origin) is True
    assert sec.admit_page(origin) is False  # once
    sec.check_origin(origin, "127.0.0.1:8765")
    sec.check_host(admitted_host)
    with pytest.raises(Refusal):
        sec.check_origin(origin + "9", "127.0.0.1:8765")  # another port is another origin
    with pytest.raises(Refusal):
        sec.check_host("evil." + admitted_host)


@pytest.mark.parametrize(
    "origin", ["null", "vscode-webview://abc", "https://*.example.org", "https://hub:*", "hub.org"]
)
def test_admit_page_refuses_what_is_not_a_page_origin(origin: str) -> None:
    with pytest.raises(ConfigError, match="cannot admit origin"):
        policy().admit_page(origin)


def test_a_refusal_is_a_livestream_error() -> None:
    from livestream.errors import LivestreamError

    with pytest.raises(LivestreamError):
        policy().authenticate(None)
