"""A tiny name -> object registry (one per extension axis: spaces, datasets, stabilizers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from nasctl.errors import NasctlError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; an unknown name is a NasctlError that lists the known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            raise NasctlError(
                f"Unknown {self.kind} {name!r}. Known: {', '.join(self.names())}."
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
