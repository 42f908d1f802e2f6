"""Frozen dataclasses as schemas for YAML mappings: typed conversion, range and choice checks, and errors
that name the key path (``pretrain.lr: -1 out of range; allowed: >= 0``). Used by ``smpq.config``."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from smpq.errors import ConfigError


def in_range(lo: float | None = None, hi: float | None = None) -> dict:
    """Field metadata: the value must lie in ``[lo, hi]`` (``hi`` None = no upper bound). A float must be
    finite as well (NaN compares false with every bound, infinity passes an open upper bound)."""
    return {"range": (lo, hi)}


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise ConfigError(f"line {line}: duplicate key {key!r} (first set on line {seen[key]}); "
                                  "keep only one of them")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path) -> Any:
    """A YAML file's content; bad syntax or a duplicate key is one ``ConfigError`` line naming file and line."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ConfigError(f"{path}{where}: not valid YAML ({problem}); fix the syntax there") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8); give a YAML params file") from None


def one_of(*allowed: str) -> dict:
    """Field metadata: the value must be one of ``allowed``."""
    return {"choices": allowed}


def parse_config(cls: type, data: Any, path: str) -> Any:
    """Build the frozen dataclass ``cls`` from a mapping, checking keys, types and ranges."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'params'}: expected a mapping of keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = _join(path, str(unknown[0]))
        raise ConfigError(f"{where}: unknown key; allowed keys: {', '.join(fields)}")
    missing = [name for name in fields if name not in data and not _optional(hints[name])]
    if missing:
        raise ConfigError(f"{_join(path, missing[0])}: missing key; every key must be set in the params file "
                          f"(this section needs: {', '.join(fields)})")
    values = {}
    for name, value in data.items():
        key = _join(path, name)
        values[name] = _check_value(_convert(hints[name], value, key), fields[name].metadata, key)
    values.update({name: None for name in fields if name not in data})  # an omitted optional key is None
    obj = cls(**values)
    if hasattr(obj, "check"):
        obj.check(path or "params")
    return obj


def as_flat_dict(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"pretrain.lr": 0.1, ...}`` for logging a config object as flat params."""
    flat: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        key = _join(prefix, f.name)
        if dataclasses.is_dataclass(value):
            flat.update(as_flat_dict(value, key))
        else:
            flat[key] = list(value) if isinstance(value, tuple) else value
    return flat


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, key)
    if dataclasses.is_dataclass(hint):
        return parse_config(hint, value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_convert(args[0], item, f"{key}[{i}]") for i, item in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # a bug in this module, not in params


def _optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def _check_value(value: Any, metadata: Mapping[str, Any], key: str) -> Any:
    if value is None:
        return value
    if "choices" in metadata and value not in metadata["choices"]:
        raise ConfigError(f"{key}: {value!r} is not allowed; allowed: {', '.join(metadata['choices'])}")
    if isinstance(value, float) and not math.isfinite(value) and not metadata.get("nonfinite"):
        raise ConfigError(f"{key}: {value!r} is not allowed; give a finite number")
    if "range" in metadata:
        lo, hi = metadata["range"]
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            allowed = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise ConfigError(f"{key}: {value!r} out of range; allowed: {allowed}")
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``dotted`` = ``"a.b"`` (an override of a params file)."""
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
