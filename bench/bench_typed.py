"""Typed trees: save + load of a config tree of 10,000 small dataclass objects.

    python bench/bench_typed.py              # 15 rounds (a few seconds)
    python bench/bench_typed.py --rounds 5

The tree: a `Sweep` of 1,000 `Block`s of 9 `Layer`s each (10,001 objects; a
Layer has a str, an int, a float, an Enum and a tuple of str). Each round
times, in one process and in turn:

- pickle: `pickle.loads(pickle.dumps(tree))` (highest protocol);
- cattrs + json: `cattrs.preconf.json` converter, `json.loads(json.dumps(
  c.unstructure(tree)))` structured back into `Sweep`;
- hermetic: `hermetic.loads(hermetic.dumps(tree), type=Sweep)`, and the same
  through a file (`save` / `load`), through `allow=` instead of `type=`, and
  with `plain=True`.

Figures are the median (and minimum) over the rounds, in milliseconds, with
every result checked equal to the tree. Targets (docs: README, "Typed trees"):
hermetic within 3x of pickle, and faster than cattrs + json. Results go to
bench/results/typed.json; nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import gc
import json
import os
import pickle
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cattrs
import cattrs.preconf.json

import hermetic

RESULTS = Path(__file__).resolve().parent / "results" / "typed.json"


class Kind(enum.Enum):
    DENSE = "dense"
    MOE = "moe"


@dataclasses.dataclass
class Layer:
    name: str
    width: int
    dropout: float
    kind: Kind
    tags: tuple[str, ...]


@dataclasses.dataclass
class Block:
    layers: list[Layer]
    scale: float
    note: str | None = None


@dataclasses.dataclass
class Sweep:
    blocks: list[Block]
    seed: int


def make_tree() -> Sweep:
    blocks = []
    for b in range(1000):
        layers = [
            Layer(
                f"block{b}.layer{i}",
                64 * (1 + i % 4),
                0.05 * i,
                Kind.MOE if i % 3 == 0 else Kind.DENSE,
                ("attn", "mlp") if i % 2 else ("mlp",),
            )
            for i in range(9)
        ]
        blocks.append(Block(layers, 1.0 + b / 1000, None if b % 2 else f"note {b}"))
    return Sweep(blocks, 1234)


def count_objects(tree: Sweep) -> int:
    return 1 + len(tree.blocks) + sum(len(b.layers) for b in tree.blocks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()

    tree = make_tree()
    converter = cattrs.preconf.json.make_converter()
    tmp = Path(tempfile.mkdtemp(prefix="bench_typed_"))
    path = tmp / "sweep.safetensors"

    def pickle_rt() -> Any:
        return pickle.loads(pickle.dumps(tree, protocol=pickle.HIGHEST_PROTOCOL))

    def cattrs_json_rt() -> Any:
        return converter.structure(json.loads(json.dumps(converter.unstructure(tree))), Sweep)

    def hermetic_rt() -> Any:
        return hermetic.loads(hermetic.dumps(tree), type=Sweep)

    def hermetic_file_rt() -> Any:
        hermetic.save(tree, path)
        return hermetic.load(path, type=Sweep)

    allowed = [Sweep, Block, Layer, Kind]

    def hermetic_allow_rt() -> Any:
        return hermetic.loads(hermetic.dumps(tree), allow=allowed)

    def hermetic_plain_rt() -> Any:
        return hermetic.loads(hermetic.dumps(tree), plain=True)

    blob = hermetic.dumps(tree)
    cases: dict[str, tuple[Callable[[], Any], bool]] = {
        "pickle dumps+loads": (pickle_rt, True),
        "cattrs unstructure + json dumps/loads + structure": (cattrs_json_rt, True),
        "hermetic dumps + loads(type=Sweep)": (hermetic_rt, True),
        "hermetic save + load(type=Sweep), file": (hermetic_file_rt, True),
        "hermetic dumps + loads(allow=[...])": (hermetic_allow_rt, True),
        "hermetic dumps + loads(plain=True)": (hermetic_plain_rt, False),
        "hermetic dumps only": (lambda: hermetic.dumps(tree), False),
        "hermetic loads(type=Sweep) only": (lambda: hermetic.loads(blob, type=Sweep), True),
        "pickle dumps only": (lambda: pickle.dumps(tree, protocol=pickle.HIGHEST_PROTOCOL), False),
    }
    for fn, check in cases.values():  # warm up, and check the results
        out = fn()
        if check:
            assert out == tree, "a round trip changed the tree"
    times: dict[str, list[float]] = {name: [] for name in cases}
    load_start = os.getloadavg()[0]
    for _ in range(args.rounds):
        for name, (fn, _check) in cases.items():
            gc.collect()
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    load_end = os.getloadavg()[0]

    med = {name: statistics.median(ts) for name, ts in times.items()}
    base = med["pickle dumps+loads"]
    print(
        f"{count_objects(tree):,} objects, {len(blob):,} bytes as a hermetic file, "
        f"{len(pickle.dumps(tree)):,} as a pickle; {args.rounds} rounds; "
        f"load average {load_start:.1f} -> {load_end:.1f}\n"
    )
    print("| case | median ms | min ms | / pickle |")
    print("| --- | --- | --- | --- |")
    for name, ts in times.items():
        print(f"| {name} | {med[name]:.1f} | {min(ts):.1f} | {med[name] / base:.2f}x |")
    hermetic_ms = med["hermetic dumps + loads(type=Sweep)"]
    cattrs_ms = med["cattrs unstructure + json dumps/loads + structure"]
    print(
        f"\nhermetic / pickle = {hermetic_ms / base:.2f} (target <= 3); "
        f"cattrs+json / hermetic = {cattrs_ms / hermetic_ms:.2f} (target > 1)"
    )

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "bench": "typed",
                "objects": count_objects(tree),
                "hermetic_bytes": len(blob),
                "pickle_bytes": len(pickle.dumps(tree, protocol=pickle.HIGHEST_PROTOCOL)),
                "rounds": args.rounds,
                "unit": "ms",
                "median": med,
                "min": {name: min(ts) for name, ts in times.items()},
                "hermetic_over_pickle": hermetic_ms / base,
                "cattrs_json_over_hermetic": cattrs_ms / hermetic_ms,
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                    "load_average": [load_start, load_end],
                },
                "versions": {"cattrs": _version("cattrs"), "hermetic": hermetic.__version__},
                "commit": commit,
                "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            },
            indent=2,
        )
        + "\n"
    )
    path.unlink(missing_ok=True)
    tmp.rmdir()


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    main()
