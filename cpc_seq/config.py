"""Configs as plain data: nested dataclasses <-> dicts <-> YAML, with validation.

- :func:`from_dict` builds a dataclass from a (nested) dict, refusing unknown keys and
  values of the wrong type with a :class:`~cpc_seq.errors.ConfigError` that names the key
  (``model.dim_c: expected int, got 'abc'``).
- :func:`apply_overrides` applies ``key=value`` strings (dotted keys, values parsed as
  YAML scalars), as in ``cpc-seq audio train --config c.yaml train.steps=100 model.context=lstm``.
- :func:`to_dict` gives the plain dict stored in checkpoints.

Choices are ``Literal[...]`` annotations, checked for every field (defaults included) by
:func:`check_literals`, which :func:`from_dict` calls; range and other checks live in
each dataclass's ``validate()`` (called by :func:`from_dict`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cpc_seq.errors import ConfigError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of "
                          f"{', '.join(_type_name(a) for a in args)}")
    if origin is typing.Literal:
        _check_choice(value, args, key)
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _check_choice(value: Any, choices: tuple[Any, ...], key: str) -> None:
    """Refuse ``value`` unless it is one of ``choices`` (a Literal's values)."""
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, choices))}")


def literal_choices(tp: Any) -> tuple[tuple[Any, ...], bool] | None:
    """The values a ``Literal[...]`` (or ``Optional[Literal[...]]``, or a union of
    Literals) annotation allows, and whether it allows ``None``; ``None`` for any other
    annotation."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return typing.get_args(tp), False
    if origin not in (typing.Union, types.UnionType):
        return None
    choices: list[Any] = []
    optional = False
    for arg in typing.get_args(tp):
        if arg is type(None):
            optional = True
            continue
        inner = literal_choices(arg)
        if inner is None:
            return None
        choices += inner[0]
        optional = optional or inner[1]
    return tuple(choices), optional


def check_literals(obj: Any, prefix: str = "") -> None:
    """Check every field of dataclass ``obj`` annotated with a ``Literal`` (or an
    ``Optional[Literal]``) against its allowed values, defaults included, and the same in
    the dataclasses it holds; a value outside them raises the ConfigError that
    :func:`from_dict` gives, naming the dotted key (``prefix`` + the field's name):
    ``data.short_utterances: 'x' is not one of 'pack', 'pad', 'skip', 'error'``.
    Called by :func:`from_dict` for every dataclass it builds; a ``validate()`` calls it
    too, so configs built in code are checked the same way."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        allowed = literal_choices(hints.get(f.name, Any))
        if allowed is not None:
            choices, optional = allowed
            if not (optional and value is None):
                _check_choice(value, choices, prefix + f.name)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_literals(value, f"{prefix}{f.name}.")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and bad types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s}; known keys here: "
            + ", ".join(prefix + k for k in fields)
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    obj = cls(**kwargs)
    check_literals(obj, prefix)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] | None = None
                ) -> T:
    """The one config loader: a YAML file (optional) plus ``key=value`` overrides, as the
    validated dataclass ``cls`` (every modality's ``load_config`` is this with its class)."""
    data = load_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    return from_dict(cls, data)


def to_dict(obj: Any) -> Any:
    """Dataclass (nested) -> plain dict/list/scalars (safe for weights_only checkpoints)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


class _DuplicateKey(Exception):
    """A mapping that names one key twice (raised by :class:`_UniqueKeyLoader`)."""

    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(key, first, second)
        self.key, self.first, self.second = key, first, second


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping naming one key twice (plain YAML keeps
    the last value silently). Keys brought in by a merge (``<<: *base``) may be
    overridden: only the keys written in the mapping itself are compared."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[type, Any], int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                        key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)
                try:
                    ident = (type(key), key)
                    first = seen.get(ident)
                except TypeError:  # an unhashable key: construct_mapping reports it
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise _DuplicateKey(key, first, line)
                seen[ident] = line
        return super().construct_mapping(node, deep=deep)


def _safe_load(text: str) -> Any:
    """``yaml.safe_load`` that raises :class:`_DuplicateKey` for a duplicated key."""
    loader = _UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or bad YAML gives a ConfigError naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte {e.start}); save the config "
                          "as UTF-8") from None
    try:
        data = _safe_load(text)
    except _DuplicateKey as e:
        raise ConfigError(f"{path}:{e.second}: duplicated key {e.key!r} (first at line "
                          f"{e.first}); each key may appear once in a mapping") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        reason = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"{path}{line}: invalid YAML ({reason})") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML (nested too deeply)") from None
    _check_tree(data, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


MAX_CONFIG_NODES = 100_000


def _check_tree(data: Any, path: str | Path) -> None:
    """Refuse YAML whose aliases make a cycle (``a: &x [*x]``) or expand to more than
    :data:`MAX_CONFIG_NODES` values (a "billion laughs" alias bomb): both would otherwise
    hang or overflow the stack when the config is copied."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any, depth: int) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key in active:
            raise ConfigError(f"{path}: invalid YAML (an alias refers to a node that "
                              "contains it: a recursive structure)")
        if key in sizes:
            return sizes[key]
        if depth > 100:
            raise ConfigError(f"{path}: invalid YAML (nested more than 100 levels deep)")
        active.add(key)
        children = list(node.values()) + list(node.keys()) if isinstance(node, dict) else node
        total = 1 + sum(size(c, depth + 1) for c in children)
        active.discard(key)
        if total > MAX_CONFIG_NODES:
            raise ConfigError(f"{path}: invalid YAML (aliases expand it to more than "
                              f"{MAX_CONFIG_NODES} values)")
        sizes[key] = total
        return total

    size(data, 0)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides to a nested dict (values parsed as YAML scalars)."""
    out = _deep_copy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r}: empty key")
        try:
            value = _safe_load(raw) if raw.strip() else ""
        except _DuplicateKey as e:
            raise ConfigError(f"override {key}: duplicated key {e.key!r} in its value") from None
        except (yaml.YAMLError, RecursionError):
            value = raw
        _check_tree(value, f"override {key}")
        if isinstance(value, str):  # YAML 1.1 reads 8e-4 (no dot) as a string
            try:
                value = float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                pass
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {key}: {part} is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


#: Largest random seed accepted (torch and NumPy take any seed in [0, 2**32); runs add
#: small offsets per generator and rank, which stay far below torch's 64-bit limit).
MAX_SEED = 2**32 - 1


def check_seed(seed: int, key: str) -> None:
    """Refuse a seed outside ``[0, MAX_SEED]`` with a ConfigError naming ``key``."""
    check(0 <= seed <= MAX_SEED, key, f"must be in [0, {MAX_SEED}], got {seed}")


def check(cond: bool, key: str, message: str) -> None:
    """Raise ``ConfigError(f"{key}: {message}")`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"{key}: {message}")
