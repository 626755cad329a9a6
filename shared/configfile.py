"""Loading YAML config files into typed models, with errors that name the file and field."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file, field and fix."""


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("sources", "modbus", 0, "port")`` -> ``sources.modbus[0].port``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def describe_validation_error(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: {exc.error_count()} problem(s)"]
    for err in exc.errors(include_url=False):
        # Discriminated unions add the tag to the location (e.g. "kafka"); it is noise to
        # someone reading their YAML.
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        got = err.get("input")
        got_text = ""
        if err["type"] not in ("missing",) and not isinstance(got, dict | list):
            got_text = f" (got {got!r})"
        lines.append(f"  {field_path(loc)}: {err['msg']}{got_text}")
    return "\n".join(lines)


def load_yaml_model(path: Path, model: type[ModelT]) -> ModelT:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(str(path), exc)) from None
