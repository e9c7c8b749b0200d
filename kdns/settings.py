"""Where the settings of `kdns serve` come from: a YAML file (`--config PATH`), `KDNS_*`
environment variables, and flags. Flags win over the environment, the environment over the file,
and the file over the defaults.

Every flag has a key: the flag's name without `--` (`cache-size: 10000`, `upstream: [...]` for a
repeatable flag, `prefetch: true` for a switch), and an environment variable: `KDNS_` and the key
in capitals with `_` for `-` (`KDNS_CACHE_SIZE=10000`, `KDNS_UPSTREAM=1.1.1.1,8.8.8.8`). An
unknown key or a bad value is an error naming the file or variable and the key (exit 2).
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kdns.errors import KdnsError

NOT_KEYS = {"help", "version", "config"}  # flags that have no key
ENV_PREFIX = "KDNS_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The settings a (sub)command takes, by key."""
    found = {}
    for action in parser._actions:  # argparse keeps no public list of a parser's options
        long = [option for option in action.option_strings if option.startswith("--")]
        if long and long[0][2:] not in NOT_KEYS:
            found[long[0][2:]] = action
    return found


def explicit(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The destinations the command line itself set (so that nothing else overrides them)."""
    saved = {action.dest: action.default for action in parser._actions}
    try:
        for action in parser._actions:
            action.default = argparse.SUPPRESS
        given = parser.parse_args(argv)
    finally:
        for action in parser._actions:
            action.default = saved[action.dest]
    return set(vars(given))


def merge(
    parser: argparse.ArgumentParser,
    argv: Sequence[str],
    args: argparse.Namespace,
    config_path: str | None,
    environ: Mapping[str, str],
) -> argparse.Namespace:
    """`args` (the parsed command line, defaults included) with the file's and the environment's
    settings under every flag the command line did not give."""
    by_key = actions(parser)
    given = explicit(parser, argv)
    merged = argparse.Namespace(**vars(args))
    if config_path is not None:
        for key, value in read_file(Path(config_path)).items():
            action = by_key.get(str(key))
            if action is None:
                raise KdnsError(
                    f"{config_path}: unknown key {key!r} (the keys are the flags of kdns serve, without --)"
                )
            if action.dest not in given:
                setattr(merged, action.dest, _value(action, value, f"{config_path}: key {key}"))
    for key, action in by_key.items():
        variable = ENV_PREFIX + key.upper().replace("-", "_")
        if variable in environ and action.dest not in given:
            setattr(merged, action.dest, _from_environment(action, environ[variable], variable))
    unknown = sorted(
        name
        for name in environ
        if name.startswith(ENV_PREFIX)
        and name != ENV_PREFIX + "CONFIG"
        and name[len(ENV_PREFIX) :].lower().replace("_", "-") not in by_key
    )
    if unknown:
        raise KdnsError(f"environment variable {unknown[0]}: no such setting (they are KDNS_ and a flag's name)")
    return merged


def read_file(path: Path) -> dict[Any, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise KdnsError(f"{path}: cannot read the configuration: {error}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise KdnsError(f"{path}: invalid YAML: {error}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise KdnsError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
    return loaded


def fingerprint(path: str) -> str | None:
    """A digest of the file's content, to notice a change however it was made (a ConfigMap
    update swaps a symlink rather than writing the file); None if it cannot be read."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _value(action: argparse.Action, value: Any, where: str) -> Any:
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise KdnsError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        return [_one(action, item, where) for item in items]
    if isinstance(value, (list, dict)):
        raise KdnsError(f"{where}: expected one value, got {type(value).__name__}")
    return _one(action, value, where)


def _from_environment(action: argparse.Action, text: str, variable: str) -> Any:
    if isinstance(action, argparse._StoreTrueAction):
        lowered = text.strip().lower()
        if lowered not in _TRUE | _FALSE:
            raise KdnsError(f"environment variable {variable}: expected true or false, got {text!r}")
        return lowered in _TRUE
    if isinstance(action, argparse._AppendAction):
        return [_one(action, part.strip(), variable) for part in text.split(",") if part.strip()]
    return _one(action, text, f"environment variable {variable}")


def _one(action: argparse.Action, value: Any, where: str) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise KdnsError(f"{where}: expected a value, got {value!r}")
    text = str(value)
    converted: Any = text
    if action.type is not None and callable(action.type):
        try:
            converted = action.type(text)
        except (TypeError, ValueError):
            raise KdnsError(f"{where}: {text!r} is not valid here") from None
    if action.choices is not None and converted not in action.choices:
        raise KdnsError(f"{where}: {text!r} is not one of {', '.join(map(str, action.choices))}")
    return converted
