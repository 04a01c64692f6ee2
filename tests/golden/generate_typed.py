"""Writes the version-2 golden file of docs/SPEC.md section 10 (typed trees).

    python tests/golden/generate_typed.py          # rewrite the file
    python tests/golden/generate_typed.py --check  # exit 1 if it would change

`TYPES` holds the classes (recorded under the fixed module name `golden.typed`,
whoever imports this file), `tree()` the object the golden file holds and
`Golden` the type it loads as. tests/test_typed_golden.py checks that the file
loads to `tree()`, that the writer still produces these exact bytes, and the
plain reading every reader must agree on.
"""

# No `from __future__ import annotations`: the classes are recorded under
# another module name, so their annotations must be objects, not strings.
import dataclasses
import datetime
import decimal
import enum
import functools
import math
import operator
import pathlib
import sys
import uuid
from pathlib import Path
from typing import Any, NamedTuple, TypedDict

import torch

import hermetic

HERE = Path(__file__).resolve().parent
NAME = "typed.safetensors"
MODULE = "golden.typed"


class Norm(enum.Enum):
    LAYER = "layer"
    RMS = "rms"


class Perm(enum.Flag):
    R = 4
    W = 2


@dataclasses.dataclass(frozen=True)
class Optim:
    lr: float
    betas: tuple[float, float]


class Point(NamedTuple):
    x: int
    y: float


@dataclasses.dataclass
class Layer:
    width: int
    norm: Norm


@dataclasses.dataclass
class Config:
    layers: list[Layer]
    optim: Optim
    origin: Point
    perm: Perm
    activation: Any
    schedule: Any


class Golden(TypedDict):
    config: Config
    again: Config
    weights: dict[str, torch.Tensor]
    values: list[Any]


TYPES = [Norm, Perm, Optim, Point, Layer, Config]
for _t in TYPES:
    _t.__module__ = MODULE


def tree() -> dict[str, Any]:
    config = Config(
        layers=[Layer(64, Norm.RMS), Layer(128, Norm.LAYER), Layer(64, Norm.RMS)],
        optim=Optim(3e-4, (0.9, 0.95)),
        origin=Point(1, -0.5),
        perm=Perm.R | Perm.W,
        activation=math.sqrt,
        schedule=functools.partial(operator.mul, 0.5),
    )
    return {
        "config": config,
        "again": config,
        "weights": {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)},
        "values": [
            datetime.datetime(2024, 10, 27, 2, 30, tzinfo=datetime.timezone.utc),
            datetime.date(2024, 2, 29),
            datetime.timedelta(days=-1, seconds=1, microseconds=2),
            pathlib.Path("runs/7"),
            uuid.UUID("12345678-9abc-def0-1234-56789abcdef0"),
            decimal.Decimal("-1.50E+3"),
        ],
    }


ALLOW = [math.sqrt, operator.mul]


def main() -> int:
    data = hermetic.dumps(tree())
    path = HERE / NAME
    if path.exists() and path.read_bytes() == data:
        return 0
    if "--check" in sys.argv:
        print(f"would change: {NAME}")
        return 1
    path.write_bytes(data)
    print(f"wrote: {NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
