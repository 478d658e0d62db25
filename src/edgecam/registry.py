"""Name -> factory registries, one per part (models, runtimes, CAM methods, ...).

Duplicate names raise, unknown names raise with the list of known ones (timm `_registry.py` is the model).
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

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
