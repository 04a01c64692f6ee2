"""Classes the allow= tests pickle (importable by pickle.dump, and by
hermetic only when an allow= entry names them)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any


class AttributeDict(dict):  # type: ignore[type-arg]
    """Like lightning_fabric's: a dict with attribute access."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as e:
            raise AttributeError(key) from e

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


@dataclasses.dataclass
class TrainConfig:
    lr: float
    layers: list[int]
    name: str = "run"


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a: Any, b: Any) -> None:
        self.a = a
        self.b = b

    def __getstate__(self) -> Any:
        return (None, {"a": self.a, "b": self.b})

    def __eq__(self, other: object) -> bool:
        return type(other) is Slotted and (self.a, self.b) == (other.a, other.b)


class WithState:
    """Custom __getstate__/__setstate__ (the state is not the instance dict)."""

    def __init__(self, v: int) -> None:
        self.v = v

    def __getstate__(self) -> Any:
        return {"packed": self.v * 2}

    def __setstate__(self, state: Any) -> None:
        self.v = state["packed"] // 2

    def __eq__(self, other: object) -> bool:
        return type(other) is WithState and other.v == self.v


class Reduced:
    """__reduce__ with a list argument: the class must receive it full."""

    def __init__(self, items: list[int], scale: float) -> None:
        self.items = list(items)
        self.scale = scale

    def __reduce__(self) -> Any:
        return (Reduced, (self.items, self.scale))

    def __eq__(self, other: object) -> bool:
        return type(other) is Reduced and (other.items, other.scale) == (self.items, self.scale)


class MyList(list):  # type: ignore[type-arg]
    pass


class Node:
    """Cycles through instance state (parent <-> children)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.parent: Node | None = None
        self.children: list[Node] = []


def scaled(x: float, factor: float) -> float:
    """A plain function a checkpoint may call through REDUCE."""
    return x * factor


def touch_canary() -> None:
    """Harmful if it ran: creates the canary file."""
    path = os.environ.get("HERMETIC_CANARY")
    if path:
        with open(path, "w") as f:
            f.write("ran")


# An alias defined here of a function defined elsewhere: "allow_classes:*"
# covers what this module defines, never this.
joined = os.path.join


@dataclasses.dataclass(frozen=True)
class Key:
    """Hashes its fields: a dict keyed by it must be filled after BUILD."""

    a: int
    b: str
