"""Backplanes: where a hub's rows are numbered and its controls go when one process is not
the whole service (DESIGN.md decision 8).

The in-process backplane is :class:`livestream.hub.LocalBackplane`, the default. The Redis
one (:mod:`livestream.backplanes.redis`, the only module that imports ``redis``) is loaded
by :func:`from_url` only when a server is given a Redis URL, so a server without one never
imports redis.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from ..errors import ConfigError

__all__ = ["from_url"]

#: URL schemes a Redis backplane takes.
REDIS_SCHEMES = ("redis", "rediss", "unix")


def from_url(url: str, **options: Any) -> Any:
    """The backplane for ``url`` (``redis://host:port/db``, ``rediss://...``): a
    :class:`~livestream.backplanes.redis.RedisBackplane`."""
    scheme = urllib.parse.urlsplit(url).scheme if isinstance(url, str) else ""
    if scheme not in REDIS_SCHEMES:
        raise ConfigError(
            "redis must be a URL such as redis://localhost:6379/0 (rediss:// for TLS, "
            "redis://:PASSWORD@host:6379/0 with a password); got one starting "
            f"{(scheme + '://') if scheme else 'with no scheme'}"
        )
    from .redis import RedisBackplane  # here: redis loads only when it is used

    return RedisBackplane(url, **options)
