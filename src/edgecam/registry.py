"""Name -> factory registries, one per part (models, runtimes, CAM methods, ...).

Duplicate names raise, unknown names raise with the list of known ones (timm `_registry.py` is the model).
A registry whose parts import a backend or torch holds "module:attr" strings (`add_lazy`), imported by `load`
on first use, so that the host and the device agent import only the parts they run.

Device-side code (shipped in the agent): standard library only, Python >= 3.8.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, Iterator, TypeVar

from edgecam.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from a unique name to an object (usually a class or factory)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@REG.register("name")`."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"duplicate {self.kind} name {name!r}: already registered")
        self._items[name] = obj

    def add_lazy(self, name: str, entry: str) -> None:
        """Register `entry`, a "module:attr" string that `load` imports on first use."""
        module, sep, attr = entry.partition(":")
        if not (module and sep and attr):
            raise ValueError(f"{self.kind} {name!r}: expected a 'module:attr' entry, got {entry!r}")
        self.add(name, entry)  # type: ignore[arg-type]

    def load(self, name: str) -> Any:
        """The object registered as `name`, its "module:attr" string imported if it was added lazily."""
        entry = self.get(name)
        if not isinstance(entry, str):
            return entry
        module, _, attr = entry.partition(":")
        return getattr(importlib.import_module(module), attr)

    def remove(self, name: str) -> None:
        """Unregister `name` (a plugin's tests put the registry back as they found it)."""
        self.get(name)
        del self._items[name]

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
