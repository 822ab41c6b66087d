"""Command-line flags read from the fields of a config model, so that a default and its meaning are written once.

A flag's argparse default is None, "not given": a config file's value then stands, and a flag given
on the command line overrides it. The default a user gets is the model's, and the help shows it.
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

# The bundle commands run when none is given: the committed Fashion-MNIST one, relative to the repository root.
DEFAULT_BUNDLE = "bundles/fashion-mnist"


@dataclass(frozen=True)
class FieldFlag:
    """One flag that sets one field of `model`; `option` defaults to the field's name with dashes."""

    model: type[BaseModel]
    field: str
    option: str = ""
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return self.option or "--" + self.field.replace("_", "-")

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> argparse.Action:
        info = self.model.model_fields[self.field]
        if not info.description:
            raise ValueError(f"{self.model.__name__}.{self.field} has no description for the help of {self.flag}")
        help_ = info.description
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        if default is not None and default is not False and default != "":  # "nothing" goes without saying
            help_ += f" (default: {default})"
        help_ = help_.replace("%", "%%")  # argparse formats help with %
        value_type = _without_none(info.annotation)
        if value_type is bool:
            if default is not False:
                raise TypeError(f"{self.model.__name__}.{self.field}: a switch can only turn on a field that is off")
            return parser.add_argument(self.flag, action="store_true", help=help_)
        options: dict[str, Any] = {"default": None, "help": help_, "metavar": self.metavar}
        if get_origin(value_type) is Literal:
            options["choices"] = get_args(value_type)
        elif value_type in (int, float):
            options["type"] = value_type
        elif value_type is not str:
            raise TypeError(f"{self.model.__name__}.{self.field}: no flag for a field of type {value_type}")
        return parser.add_argument(self.flag, **options)

    def given(self, args: argparse.Namespace) -> Any:
        """The flag's value, or None when it was not given (a switch left off counts as not given)."""
        value = getattr(args, self.dest, None)
        return None if value is False else value


def _without_none(annotation: Any) -> Any:
    """`X` for `X | None`; the annotation itself otherwise."""
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def add_field_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, flags: Iterable[FieldFlag]) -> None:
    for flag in flags:
        flag.add_to(parser)


def given_fields(args: argparse.Namespace, flags: Iterable[FieldFlag]) -> dict[str, Any]:
    """{field: value} for the flags given on the command line: what overrides a config file."""
    values = {flag.field: flag.given(args) for flag in flags}
    return {field: value for field, value in values.items() if value is not None}


def client_tls_flags(model: type[BaseModel], token: bool = False) -> tuple[FieldFlag, ...]:
    """--ca, --cert, --key, --token-file (with `token`) and --tls-server-name: how a client reaches workers
    that speak TLS, for a model with the fields ca_file, cert_file, key_file, token_file and tls_server_name."""
    tls = (FieldFlag(model, "ca_file", "--ca", "FILE"), FieldFlag(model, "cert_file", "--cert", "FILE"),
           FieldFlag(model, "key_file", "--key", "FILE"))
    token_flag = (FieldFlag(model, "token_file", metavar="FILE"),) if token else ()
    return (*tls, *token_flag, FieldFlag(model, "tls_server_name", metavar="NAME"))
