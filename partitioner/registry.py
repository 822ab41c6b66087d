"""Networks by name, so a config can pick them and a user can add their own `nn.Module`s.

    from partitioner.registry import register_network

    @register_network("my-head")
    class MyHead(nn.Module):
        def __init__(self, in_channels, num_classes, **args): ...

Every network is built with its input channels (and, for heads, the number of classes)
plus the config's `args`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from agilenn.config_files import UnknownNameError

_NETWORKS: dict[str, Callable[..., nn.Module]] = {}
_BUILT_IN_MODULE = "partitioner.networks"  # registers the built-ins when first imported


def register_network(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _NETWORKS:
            raise ValueError(f"network {name!r} is already registered")
        _NETWORKS[name] = factory
        return factory

    return decorate


def unregister_network(name: str) -> None:
    """Take back a name `register_network` gave (a test cleaning up, a plugin unloading)."""
    _load_builtins()
    factory = _NETWORKS.get(name)
    if factory is None:
        raise UnknownNameError(f"unknown network {name!r}; registered networks: {', '.join(sorted(_NETWORKS))}")
    if factory.__module__ == _BUILT_IN_MODULE:
        raise ValueError(f"network {name!r} is built-in and stays registered")
    del _NETWORKS[name]


def available_networks() -> list[str]:
    _load_builtins()
    return sorted(_NETWORKS)


def build_network(name: str, **kwargs) -> nn.Module:
    _load_builtins()
    try:
        factory = _NETWORKS[name]
    except KeyError:
        raise UnknownNameError(f"unknown network {name!r}; registered networks: {', '.join(sorted(_NETWORKS))}") from None
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise TypeError(f"network {name!r} rejected its arguments {sorted(kwargs)}: {exc}") from None


def _load_builtins() -> None:
    from partitioner import networks  # noqa: F401  (registers the built-in networks)
