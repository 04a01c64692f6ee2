"""Callables by reference: functions, classes and functools.partial stored by
import path, resolved on load only from `allow=` or `hermetic.register`, and a
file that names anything else never imports its module."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _typed_util import crafted, tree_json

import hermetic
from hermetic import ClassNotAllowedError, FormatError, SchemaError


@pytest.fixture(autouse=True)
def _registry() -> Any:
    """Each test starts from, and leaves, the registry as it was."""
    from hermetic import _typed

    saved = dict(_typed._REGISTRY)
    yield
    _typed._REGISTRY.clear()
    _typed._REGISTRY.update(saved)


def double(x: Any) -> Any:
    return x * 2


def scale(x: Any, factor: float = 1.0, *, shift: float = 0.0) -> Any:
    return x * factor + shift


class Layer:
    pass


class Wide(Layer):
    pass


@dataclasses.dataclass
class Config:
    activation: Callable[[torch.Tensor], torch.Tensor]
    build_override: Callable[..., Any] | None = None
    layer: type[Layer] = Layer


def test_functions_classes_and_partials_are_stored_by_import_path() -> None:
    p = functools.partial(scale, 2.0, shift=1.0)
    tree = tree_json([double, math.sqrt, Layer, torch.nn.functional.gelu, np.tanh, p])
    assert tree == [
        {"$callable": f"{__name__}:double"},
        {"$callable": "math:sqrt"},
        {"$callable": f"{__name__}:Layer"},
        {"$callable": "torch._C._nn:gelu"},
        {"$callable": "numpy:tanh"},
        {"$partial": [f"{__name__}:scale", [2.0], ["shift", 1.0]]},
    ]
    blob = hermetic.dumps([double, math.sqrt, Layer, torch.nn.functional.gelu, np.tanh, p])
    out = hermetic.loads(
        blob, allow=[double, "math:sqrt", Layer, torch.nn.functional.gelu, np.tanh, scale]
    )
    assert out[:5] == [double, math.sqrt, Layer, torch.nn.functional.gelu, np.tanh]
    assert isinstance(out[5], functools.partial) and out[5].func is scale
    assert out[5].args == (2.0,) and out[5].keywords == {"shift": 1.0}
    assert out[5](3.0) == 7.0


def test_allow_forms() -> None:
    blob = hermetic.dumps({"f": double, "g": torch.nn.functional.gelu})
    with pytest.raises(ClassNotAllowedError) as e:
        hermetic.loads(blob)
    assert f"callable  {__name__}:double" in str(e.value)
    assert "callable  torch._C._nn:gelu" in str(e.value)
    ok = {"f": double, "g": torch.nn.functional.gelu}
    assert hermetic.loads(blob, allow=[double, torch.nn.functional.gelu]) == ok
    assert hermetic.loads(blob, allow=[f"{__name__}:double", "torch._C._nn:gelu"]) == ok
    assert hermetic.loads(blob, allow=[f"{__name__}:*", "torch._C._nn:*"]) == ok
    # A name where the function is re-exported matches the name it is recorded under.
    assert hermetic.loads(blob, allow=[double, "torch.nn.functional:gelu"]) == ok
    with pytest.raises(ClassNotAllowedError, match="torch._C._nn:gelu"):
        hermetic.loads(blob, allow=[double, "torch.nn.functional:*"])


def test_register() -> None:
    def later(x: Any) -> Any:
        return x

    blob = hermetic.dumps({"f": scale})
    with pytest.raises(ClassNotAllowedError):
        hermetic.loads(blob)
    assert hermetic.register(scale) is scale
    assert hermetic.loads(blob) == {"f": scale}
    # A moved function: register it under the name old files record.
    old = crafted('{"$callable":"oldpkg.acts:double"}')
    with pytest.raises(ClassNotAllowedError):
        hermetic.loads(old)
    hermetic.register(double, names=["oldpkg.acts:double"])
    assert hermetic.loads(old) is double
    assert hermetic.register()(later) is later  # also a decorator


def test_typed_callables() -> None:
    cfg = Config(activation=torch.nn.functional.gelu, build_override=double, layer=Wide)
    blob = hermetic.dumps(cfg)
    with pytest.raises(ClassNotAllowedError, match=f"{__name__}:double"):
        hermetic.loads(blob, type=Config, allow=[torch.nn.functional.gelu, Wide])
    out = hermetic.loads(blob, type=Config, allow=[torch.nn.functional.gelu, double, Wide])
    assert out == cfg
    # type[Layer] takes subclasses of Layer only.
    bad = hermetic.dumps(Config(activation=double, layer=Config))  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match=r"tree.layer: expected type\[.*Layer\], found the class"):
        hermetic.loads(bad, type=Config, allow=[double, Config])
    with pytest.raises(SchemaError, match=r"tree.activation: expected .*found int 3"):
        hermetic.loads(crafted(f'{{"$object":["{__name__}:Config","activation",3]}}'), type=Config)


def make_closure() -> Callable[[int], int]:
    k = 3

    def add(x: int) -> int:
        return x + k

    return add


class Holder:
    def method(self) -> None:
        pass


@pytest.mark.parametrize(
    "value, reason",
    [
        (lambda x: x, "a lambda function has no import path"),
        (make_closure(), r"make_closure.<locals>.add is a local function .*closure"),
        (Holder().method, "bound method"),
        ([].append, "bound method"),
        (functools.partial(lambda x: x, 1), "lambda function"),
        (np.add.reduce, "bound method"),
    ],
)
def test_refused_at_save_time_with_the_reason(value: Any, reason: str) -> None:
    with pytest.raises(FormatError, match=r'cannot save tree\["f"\]: .*' + reason):
        hermetic.dumps({"f": value})


def test_local_classes_and_replaced_names_are_refused() -> None:
    class Local:
        pass

    with pytest.raises(FormatError, match="local class"):
        hermetic.dumps(Local)
    p = functools.partial(double, 1)
    p.note = "x"  # type: ignore[attr-defined]
    with pytest.raises(FormatError, match="attributes set"):
        hermetic.dumps(p)

    def renamed(x: Any) -> Any:
        return x

    renamed.__qualname__ = "double"
    with pytest.raises(FormatError, match="does not lead back"):
        hermetic.dumps(renamed)


def test_a_name_must_lead_back_to_what_it_names() -> None:
    # `os.path` is reachable from this module, but os.path.join is recorded
    # under its own module: a file cannot smuggle it in under ours.
    blob = crafted(f'{{"$callable":"{__name__}:os.path.join"}}')
    with pytest.raises(ClassNotAllowedError, match="recorded under another name"):
        hermetic.loads(blob, allow=[f"{__name__}:*"])
    blob = crafted(f'{{"$callable":"{__name__}:Layer.__subclasses__"}}')
    with pytest.raises(ClassNotAllowedError, match="dunder"):
        hermetic.loads(blob, allow=[f"{__name__}:*"])


# ------------------------------------------------------------------ the canary


CANARY_MODULE = textwrap.dedent(
    """
    import dataclasses, enum, os, pathlib

    pathlib.Path(os.environ["HERMETIC_CANARY"]).write_text("imported")

    @dataclasses.dataclass
    class Thing:
        x: int

    class Kind(enum.Enum):
        A = 1

    def act(x):
        return x
    """
)


@pytest.fixture
def canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path, Path]:
    """A module whose import writes a file, and a checkpoint that names its
    class, enum, function and a partial of it (written by another process)."""
    name = f"hermetic_canary_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(CANARY_MODULE)
    ckpt = tmp_path / "ckpt.safetensors"
    script = textwrap.dedent(
        f"""
        import functools, torch, hermetic, {name} as m
        hermetic.save({{"thing": m.Thing(1), "kind": m.Kind.A, "act": m.act,
                       "p": functools.partial(m.act, 1), "w": torch.ones(2)}}, {str(ckpt)!r})
        """
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path), HERMETIC_CANARY=str(tmp_path / "saved"))
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120)
    assert (tmp_path / "saved").exists()
    flag = tmp_path / "imported"
    monkeypatch.setenv("HERMETIC_CANARY", str(flag))
    monkeypatch.syspath_prepend(str(tmp_path))  # the module *could* be imported
    return name, ckpt, flag


@dataclasses.dataclass
class Thing:
    x: int


def test_a_file_naming_a_module_outside_allow_never_imports_it(
    canary: tuple[str, Path, Path],
) -> None:
    name, ckpt, flag = canary
    attempts: list[dict[str, Any]] = [
        {},
        {"allow": [Thing, "elsewhere:*", double]},
        {"allow": [f"{name}x:*", f"{name}.sub:*"]},
        {"type": dict[str, Any]},
        {"type": dict[str, Any], "allow": [Thing]},
        {"type": dict[str, Thing | Any]},
    ]
    for kw in attempts:
        with pytest.raises((ClassNotAllowedError, SchemaError, ValueError)):
            hermetic.load(ckpt, **kw)
        assert not flag.exists() and name not in sys.modules, kw
    plain = hermetic.load(ckpt, plain=True)
    assert plain["thing"] == {"$class": f"{name}:Thing", "x": 1}
    assert plain["act"] == {"$callable": f"{name}:act"}
    assert plain["p"] == {"$partial": f"{name}:act", "args": [1], "keywords": {}}
    with hermetic.open(ckpt) as h:
        assert h.tree["kind"] == {"$enum": f"{name}:Kind", "value": 1}
        assert torch.equal(h["w"], torch.ones(2))
        with pytest.raises(ClassNotAllowedError):
            h["thing"]
    out = subprocess.run(
        [sys.executable, "-m", "hermetic", "inspect", str(ckpt)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=os.environ.get("PYTHONPATH", "")),
    )
    assert f"{name}:Thing" in out.stdout, out.stderr
    assert not flag.exists() and name not in sys.modules
    # The control: allowing the module imports it, so the canary does fire.
    out = hermetic.load(ckpt, allow=[f"{name}:*"])
    assert flag.exists() and name in sys.modules
    assert out["act"] is sys.modules[name].act
    assert out["kind"] is sys.modules[name].Kind.A
