"""Where the firewall plugs into Python: the pickle module's entry points,
the unpickler classes (C and pure-Python, including subclasses defined
earlier), PyTorch's loaders (those of code archives are in ``_code``), and an
audit hook as the backstop.

Everything here is installed once per process and stays: the audit hook
cannot be removed, and the wrappers cost one attribute test when no mode or
restriction is active.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import sys
from collections.abc import Callable
from typing import Any

from hermetic import _hermetic
from hermetic.firewall import _code, _core, _streams
from hermetic.firewall._core import RUN
from hermetic.firewall._state import APPROVED, ARCHIVE_APPROVED, CURRENT, LOCK, STATE

try:
    import _pickle
except ImportError:  # pragma: no cover - interpreters without the C accelerator
    _pickle = None  # type: ignore[assignment]

_orig_loads = pickle.loads
_orig_load = pickle.load
_OrigUnpickler = pickle.Unpickler
_orig_py_load = pickle._Unpickler.load
_orig_dumps = pickle.dumps
_orig_dump = pickle.dump
_OrigPickler = pickle.Pickler
_orig_py_dump = pickle._Pickler.dump

_installed = False
_writers_installed = False
_MISSING = object()


def _file_of(obj: Any) -> str | None:
    return _streams.file_name(obj) or CURRENT.get()[0]


_base_persistent_load = getattr(pickle._Unpickler, "persistent_load", None)


def _persistent_load_of(unpickler: Any) -> Any:
    """The unpickler's own persistent-id resolver, if it has one (the base
    classes' default only raises)."""
    pl = getattr(unpickler, "persistent_load", None)
    if pl is None or getattr(pl, "__func__", None) is _base_persistent_load:
        return None
    return pl


# --------------------------------------------------------------------------
# pickle.loads / pickle.load


def loads(
    data: Any,
    /,
    *,
    fix_imports: bool = True,
    encoding: str = "ASCII",
    errors: str = "strict",
    buffers: Any = (),
) -> Any:
    if not STATE.active:
        return _orig_loads(
            data, fix_imports=fix_imports, encoding=encoding, errors=errors, buffers=buffers
        )
    if type(data) is not bytes:
        # A snapshot: a bytearray changed by another thread after the check
        # must not change what runs. memoryview() rejects non-buffers as
        # pickle.loads does.
        data = memoryview(data).tobytes()
    if not data:
        return _orig_loads(data)  # EOFError, as without the firewall
    end, blob_id = _hermetic.first_blob_of(data)
    # Hand the unpickler exactly the bytes that were checked.
    blob = data if end == len(data) else data[:end]
    verdict = _core.check(blob, blob_id, file=None, entry="pickle.loads")
    if verdict is not RUN:
        return verdict.value  # type: ignore[attr-defined]
    token = APPROVED.set(True)
    try:
        return _orig_loads(
            blob, fix_imports=fix_imports, encoding=encoding, errors=errors, buffers=buffers
        )
    finally:
        APPROVED.reset(token)


def load(
    file: Any,
    *,
    fix_imports: bool = True,
    encoding: str = "ASCII",
    errors: str = "strict",
    buffers: Any = (),
) -> Any:
    if not STATE.active or not (hasattr(file, "read") and hasattr(file, "readline")):
        return _orig_load(
            file, fix_imports=fix_imports, encoding=encoding, errors=errors, buffers=buffers
        )
    src = _streams.Source.of(file)
    blob = src.take()
    if not blob:
        return _orig_loads(b"")  # EOFError, as without the firewall
    verdict = _core.check(blob, None, file=_file_of(file), entry="pickle.load")
    if verdict is not RUN:
        return verdict.value  # type: ignore[attr-defined]
    bio = _streams.reader_like(file, blob)
    token = APPROVED.set(True)
    try:
        obj = _OrigUnpickler(
            bio, fix_imports=fix_imports, encoding=encoding, errors=errors, buffers=buffers
        ).load()
    finally:
        APPROVED.reset(token)
    src.settle(len(blob), bio.tell())
    return obj


# --------------------------------------------------------------------------
# Unpickler classes


class Unpickler(_OrigUnpickler):  # type: ignore[misc, valid-type]
    """``pickle.Unpickler`` while the firewall is installed: the C unpickler,
    reading each stream only after the firewall approved its bytes."""

    def __init__(
        self,
        file: Any,
        *,
        fix_imports: bool = True,
        encoding: str = "ASCII",
        errors: str = "strict",
        buffers: Any = (),
    ) -> None:
        if not (hasattr(file, "read") and hasattr(file, "readline")):
            raise TypeError("file must have 'read' and 'readline' attributes")
        feed = _streams.Feed.of(file)
        super().__init__(
            feed, fix_imports=fix_imports, encoding=encoding, errors=errors, buffers=buffers
        )
        self._hermetic_feed = feed

    def load(self) -> Any:
        feed = self._hermetic_feed
        if not STATE.active:
            feed.buf = None
            return super().load()
        src = _streams.Source.of(feed.src)
        blob = src.take()
        if not blob:
            feed.buf = io.BytesIO(b"")
            try:
                return super().load()  # EOFError
            finally:
                feed.buf = None
        verdict = _core.check(
            blob,
            None,
            file=_file_of(feed.src),
            entry="pickle.Unpickler",
            persistent_load=_persistent_load_of(self),
        )
        if verdict is not RUN:
            return verdict.value  # type: ignore[attr-defined]
        feed.buf = bio = _streams.reader_like(feed.src, blob)
        token = APPROVED.set(True)
        try:
            return super().load()
        finally:
            APPROVED.reset(token)
            feed.buf = None
            src.settle(len(blob), bio.tell())


Unpickler.__module__ = "pickle"
Unpickler.__qualname__ = "Unpickler"


def _guarded_attr_load(
    self: Any, orig: Callable[[Any], Any], read_attr: str, readline_attr: str, entry: str
) -> Any:
    """``load`` of a pure-Python unpickler that keeps its file's ``read`` and
    ``readline`` as attributes (``pickle._Unpickler`` and every subclass,
    joblib's included; torch's weights-only unpickler)."""
    if not STATE.active:
        return orig(self)
    read = getattr(self, read_attr)
    readline = getattr(self, readline_attr)
    src = _streams.Source(read, readline)
    d = getattr(self, "__dict__", {})
    handle = d.get("file_handle", _MISSING)
    # joblib's unpickler reads array data from its file handle between
    # opcodes: its blob is the dump's whole span, arrays included.
    swap_handle = handle is not _MISSING and src.file is not None and handle is src.file
    blob = src.take_joblib() if swap_handle else src.take()
    if not blob:
        return orig(self)  # EOFError from the exhausted file
    verdict = _core.check(
        blob,
        None,
        file=_file_of(src.file),
        entry=entry,
        persistent_load=_persistent_load_of(self),
    )
    if verdict is not RUN:
        return verdict.value  # type: ignore[attr-defined]
    bio = io.BytesIO(blob)
    setattr(self, read_attr, bio.read)
    setattr(self, readline_attr, bio.readline)
    if swap_handle:
        # joblib reads array data straight from the unpickler's file handle.
        self.file_handle = bio
    token = APPROVED.set(True)
    try:
        return orig(self)
    finally:
        APPROVED.reset(token)
        setattr(self, read_attr, read)
        setattr(self, readline_attr, readline)
        if swap_handle:
            self.file_handle = handle
        src.settle(len(blob), bio.tell())


def _py_unpickler_load(self: Any) -> Any:
    return _guarded_attr_load(
        self, _orig_py_load, "_file_read", "_file_readline", "pickle._Unpickler"
    )


_py_unpickler_load.__name__ = "load"
_py_unpickler_load.__qualname__ = "_Unpickler.load"


# --------------------------------------------------------------------------
# Writers (record and warn modes): the places to migrate


def dumps(
    obj: Any, protocol: int | None = None, *, fix_imports: bool = True, buffer_callback: Any = None
) -> bytes:
    if STATE.inventory is not None:
        _core.record_dump("pickle.dumps")
    return _orig_dumps(obj, protocol, fix_imports=fix_imports, buffer_callback=buffer_callback)


def dump(
    obj: Any,
    file: Any,
    protocol: int | None = None,
    *,
    fix_imports: bool = True,
    buffer_callback: Any = None,
) -> None:
    if STATE.inventory is not None:
        _core.record_dump("pickle.dump")
    return _orig_dump(obj, file, protocol, fix_imports=fix_imports, buffer_callback=buffer_callback)


class Pickler(_OrigPickler):  # type: ignore[misc, valid-type]
    """``pickle.Pickler`` in record and warn modes: notes who writes pickles."""

    def dump(self, obj: Any) -> None:
        if STATE.inventory is not None:
            _core.record_dump("pickle.Pickler")
        return super().dump(obj)


Pickler.__module__ = "pickle"
Pickler.__qualname__ = "Pickler"


def _py_pickler_dump(self: Any, obj: Any) -> None:
    if STATE.inventory is not None:
        _core.record_dump("pickle._Pickler")
    return _orig_py_dump(self, obj)


# --------------------------------------------------------------------------
# PyTorch


def _wrap_torch_load(orig: Callable[..., Any]) -> Callable[..., Any]:
    if getattr(orig, "_hermetic_wrapped", False):
        return orig

    @functools.wraps(orig)
    def load(f: Any, *args: Any, **kwargs: Any) -> Any:
        if not STATE.active:
            return orig(f, *args, **kwargs)
        # A TorchScript archive, which torch.load hands to torch.jit.load,
        # is decided as a whole file before torch reads a byte of it.
        approved = _code.gate_torch_load(f)
        evaluated = None if approved is not None else _core.evaluate_checkpoint(f, args, kwargs)
        if isinstance(evaluated, _core.Evaluated):
            return evaluated.value
        if isinstance(f, (str, os.PathLike)):
            name: str | None = os.path.abspath(os.fspath(f))
        else:
            name = _streams.file_name(f)
        token = CURRENT.set((name, "torch.load"))
        ok = ARCHIVE_APPROVED.set(approved)
        try:
            return orig(f, *args, **kwargs)
        finally:
            ARCHIVE_APPROVED.reset(ok)
            CURRENT.reset(token)

    load._hermetic_wrapped = True  # type: ignore[attr-defined]
    return load


def _wrap_torch_save(orig: Callable[..., Any]) -> Callable[..., Any]:
    if getattr(orig, "_hermetic_wrapped", False):
        return orig

    @functools.wraps(orig)
    def save(*args: Any, **kwargs: Any) -> Any:
        if STATE.inventory is None:
            return orig(*args, **kwargs)
        _core.record_dump("torch.save")
        token = CURRENT.set((None, "torch.save"))
        try:
            return orig(*args, **kwargs)
        finally:
            CURRENT.reset(token)

    save._hermetic_wrapped = True  # type: ignore[attr-defined]
    return save


def _patch_torch_serialization(mod: Any) -> None:
    mod.load = _wrap_torch_load(mod.load)
    mod.save = _wrap_torch_save(mod.save)
    torch = sys.modules.get("torch")
    # torch/__init__ binds `load` and `save` after this module ran; when
    # torch is already imported, rebind them there too.
    if torch is not None and hasattr(torch, "load"):
        # The firewall rebinds torch's load and save on purpose.
        torch.load = mod.load  # type: ignore[attr-defined]
        torch.save = mod.save  # type: ignore[attr-defined]


def _patch_torch_weights_only(mod: Any) -> None:
    cls = mod.Unpickler
    if getattr(cls.load, "_hermetic_wrapped", False):
        return
    orig = cls.load

    def load(self: Any) -> Any:
        return _guarded_attr_load(self, orig, "read", "readline", "torch weights-only unpickler")

    load._hermetic_wrapped = True  # type: ignore[attr-defined]
    cls.load = load


_POST_IMPORT: dict[str, Callable[[Any], None]] = {
    "torch.serialization": _patch_torch_serialization,
    "torch._weights_only_unpickler": _patch_torch_weights_only,
    # Loaders that run code from a file without pickle (TorchScript,
    # torch.package, PT2): see _code.
    **_code.POST_IMPORT,
}


class _PatchingLoader:
    def __init__(self, loader: Any, hook: Callable[[Any], None]) -> None:
        self._loader = loader
        self._hook = hook

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        self._hook(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _PostImportFinder:
    """Patches a few modules right after they are first imported."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        hook = _POST_IMPORT.get(fullname)
        if hook is None:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(fullname, path, target)
            if spec is None:
                continue
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _PatchingLoader(spec.loader, hook)
            return spec
        return None

    def invalidate_caches(self) -> None:
        pass


# --------------------------------------------------------------------------
# The audit hook


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "pickle.find_class":
        return
    if not STATE.active or APPROVED.get():
        return
    module, name = args
    _core.on_unguarded_global(str(module), str(name))


# --------------------------------------------------------------------------


def install(*, writers: bool = False) -> None:
    """Installs the wrappers and the audit hook (once per process)."""
    global _installed, _writers_installed
    with LOCK:
        if not _installed:
            pickle.loads = loads
            pickle.load = load
            # The firewall replaces pickle's loaders and Unpickler on purpose.
            pickle._Unpickler.load = _py_unpickler_load  # type: ignore[method-assign]
            if _OrigUnpickler is not pickle._Unpickler:
                pickle.Unpickler = Unpickler  # type: ignore[misc]
            if _pickle is not None:
                _pickle.loads = loads
                _pickle.load = load
                if _OrigUnpickler is _pickle.Unpickler:
                    _pickle.Unpickler = Unpickler  # type: ignore[misc]  # on purpose, as above
            # A reference taken before now: multiprocessing's pickler keeps
            # its own copy of pickle.loads.
            red = sys.modules.get("multiprocessing.reduction")
            if red is not None and getattr(red, "ForkingPickler", None) is not None:
                red.ForkingPickler.loads = staticmethod(loads)
            for name, hook in _POST_IMPORT.items():
                mod = sys.modules.get(name)
                if mod is not None:
                    hook(mod)
            sys.meta_path.insert(0, _PostImportFinder())  # type: ignore[arg-type]
            sys.addaudithook(_audit)
            _installed = True
        if writers and not _writers_installed:
            pickle.dumps = dumps
            pickle.dump = dump
            # The firewall replaces pickle's writers and Pickler on purpose.
            pickle._Pickler.dump = _py_pickler_dump  # type: ignore[method-assign]
            if _OrigPickler is not pickle._Pickler:
                pickle.Pickler = Pickler  # type: ignore[misc]
            _writers_installed = True


def installed() -> bool:
    return _installed
