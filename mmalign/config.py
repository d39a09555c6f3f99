"""Strict config loading: YAML -> dataclasses, with dotted `key=value` overrides.

Unknown keys, wrong types, non-finite floats and out-of-range values raise `ConfigError` naming the dotted key and
where its value came from: the YAML file, or the command-line override that set it (`load_config`). Dataclasses
check their own fields in `__post_init__` with `check_numbers`, `check_choice` and `check_nonempty`. Components named
in configs resolve through registries (plain dicts) or "module:attr" strings, never `eval`.

Settings that several configs share are nested groups (`mmalign.settings`, `mmalign.diffusion.settings`); a section
that sets some of a group's keys keeps the config's defaults for the others. A key that moved into a group
(`MOVED_KEYS`) is an error naming its new place; a run folder's recorded config is mapped (`move_recorded_keys`).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import re
import types
import typing
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key, where its value came from and what to do.

    Args:
        problem: what is wrong and what to do, without the key.
        key: the dotted key at fault ("trainer.lr"), from the top of the config; "" when no single key is.
        source: where the value came from (a file, or a command-line override); "" when not known yet.
    """

    def __init__(self, problem: str, key: str = "", source: str = ""):
        self.problem, self.key, self.source = problem, key, source
        super().__init__(": ".join(part for part in (source, key, problem) if part))

    def under(self, parent: str) -> ConfigError:
        """The same error with its key nested under `parent` ("lr" under "trainer" is "trainer.lr")."""
        return ConfigError(self.problem, join_key(parent, self.key), self.source)


def join_key(parent: str, key: str) -> str:
    """Dotted key of `key` inside section `parent` (either may be empty)."""
    return ".".join(part for part in (parent, key) if part)


def did_you_mean(name: str, known: Collection[str]) -> str:
    """" (did you mean 'x'?)" when `name` is close to a known name, else ""."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=2)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def resolve(spec: str, registry: dict[str, str] | None = None) -> Any:
    """Return the object a registry name or a "package.module:attr" string names."""
    if not isinstance(spec, str):
        raise ConfigError(f"expected a name (one of {sorted(registry or {})}) or a 'package.module:attr' string, "
                          f"got {spec!r}.")
    target = (registry or {}).get(spec, spec)
    if ":" not in target:
        known = ", ".join(sorted(registry or {}))
        raise ConfigError(f"unknown name {spec!r}{did_you_mean(spec, registry or {})}: use one of [{known}] or a "
                          "'package.module:attr' string.")
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"cannot import {target!r} (named by {spec!r}): {e}") from e


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """`value` converted to type `tp` (a float from an int, a dataclass from a mapping); `where` is its dotted key."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _check_type(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"expected {tp}, got {value!r} ({type(value).__name__}).", where)
    if tp is type(None):
        if value is None:
            return None
    elif dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    elif origin in (list, tuple) and isinstance(value, (list, tuple)):
        inner = args[0] if args else Any
        return origin(_check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    elif origin is dict and isinstance(value, dict):
        return {k: _check_type(v, args[1] if args else Any, join_key(where, str(k))) for k, v in value.items()}
    elif tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value)
    elif tp is float and isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value):
        return float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string
    elif isinstance(tp, type) and isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    name = "float (a finite number)" if tp is float else getattr(tp, "__name__", str(tp))
    raise ConfigError(f"expected {name}, got {value!r} ({type(value).__name__}).", where)


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass `cls` from a dict, rejecting unknown keys, wrong types and the values its `__post_init__`
    refuses; errors carry the dotted key, under `where` (the section's own key, e.g. "trainer")."""
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of {cls.__name__} fields, got {data!r}.", where)
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - fields, key=str)
    _check_moved(cls, unknown, where)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} for {cls.__name__}{did_you_mean(unknown[0], fields)}; "
                          f"known keys: {sorted(fields)}.", join_key(where, str(unknown[0])))
    kwargs = {k: _check_type(_onto_default(cls, k, v), hints[k], join_key(where, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise e.under(where) from e
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e), where) from e


def _onto_default(cls: type, name: str, value: Any) -> Any:
    """A partial mapping for a settings-group field laid over the config's own default group, so the keys it does not
    set keep `cls`'s defaults (a video config's `sampling: {eta: 0.5}` keeps the video's num_steps)."""
    spec = next(f for f in dataclasses.fields(cls) if f.name == name)
    if not isinstance(value, dict) or spec.default_factory is dataclasses.MISSING:
        return value
    default = spec.default_factory()
    if not dataclasses.is_dataclass(default):
        return value
    return {**{f.name: getattr(default, f.name) for f in dataclasses.fields(default) if f.init}, **value}


MOVED_KEYS = {
    **{f"lora_{old}": f"lora.{new}" for old, new in (("r", "rank"), ("alpha", "alpha"),
                                                     ("target_modules", "target_modules"))},
    **{key: f"generation.{key}" for key in ("max_new_tokens", "temperature", "max_prompt_length", "eval_greedy")},
    **{key: f"sampling.{key}" for key in ("num_steps", "guidance_scale", "detach_uncond", "eta", "noise_level",
                                          "resolution", "max_text_length")},
    "train_start": "trained_steps.start", "train_end": "trained_steps.end",
    "timestep_fraction": "trained_steps.fraction", "reduce": "trained_steps.reduce",
    **{f"b2_{key}": f"b2.{key}" for key in ("branches", "split_left", "split_right", "stages")},
}
"""Keys that moved into a settings group: {old key: its dotted place now}, relative to the config that held it (the
task configs of text, VLM, diffusion and video). A moved key is one only where its new place exists."""


def moved_to(cls: type, key: str) -> str | None:
    """Where `key` of dataclass `cls` moved (a dotted path inside `cls`), or None when it did not move there."""
    path = MOVED_KEYS.get(key)
    if path is None:
        return None
    node = cls
    for part in path.split("."):
        if not (dataclasses.is_dataclass(node) and part in {f.name for f in dataclasses.fields(node)}):
            return None
        node = typing.get_type_hints(node)[part]
    return path


def _check_moved(cls: type, keys: list, where: str) -> None:
    """Refuse keys of `cls` that moved into a settings group, naming the first one's new place (and the others')."""
    moved = [(key, moved_to(cls, key)) for key in keys if isinstance(key, str) and moved_to(cls, key)]
    if not moved:
        return
    (key, path), others = moved[0], moved[1:]
    group, _, leaf = path.rpartition(".")
    more = "; also moved: " + ", ".join(f"{k} -> {p}" for k, p in others) if others else ""
    raise ConfigError(f"moved into the settings group {group!r}: write {join_key(where, path)} instead (in YAML "
                      f"`{group}: {{{leaf}: ...}}`){more}.", join_key(where, key))


def move_recorded_keys(recorded: Any, current: Any) -> Any:
    """A recorded config (a run folder's config.yaml, plain data) with each moved key put at its new place, wherever
    the `current` config (plain data, same layout) has that place and lacks the old key; the rest unchanged."""
    if not (isinstance(recorded, dict) and isinstance(current, dict)):
        return recorded
    out = {k: move_recorded_keys(v, current.get(k)) for k, v in recorded.items()}
    for key in [k for k in out if k in MOVED_KEYS and k not in current]:
        *groups, leaf = MOVED_KEYS[key].split(".")
        place = current
        for group in groups:
            place = place.get(group) if isinstance(place, dict) else None
        if isinstance(place, dict) and leaf in place:
            node = out
            for group in groups:
                node = node.setdefault(group, {})
            node[leaf] = out.pop(key)
    return out


def check_numbers(obj: Any, *names: str, ge: float | None = None, gt: float | None = None, le: float | None = None,
                  lt: float | None = None) -> None:
    """Check that fields `names` of `obj` (numbers, or lists of numbers) lie within the bounds; NaN never does.

    Config dataclasses call it from `__post_init__`, e.g. `check_numbers(self, "lr", gt=0)`.

    Raises:
        ConfigError: keyed by the first field out of bounds, naming its value and the allowed range.
    """
    bounds = [(op, b) for op, b in ((">=", ge), (">", gt), ("<=", le), ("<", lt)) if b is not None]
    tests = {">=": lambda v, b: v >= b, ">": lambda v, b: v > b, "<=": lambda v, b: v <= b, "<": lambda v, b: v < b}
    rule = " and ".join(f"{op} {b}" for op, b in bounds)
    for name in names:
        value = getattr(obj, name)
        items = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
        for i, v in items:
            key = name if i is None else f"{name}[{i}]"
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"expected a number {rule}, got {v!r}.", key)
            if not all(tests[op](v, b) for op, b in bounds):  # False for NaN
                raise ConfigError(f"must be {rule}, got {v!r}.", key)


def check_choice(obj: Any, name: str, choices: Sequence) -> None:
    """Check that field `name` of `obj` (a value, or a list of values) is one of `choices`; the error lists them
    (and the closest one)."""
    value = getattr(obj, name)
    items = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
    for i, v in items:
        if v not in choices:
            raise ConfigError(f"must be one of {list(choices)}, got {v!r}{did_you_mean(v, choices)}.",
                              name if i is None else f"{name}[{i}]")


def check_nonempty(obj: Any, *names: str) -> None:
    """Check that fields `names` of `obj` (lists) have at least one entry."""
    for name in names:
        if not getattr(obj, name):
            raise ConfigError("is empty; give at least one entry.", name)


def to_dict(obj: Any) -> Any:
    """Plain, YAML-serialisable form of a (nested) dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested dict: ["trainer.lr=1e-5", "task_args.model=path"]. Values parse as YAML."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        source = f"command-line override {item!r}"
        if not sep or not key:
            raise ConfigError("not of the form dotted.key=value (e.g. trainer.lr=1e-5).", source=source)
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"cannot set {key!r}: {p!r} is not a section.", source=source)
        try:
            node[leaf] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"the value is not valid YAML ({e.problem}); quote it.", source=source) from e
    return data


def load_config(path: str | Path, overrides: Sequence[str] | None, build: Callable[[dict], T]) -> T:
    """Read the YAML file `path`, apply dotted `key=value` overrides and `build(data)` the config.

    A `ConfigError` from `build` is told where its bad value came from: the command-line override that set the key
    (or a section above it), else the file.
    """
    overrides = list(overrides or [])
    data = apply_overrides(read_yaml(path), overrides)
    try:
        return build(data)
    except ConfigError as e:
        if e.source:
            raise
        raise ConfigError(e.problem, e.key, _source(e.key, str(path), overrides)) from e


def _source(key: str, path: str, overrides: list[str]) -> str:
    """Where the value at `key` came from: the last override that set it or a section above it, else the file (with
    the overrides made inside `key`'s section, when there are)."""
    inside = []
    for item in reversed(overrides):
        set_key = item.partition("=")[0]
        if key == set_key or _within(key, set_key):
            return f"command-line override {item}"
        if key and _within(set_key, key):
            inside.append(item)
    return f"{path} with command-line override {', '.join(reversed(inside))}" if inside else path


def _within(key: str, section: str) -> bool:
    """Whether dotted `key` lies inside `section` ("trainer.lr" and "trainer.adam_betas[0]" lie in "trainer")."""
    return key.startswith((section + ".", section + "["))


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass the path of a YAML file (see configs/).")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8.", source=str(path)) from e
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {e}", source=str(path)) from e
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be a mapping of sections, got {type(data).__name__}.",
                          source=str(path))
    return data
