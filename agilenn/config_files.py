"""One loader from a YAML file to a pydantic model, with errors that name the file and the field.

JSON is YAML, so JSON files load too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


class ConfigFileError(ValueError):
    """A config or profile file that is missing, not YAML, or not of the expected form."""


class UnknownNameError(KeyError, ValueError):
    """A name a config or a command line picks (a dataset, a network) that its registry does not hold.

    A KeyError for callers that look names up, a ValueError for input checks; shown by its message
    alone (a plain KeyError would print it quoted).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def format_validation_error(path: str | Path, what: str, exc: ValidationError) -> str:
    """`path: invalid <what>: field.sub: message; ...`: one line a user can act on."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        parts.append(f"{where}: {err['msg']}")
    return f"{path}: invalid {what}: " + "; ".join(parts)


def read_yaml_mapping(path: str | Path, what: str, empty_ok: bool = False) -> dict[str, Any]:
    """The mapping at the top of a YAML file; `empty_ok` reads an empty file as {}."""
    path = Path(path)
    if not path.exists():
        raise ConfigFileError(f"{what} file {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path}: not valid YAML: {exc}") from None
    if data is None and empty_ok:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: a {what} is a YAML mapping of fields, got {type(data).__name__}")
    return data


def validate_mapping(model: type[Model], data: dict[str, Any], path: str | Path, what: str) -> Model:
    """`model` from `data` read out of `path`; a ConfigFileError names the file and each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigFileError(format_validation_error(path, what, exc)) from None


def load_yaml_model(path: str | Path, model: type[Model], what: str, empty_ok: bool = False) -> Model:
    """Read `path` and validate it as `model`; `what` names the kind of file in errors."""
    return validate_mapping(model, read_yaml_mapping(path, what, empty_ok), path, what)
