"""Keep secrets out of what dfmx records: params, tags, the logged config, log lines.

Credentials reach a config through a tracking URI (``https://user:token@host``) or an
option whose name says it holds one (``..._token``, ``password``, ``api_key``...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***"
_SECRET_KEY = re.compile(r"(token|password|passwd|secret|api[_-]?key|credential)", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.I)


def redact_text(text: str) -> str:
    """``text`` with the user-info part of every URL (``user:pass@``) replaced."""
    return _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)


def redact_config(config: Any, key: str = "") -> Any:
    """A copy of a nested config with secret-named values and URL credentials hidden."""
    if isinstance(config, Mapping):
        return {k: redact_config(v, str(k)) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [redact_config(v, key) for v in config]
    if config is not None and _SECRET_KEY.search(key):
        return REDACTED
    return redact_text(config) if isinstance(config, str) else config
