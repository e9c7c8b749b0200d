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

from kdns.config import quoted
from kdns.core.budgets import CONFIG_FILE_BYTES
from kdns.errors import KdnsError

# Flags that have no key: they say where settings come from, and how much of a file to read.
NOT_KEYS = {"help", "version", "config", "config-max-bytes"}
ENV_PREFIX = "KDNS_"
NOT_SETTINGS = {f"{ENV_PREFIX}CONFIG", f"{ENV_PREFIX}CONFIG_MAX_BYTES"}  # variables that are no setting
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
    max_bytes: int = CONFIG_FILE_BYTES,
) -> argparse.Namespace:
    """`args` (the parsed command line, defaults included) with the file's and the environment's
    settings under every flag the command line did not give; the file may hold `max_bytes`."""
    by_key = actions(parser)
    given = explicit(parser, argv)
    merged = argparse.Namespace(**vars(args))
    if config_path is not None:
        for key, value in read_file(Path(config_path), max_bytes).items():
            action = by_key.get(str(key))
            if action is None:
                raise KdnsError(
                    f"{config_path}: unknown key {quoted(key)} (the keys are the flags of kdns serve, without --)"
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
        and name not in NOT_SETTINGS
        and name[len(ENV_PREFIX) :].lower().replace("_", "-") not in by_key
    )
    if unknown:
        raise KdnsError(f"environment variable {unknown[0]}: no such setting (they are KDNS_ and a flag's name)")
    return merged


# libyaml's parser where PyYAML was built with it: many times faster than the pure-Python one,
# and it refuses deep nesting with an error where the Python composer recurses until
# RecursionError (10 KB of brackets).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_file(path: Path, max_bytes: int = CONFIG_FILE_BYTES) -> dict[Any, Any]:
    """The settings in a YAML file of at most `max_bytes` (`KdnsError` otherwise, naming it).

    Whatever the file holds, the outcome is a mapping or a `KdnsError`: too large, not UTF-8, not
    YAML, nested too deeply, or aliases that would expand past `max_bytes` (a "billion laughs"
    file is small, and shares its lists, until something walks them)."""
    try:
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as error:
        raise KdnsError(f"{path}: cannot read the configuration: {error}") from None
    if len(data) > max_bytes:
        raise KdnsError(f"{path}: larger than {max_bytes} bytes (--config-max-bytes): not read")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise KdnsError(f"{path}: cannot read the configuration: {error}") from None
    try:
        loaded = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as error:
        raise KdnsError(f"{path}: invalid YAML: {_cut(str(error))}") from None
    except RecursionError:
        raise KdnsError(f"{path}: invalid YAML: nested too deeply") from None
    if _expanded_size(loaded, max_bytes) > max_bytes:
        raise KdnsError(f"{path}: its aliases expand past {max_bytes} bytes (--config-max-bytes): not read")
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise KdnsError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
    return loaded


def _expanded_size(loaded: Any, limit: int) -> int:
    """What `loaded` would be written out in full, every alias expanded: its scalars' lengths
    and a byte per item, counted with a stack (no recursion) and given up past `limit`."""
    size = 0
    stack = [loaded]
    while stack and size <= limit:
        node = stack.pop()
        size += 1
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, (str, bytes)):
            size += len(node)
    return size


def _cut(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def fingerprint(path: str, max_bytes: int = CONFIG_FILE_BYTES) -> str | None:
    """A digest of the file's first `max_bytes` + 1 bytes (a larger file is refused anyway), to
    notice a change however it was made (a ConfigMap update swaps a symlink rather than writing
    the file); None if it cannot be read."""
    try:
        with open(path, "rb") as file:
            return hashlib.sha256(file.read(max_bytes + 1)).hexdigest()
    except OSError:
        return None


def _value(action: argparse.Action, value: Any, where: str) -> Any:
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise KdnsError(f"{where}: expected true or false, got {quoted(value)}")
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
            raise KdnsError(f"environment variable {variable}: expected true or false, got {quoted(text)}")
        return lowered in _TRUE
    if isinstance(action, argparse._AppendAction):
        return [_one(action, part.strip(), variable) for part in text.split(",") if part.strip()]
    return _one(action, text, f"environment variable {variable}")


def _one(action: argparse.Action, value: Any, where: str) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise KdnsError(f"{where}: expected a value, got {quoted(value)}")
    text = str(value)
    converted: Any = text
    if action.type is not None and callable(action.type):
        try:
            converted = action.type(text)
        except (TypeError, ValueError):
            raise KdnsError(f"{where}: {quoted(text)} is not valid here") from None
    if action.choices is not None and converted not in action.choices:
        raise KdnsError(f"{where}: {quoted(text)} is not one of {', '.join(map(str, action.choices))}")
    return converted
