"""Dataclass configs from plain data: type checks and coercion with one-line fix-it errors, dotted overrides, YAML
files, and the (key, default, help) listing. Generic over any frozen dataclass tree; `config.py` holds maporl's."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from maporl.errors import UsageError, did_you_mean

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def opt(default: Any, help: str) -> Any:
    """A dataclass field with its help string (listed by `maporl config --keys` and in docs)."""
    return dataclasses.field(default=default, metadata={"help": help})


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one value against a field type; the error says what was expected."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            hint = did_you_mean(str(value), [str(c) for c in choices])
            raise UsageError(f"{where}={value!r} is not allowed{hint}; choose one of: {', '.join(map(str, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else coerce(value, args[0], where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{where} must be a list, e.g. {where}=[1,2]")
        inner = typing.get_args(tp)
        variadic = len(inner) == 2 and inner[1] is Ellipsis
        if not variadic and len(value) != len(inner):
            example = ",".join(["0.3"] * len(inner))
            raise UsageError(f"{where} must be a list of {len(inner)} values, e.g. {where}=[{example}]")
        item_types = [inner[0] if variadic else inner[i] for i in range(len(value))]
        try:
            return tuple(coerce(v, tp, where) for v, tp in zip(value, item_types, strict=True))
        except UsageError:
            if typing.get_origin(inner[0]) is Literal:  # its own message lists the choices
                raise
            ex, name = _example(inner[0]), getattr(inner[0], "__name__", inner[0])
            raise UsageError(f"{where}={list(value)} should be a list of {name}, e.g. {where}=[{ex},{ex}]") from None
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):  # YAML 1.1 reads `1e-3` as a string
            return float(value)
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise UsageError(f"{where}={value!r} should be {getattr(tp, '__name__', tp)}; e.g. {where}={_example(tp)}")


def _example(tp: Any) -> str:
    return {bool: "true", int: "3", float: "0.5", str: "name"}.get(tp, "...")


def build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = field_types(cls)
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in fields:
            hint = did_you_mean(key, list(fields))
            raise UsageError(f"unknown config key '{where}'{hint}; see `maporl config` for all keys")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise UsageError(
                    f"'{where}' is a section; set its keys, e.g. {where}.{dataclasses.fields(tp)[0].name}=..."
                )
            kwargs[key] = build(tp, value, f"{where}.")
        else:
            kwargs[key] = coerce(value, tp, where)
    return cls(**kwargs)


def load(cls: type, path: str | Path | None, overrides: Sequence[str], base: dict[str, Any] | None) -> Any:
    """Defaults <- `base` <- YAML file (a path or a shipped recipe's name) <- dotted overrides, built into `cls`
    (whose __post_init__ validates across fields). A section set in several layers keeps the keys of each."""
    data: dict[str, Any] = {}
    for layer in (base or {}, read_yaml(config_file(path)) if path else {}):
        for section, value in layer.items():
            if isinstance(value, dict):  # a copy: the overrides below must not write into the caller's `base`
                data[section] = {**data[section], **value} if isinstance(data.get(section), dict) else dict(value)
            else:
                data[section] = value
    for item in overrides:
        merge_dotted(data, *parse_override(item))
    return build(cls, data, "")


def parse_override(text: str) -> tuple[list[str], Any]:
    """'discussion.num_agents=3' -> (['discussion', 'num_agents'], 3); values are parsed as YAML scalars."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"override {text!r} is not of the form section.key=value, e.g. discussion.num_agents=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def merge_dotted(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UsageError(f"'{'.'.join(path)}': '{part}' is a value, not a section")
        node = child
    node[path[-1]] = value


# The recipes shipped with the package (tiny, paper_gsm8k, paper_anli): `--config paper_gsm8k` works from a wheel.
SHIPPED_CONFIGS = Path(__file__).parent / "configs"


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml"))


def config_file(path: str | Path) -> Path:
    """A YAML file's path as given, or a shipped recipe by name (`paper_gsm8k` or `paper_gsm8k.yaml`)."""
    p = Path(path)
    if p.is_file() or len(p.parts) > 1:
        return p
    shipped = SHIPPED_CONFIGS / (p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml")
    if shipped.is_file():
        return shipped
    raise UsageError(
        f"config file {p} not found; pass an existing YAML file or a shipped recipe: {', '.join(shipped_configs())}"
    )


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(
            f"config file {p} not found; pass an existing YAML file or a shipped recipe, e.g. --config paper_gsm8k"
        )
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise UsageError(f"{where}: invalid YAML ({getattr(e, 'problem', e)}); fix the file") from None
    if not isinstance(data, dict):
        raise UsageError(f"{p}: the top level must be a mapping of sections, e.g. 'discussion: {{num_agents: 3}}'")
    return data


def describe(cls: type, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, help) for every field: the source for `maporl config` and docs."""
    rows = []
    defaults = cls()
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            rows += describe(type(value), f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", value, f.metadata.get("help", "")))
    return rows


def dump_yaml(cfg: Any) -> str:
    """A config (any of the dataclasses) as YAML, in field order."""
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)


def save_config(run_dir: Path, cfg: Any) -> None:
    """Write the resolved config to run_dir/config.yaml (creating the directory): what `--resume`, `maporl eval
    --checkpoint RUN_DIR` and reports read back."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_yaml(cfg))
    except OSError as e:
        raise UsageError(f"cannot write to {run_dir} ({e.strerror}); pass a writable directory with --out") from None
