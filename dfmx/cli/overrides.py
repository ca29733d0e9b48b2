"""A look at the command line *before* Hydra composes the config (:func:`check_overrides`).

A misspelt option (``pca_levle=0.9``, ``backbone=resnt18``) gets one message with a "did
you mean" instead of Hydra's struct-mode error.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from dfmx.registry import PluginError


# --------------------------------------------------------------------------- overrides
def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _values(override: Any) -> list[str]:
    """The value(s) of a parsed override as strings (all of them for a sweep)."""
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    return [override.get_value_element_as_str()]


def _keys(node: Any, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a composed config (containers and leaves)."""
    from omegaconf import DictConfig

    if not isinstance(node, DictConfig):
        return
    for key in node:
        full = f"{prefix}{key}"
        yield full
        try:
            child = node._get_node(key)
        except Exception:  # pragma: no cover - odd nodes are simply not descended into
            continue
        yield from _keys(child, f"{full}.")


def check_overrides(argv: Sequence[str], config_module: str = "dfmx.conf") -> str | None:
    """A message for the first unknown group option or config key in ``argv``, else ``None``.

    ``argv`` is the app's command line (``sys.argv[1:]``). Call it after the plugin
    configs are registered. Unknown group options (``scorer=fer``) and keys that the
    composed config does not have (``pca_levle=0.9``; ``+key=...`` adds keys and is not
    checked) get close matches suggested. Anything this check cannot handle (another
    config dir, an unparsable line, a Hydra error) returns ``None`` and is left to Hydra,
    so the check can only add a clearer message, never block a valid command.
    """
    try:
        return _check_overrides(list(argv), config_module)
    except Exception:
        return None


def _undecodable_unquoted(overrides: Sequence[str]) -> str | None:
    """A message for the first override whose value holds bytes that are not valid UTF-8
    (a file name, read as lone surrogates): Hydra's grammar refuses them outside quotes,
    with a lexer error that does not say so. ``None`` when there is none."""
    from dfmx.path_text import text_safe

    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and text_safe(value) != value and value[:1] not in ("'", '"'):
            return (f"the value of {text_safe(key)} ({text_safe(value)}) holds bytes that are "
                    f"not valid UTF-8, which Hydra reads only in quotes: write "
                    f"{text_safe(key)}='VALUE' (in a shell: \"{text_safe(key)}='VALUE'\")")
    return None


def _check_overrides(argv: list[str], config_module: str) -> str | None:
    from hydra import compose, initialize_config_module
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    args, _ = get_args_parser().parse_known_args(argv)
    if args.help or args.hydra_help:
        return None
    modes = [flag for flag, given in (
        ("--run", args.run), ("--multirun", args.multirun), ("--cfg", args.cfg is not None),
        ("--info", args.info is not None), ("--shell-completion", args.shell_completion),
    ) if given]
    if len(modes) > 1:  # Hydra raises a ValueError, shown as a traceback
        return (f"{' and '.join(modes)} cannot be given together: a command does one of "
                f"--run (the default), --multirun (-m), --cfg, --info and --shell-completion")
    if (args.config_path or args.config_name or args.config_dir or args.experimental_rerun
            or args.shell_completion):
        return None
    try:
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except Exception:
        return _undecodable_unquoted(args.overrides)
    if GlobalHydra.instance().is_initialized():
        return None  # inside another Hydra context (tests): leave it alone
    with initialize_config_module(config_module=config_module, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        groups = set(loader.list_groups("")) - {"hydra"}
        choices: list[str] = []
        keys = []
        settings = []  # the key overrides' lines, sweeps left out
        for ov in overrides:
            key = ov.get_key_element()
            if ov.is_delete() or ov.is_add() or ov.is_force_add() or key.startswith("hydra"):
                continue
            if ov.key_or_group in groups and ov.package is None:
                options = loader.get_group_options(ov.key_or_group)
                for value in _values(ov):
                    if value not in options:
                        broken = _unusable_plugin(ov.key_or_group, value)
                        if broken:
                            return broken
                        return (
                            f"unknown {ov.key_or_group} {value!r}."
                            f"{_did_you_mean(value, options)} "
                            f"Options for {ov.key_or_group}: {', '.join(options)}"
                            f" (python -m dfmx --help lists every group)"
                        )
                choices.append(f"{ov.key_or_group}={_values(ov)[0]}")
            else:
                keys.append(ov.key_or_group)
                if not ov.is_sweep_override():
                    settings.append(ov.input_line)
        if not keys:
            return None
        bad_value = None
        try:
            cfg = compose(config_name="config", overrides=choices + settings)
        except Exception as exc:  # an unknown key (found below) or a value of a wrong type
            bad_value = _bad_value(exc)
            cfg = compose(config_name="config", overrides=choices)
    missing = object()
    known = [k for k in _keys(cfg) if not k.startswith("hydra")]
    for key in keys:
        if key in known or OmegaConf.select(cfg, key, default=missing) is not missing:
            continue  # (select takes a value left at ??? for a missing key)
        parent, _, leaf = key.rpartition(".")
        siblings = [k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == parent]
        if parent and parent in known:
            hint = _did_you_mean(leaf, siblings)
            hint = hint.replace("'", f"'{parent}.", 1) if hint else hint
            if not hint:
                hint = f" Keys of {parent}: {', '.join(siblings)}."
                owners = _options_with_key(parent, leaf) if parent in groups else []
                if owners:
                    hint += f" Options that have it: {', '.join(f'{parent}={o}' for o in owners)}."
        else:
            hint = _did_you_mean(key, known)
        return (
            f"unknown config key {key!r}.{hint} "
            f"(python -m dfmx --cfg job shows every key; +{key}=VALUE adds a new one)"
        )
    from dfmx.cli.config_store import job_value_problem

    problem = job_value_problem({ov.key_or_group: _parsed(ov) for ov in overrides
                                 if ov.key_or_group in keys})
    return problem or bad_value


def _parsed(override: Any) -> list[Any]:
    """The parsed value(s) of an override (all of them for a sweep), less interpolations
    (``overlays='${seed}'``), which only the composed job resolves."""
    values = (list(override.sweep_iterator()) if override.is_sweep_override()
              else [override.value()])
    return [v for v in values if not (isinstance(v, str) and "${" in v)]


def _bad_value(exc: BaseException) -> str | None:
    """The one-line message for a composition error caused by a value its typed config
    refuses (``scorer.n_neighbors=abc``), else ``None``."""
    from omegaconf.errors import ValidationError

    cause = exc.__cause__
    if not isinstance(cause, ValidationError):
        return None
    key = getattr(cause, "full_key", "") or "an option"
    return f"bad value for {key}: {str(cause).splitlines()[0]}"


def _unusable_plugin(group: str, name: str) -> str | None:
    """Why an installed plugin ``name`` of ``group`` is not an option (its import failed,
    two packages register it, or its config breaks the contract), else ``None``."""
    from dfmx import registry
    from dfmx.cli.config_store import PluginConfigError, config_class

    if group not in registry.GROUPS or name not in registry.names(group):
        return None
    try:
        config_class(group, name, registry.load(group, name))
    except (PluginError, PluginConfigError) as exc:
        return f"{exc}. Fix or uninstall that package to use {group}={name}."
    return None


def _options_with_key(group: str, key: str) -> list[str]:
    """Options of a plugin group (stored in Hydra's ConfigStore) whose config has ``key``."""
    from hydra.core.config_store import ConfigStore

    found = []
    for name, entry in sorted(ConfigStore.instance().repo.get(group, {}).items()):
        node = getattr(entry, "node", None)
        if node is not None and key in node:
            found.append(name.removesuffix(".yaml"))
    return found


def exit_on_bad_overrides(argv: Sequence[str] | None = None) -> None:
    """Print :func:`check_overrides`'s message to stderr and exit with status 2 (a usage
    error, as argparse's), if any."""
    message = check_overrides(sys.argv[1:] if argv is None else argv)
    if message:
        print(f"dfmx: error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)
