"""Keep secrets out of what dfmx records: params, tags, the logged config, log lines,
Hydra's own files in the run folder.

Credentials reach a config through a URI (``https://user:token@host``,
``postgresql://user:pw@host/db``) or an option whose name says it holds one
(``..._token``, ``password``, ``api_key``...). :func:`install_log_redaction` hides them
in every log record (Hydra's too); :func:`redact_hydra_dir` in the ``.hydra`` files.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dfmx.atomic import atomic_write_text
from dfmx.path_text import text_safe

REDACTED = "***"
_SECRET_WORDS = r"(?:token|password|passwd|secret|api[_-]?key|credential)"
_SECRET_KEY = re.compile(_SECRET_WORDS, re.I)
#: ``scheme://user:pass@``; also ``scheme:/`` (a URL turned into a path prints so) and
#: ``scheme\://`` (Hydra escapes ``:`` in the overrides of a sweep).
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*\\?:/{1,2})[^/@\s]+@", re.I)
#: ``name=value`` (an override, a query parameter) whose name says it holds a secret.
_SECRET_ASSIGN = re.compile(
    rf"(?P<key>[\w.+~-]*{_SECRET_WORDS}[\w.-]*)=(?P<value>[^\s,'\"\]\)&]+)", re.I
)


def redact_text(text: str) -> str:
    """``text`` with the user-info part of every URL (``user:pass@``) and the value of
    every ``name=value`` whose name says it holds a secret replaced by ``***``."""
    text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    return _SECRET_ASSIGN.sub(lambda m: f"{m.group('key')}={REDACTED}", text)


def redact_config(config: Any, key: str = "") -> Any:
    """A copy of a nested config with secret-named values and URL credentials hidden."""
    if isinstance(config, Mapping):
        return {k: redact_config(v, str(k)) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [redact_config(v, key) for v in config]
    if config is not None and _SECRET_KEY.search(key):
        return REDACTED
    return redact_text(config) if isinstance(config, str) else config


def _redacting_factory(base: Any) -> Any:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's to report
            return record
        safe = text_safe(redact_text(message))
        if safe != message:
            record.msg, record.args = safe, None
        return record

    factory._dfmx_redacting = True  # type: ignore[attr-defined]
    return factory


def install_log_redaction() -> None:
    """Make every log record of the process (dfmx's, Hydra's, MLflow's) carry its message
    through :func:`redact_text` and :func:`~dfmx.path_text.text_safe` (file names
    that are not valid UTF-8), whatever handlers are configured later. Idempotent."""
    base = logging.getLogRecordFactory()
    if not getattr(base, "_dfmx_redacting", False):
        logging.setLogRecordFactory(_redacting_factory(base))


def redact_override(item: str) -> str:
    """One command-line override (``key=value``) with a secret value hidden."""
    key, sep, _ = str(item).partition("=")
    if sep and _SECRET_KEY.search(key):
        return f"{key}={REDACTED}"
    return redact_text(str(item))


def redact_hydra_dir(hydra_dir: str | Path) -> None:
    """Rewrite the files Hydra saves in a run folder (``.hydra/config.yaml``,
    ``hydra.yaml``, ``overrides.yaml``) or a sweep folder (``multirun.yaml``) with
    secrets hidden; missing files are skipped. Each file is replaced atomically and keeps
    its permission bits."""
    from omegaconf import OmegaConf

    hydra_dir = Path(hydra_dir)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml", "multirun.yaml"):
        path = hydra_dir / name
        if not path.is_file():
            continue
        original = path.read_text(encoding="utf-8")
        if not (_SECRET_KEY.search(original) or _URL_USERINFO.search(original)):
            continue  # nothing to hide: no secret-named key or value, no URL credentials
        data = OmegaConf.to_container(OmegaConf.create(original), resolve=False)
        if name == "overrides.yaml":
            clean: Any = [redact_override(v) for v in data or []]
        else:
            clean = redact_config(data)
            overrides = (clean.get("hydra") or {}).get("overrides") \
                if name in ("hydra.yaml", "multirun.yaml") else None
            if isinstance(overrides, dict):
                for group in ("task", "hydra"):
                    if isinstance(overrides.get(group), list):
                        overrides[group] = [redact_override(v) for v in overrides[group]]
        text = OmegaConf.to_yaml(OmegaConf.create(clean))
        if text != original:
            atomic_write_text(path, text, mode=path.stat().st_mode)
