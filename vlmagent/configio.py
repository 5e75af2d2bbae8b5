"""Loading YAML into dataclasses that reject unknown keys, naming the key and the file.

Why its own module: this machinery knows nothing of vlmagent's sections; config.py declares the
dataclasses (and `load` with `Config` as the default) and re-exports the names other modules use
(`ConfigError`, `from_dict`, `to_dict`).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names file and key."""


def load_into(cls: type, path: str | Path | None = None,
              overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Read YAML at `path` (or start from defaults), apply `key.path=value` overrides, build `cls`.

    Overrides apply to the effective config (file over defaults), so `reward.weights.execution=0.5`
    changes one entry of the weights and keeps the others.
    """
    source = str(path) if path else "<defaults>"
    raw: dict[str, Any] = {}
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{source}: cannot read config ({e.strerror or e})") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{source}: cannot read config (not UTF-8 text: {e})") from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: not valid YAML: {e}") from None
        if raw is None:  # empty file (or only comments): all defaults
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: top level must be a mapping, got {type(raw).__name__}")
    cfg = from_dict(cls, raw, source)
    if not overrides:
        return cfg
    merged = to_dict(cfg)
    for ov in overrides:
        apply_override(merged, ov, source)
    return from_dict(cls, merged, f"{source} + overrides")


def apply_override(raw: dict[str, Any], override: str, source: str = "<overrides>") -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as YAML (0.5, true, [a, b])."""
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r}: expected key.path=value")
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:  # absent, or an empty section (`reward:` with every key commented out)
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{source}: override {override!r}: "
                              f"{'.'.join(parts[:i + 1])} is not a section")
        node = nxt
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise ConfigError(f"override {override!r}: value is not valid YAML: {e}") from None


def from_dict(cls: type, raw: Any, source: str, prefix: str = "") -> Any:
    """Build dataclass `cls` from `raw`, rejecting unknown keys and wrong types."""
    where = prefix or "<top level>"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted((k for k in raw if k not in fields), key=str)  # YAML keys may be non-str
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        raise ConfigError(f"{source}: unknown key '{key}' (valid keys here: {', '.join(fields)})")
    kwargs = {name: _coerce(hints[name], value, source, f"{prefix}.{name}" if prefix else name)
              for name, value in raw.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        # An empty section (`browser:` with every key commented out) means all its defaults.
        return from_dict(tp, {} if value is None else value, source, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, source, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin is list:
        if not isinstance(value, list):
            raise _type_error(source, key, "a list", value)
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(item, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(source, key, "a mapping", value)
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {_coerce(kt, k, source, key): _coerce(vt, v, source, f"{key}.{k}")
                for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise _type_error(source, key, tp.__name__, value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise _type_error(source, key, tp.__name__, value)
    return value


def _type_error(source: str, key: str, want: str, value: Any) -> ConfigError:
    got = f"{type(value).__name__} {value!r}"
    return ConfigError(f"{source}: key '{key}' must be {want}, got {got}")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def merge(base: dict[str, Any], over: dict[str, Any]) -> None:
    """Nested `over` into `base` in place: sections merge key by key, other values replace."""
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = v
