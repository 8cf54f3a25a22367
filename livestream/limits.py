"""Every bound the server puts on what one connection or one request may cost.

One frozen :class:`Limits` holds them all, so the server, the hub and the docs
(docs/security.md, "Limits") name each one once. ``Server(limits=Limits(...))`` sets
them; the command line has a flag for each (``livestream serve --help``).

What each guards, and what tripping it does:

=====================  ============  ==================================================
limit                  default       tripped
=====================  ============  ==================================================
max_message_size       16 MiB        a WebSocket message: close 1009; an HTTP body: 413
max_json_size          2 MiB         a JSON text frame, a binary frame's JSON header, or
                                     a JSON HTTP body: ``too_large`` (the connection
                                     stays open); parsing JSON holds the interpreter, so
                                     this bounds how long one request can hold the loop
max_columns            1,000         columns of one stream (a publish adding more):
                                     ``too_large``
max_cells              4,000,000     rows x columns of one publish / append:
                                     ``too_large``
max_depth              32            nesting of a value in an ``object`` column:
                                     ``schema_mismatch`` naming the column
max_streams            10,000        streams on the server (publishing to a new name):
                                     ``too_large``
outbound_budget        16 MiB        bytes queued for one connection and not yet
                                     written: data waits; anything else closes the
                                     connection with 1008
write_timeout          30 s          a frame unwritten that long: close 1008
header_timeout         10 s          an HTTP request whose headers are not complete:
                                     the connection is closed
body_timeout           30 s          an HTTP request whose body is not complete: closed
=====================  ============  ==================================================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["Limits"]

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """The server's per-connection and per-request bounds (see the module docstring).

    >>> Limits(max_columns=50).max_columns
    50
    """

    max_message_size: int = 16 * MiB
    max_json_size: int = 2 * MiB
    max_columns: int = 1_000
    max_cells: int = 4_000_000
    max_depth: int = 32
    max_streams: int = 10_000
    outbound_budget: int = 16 * MiB
    write_timeout: float = 30.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                from .errors import ConfigError

                raise ConfigError(f"limit {field.name} must be a positive number; got {value!r}")

    def replace(self, **changes: float | int | None) -> Limits:
        """A copy with ``changes`` applied; ``None`` values keep the current limit."""
        kept: dict[str, Any] = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **kept)
