"""One exception tree for livestream.

::

    LivestreamError
    ├── ProtocolError          a message broke the wire protocol; carries a wire `code`
    │   ├── BadMessage         (code bad_message) not JSON, not an object, missing or wrong fields
    │   ├── UnknownStream      (code unknown_stream)
    │   ├── UnknownAction      (code unknown_action)
    │   ├── InvalidParam       (code invalid_param) unknown parameter or value out of range
    │   ├── SchemaMismatch     (code schema_mismatch) a batch whose columns or types differ
    │   ├── Forbidden          (code forbidden) the token lacks the role for the request
    │   ├── TooLarge           (code too_large)
    │   └── RateLimited        (code rate_limited)
    ├── Refusal                a request refused before the WebSocket upgrade (HTTP status)
    ├── ConnectionClosed       the client's connection is gone and will not come back
    ├── ServerError            the server refused or failed a request (client side)
    └── ConfigError            a bad argument to serve(), stream(), producer(), connect()

`ProtocolError` and its subclasses are the only errors whose text ever reaches a client;
their messages say what was expected, what arrived, and how to fix it. Anything else raised
inside the server is logged and answered with a generic ``internal`` error.
"""

from __future__ import annotations

__all__ = [
    "BadMessage",
    "ConfigError",
    "ConnectionClosed",
    "Forbidden",
    "InvalidParam",
    "LivestreamError",
    "ProtocolError",
    "RateLimited",
    "Refusal",
    "SchemaMismatch",
    "ServerError",
    "TooLarge",
    "UnknownAction",
    "UnknownStream",
]


class LivestreamError(Exception):
    """Base of every error livestream raises on purpose."""


class ProtocolError(LivestreamError):
    """A request that the protocol refuses; ``code`` is the wire error code."""

    code = "bad_message"

    def __init__(self, message: str, *, id: object = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.id = id
        if code is not None:
            self.code = code


class BadMessage(ProtocolError):
    """The message is not valid protocol: not JSON, not an object, bad or missing fields."""

    code = "bad_message"


class UnknownStream(ProtocolError):
    """The named stream does not exist."""

    code = "unknown_stream"


class UnknownAction(ProtocolError):
    """The control action is neither built in nor declared by the stream's producer."""

    code = "unknown_action"


class InvalidParam(ProtocolError):
    """A control parameter is unknown, of the wrong type, or out of range."""

    code = "invalid_param"


class SchemaMismatch(ProtocolError):
    """A batch's columns or dtypes do not match the stream's schema."""

    code = "schema_mismatch"


class Forbidden(ProtocolError):
    """The connection's token does not grant the role this request needs."""

    code = "forbidden"


class TooLarge(ProtocolError):
    """A message or batch is larger than the configured limit."""

    code = "too_large"


class RateLimited(ProtocolError):
    """The connection sends more than it is allowed to."""

    code = "rate_limited"


class Refusal(LivestreamError):
    """A request refused before the WebSocket upgrade: HTTP ``status``, ``code``, ``message``
    (``missing_token``, ``bad_token``, ``bad_origin``, ``bad_host``). Raised by
    :mod:`livestream.security`; the server answers it as JSON and never upgrades."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class ConnectionClosed(LivestreamError):
    """The connection to the server is closed and will not be reopened."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class ServerError(LivestreamError):
    """The server answered a request with an error (client side); ``code`` is the wire code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConfigError(LivestreamError, ValueError):
    """A bad argument given to livestream's Python API."""
