"""MLflow params and tags of a job: the flattened config, Hydra's choices, versions."""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dfmx.tracking.redact import redact_config

#: MLflow's limit on a param value's length.
MAX_PARAM_LENGTH = 6000
#: A conservative limit on a tag value's length.
MAX_TAG_LENGTH = 5000


def _scalar(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value), default=str)
    return str(value)


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Scalars of a nested config under dotted keys (``backbone.arch``), all as strings.

    Lists become their JSON text (``["blocks.4"]``); ``None`` becomes ``"None"``. Values
    longer than MLflow's limit are cut. Keys come out sorted, so re-runs log the same.
    Secrets are hidden (:func:`dfmx.tracking.redact.redact_config`).
    """
    if not prefix:
        config = redact_config(config)
    flat: dict[str, str] = {}
    for key in sorted(config, key=str):
        value = config[key]
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = _scalar(value)[:MAX_PARAM_LENGTH]
    return flat


def choice_tags(choices: Mapping[str, Any]) -> dict[str, str]:
    """Hydra's chosen group options as ``choice.<group>`` tags (unset groups left out)."""
    return {f"choice.{group}": str(option) for group, option in sorted(choices.items())
            if option is not None}


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the checkout dfmx runs from, or ``None`` (not a checkout, no git)."""
    import dfmx

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(dfmx.__file__).resolve().parent,
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def origin_tags() -> dict[str, str]:
    """Who and which code made a record (a run, a sweep's parent run, a logged model):
    ``dfmx.version``; when known, the git commit (also as MLflow's own tag) and the user
    (``mlflow.user``, MLflow's "User" column)."""
    import contextlib
    import getpass

    import dfmx

    tags = {"dfmx.version": dfmx.__version__}
    commit = git_commit()
    if commit:
        tags["dfmx.git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    with contextlib.suppress(Exception):  # no login name (a container's numeric user)
        tags["mlflow.user"] = getpass.getuser()
    return tags
