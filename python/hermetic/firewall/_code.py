"""Loaders that run code from a file without Python's pickle machinery.

``torch.jit.load`` (and ``torch.load``, which hands TorchScript archives to
it) compiles the TorchScript an archive carries and runs it while loading
(every ``__setstate__``), in torch's C++ unpickler: no pickle hook and no
audit event sees it. ``torch.package.PackageImporter`` imports the Python
modules a package carries, ``torch.export.load`` evaluates the symbolic
expressions a PT2 archive carries with ``sympy.sympify`` (``eval``), and
AOTInductor packages carry shared libraries that are loaded.

The firewall decides on each such file as one blob, all of its bytes
(``sha256:`` of the file), before the loader touches it, and hands the loader
exactly the bytes it checked. See docs/SPEC.md, "Code archives".
"""

from __future__ import annotations

import functools
import io
import os
import stat
import sys
import weakref
from collections.abc import Callable
from typing import Any

from hermetic._hermetic import HermeticError
from hermetic.firewall import _archive, _state, _streams
from hermetic.firewall._archive import CodeArchive
from hermetic.firewall._errors import NoPickleError, display
from hermetic.firewall._state import ARCHIVE_APPROVED, CURRENT, STATE

TORCHSCRIPT = CodeArchive(
    "torchscript",
    "TorchScript archive",
    "TorchScript archive runs code when it is loaded: torch.jit.load (which torch.load "
    "hands such archives to) compiles the TorchScript it carries (code/) and runs it, "
    "every __setstate__ included, in torch's C++ loader, which no pickle hook sees",
    listed_by_add=True,
)
MOBILE = CodeArchive(
    "torchscript",
    "TorchScript model",
    "TorchScript model (a TorchScript, mobile or flatbuffer file) runs code when it is "
    "loaded: torch's C++ loaders run the TorchScript methods it carries, every "
    "__setstate__ included, where no pickle hook sees them",
    listed_by_add=True,
)
PACKAGE = CodeArchive(
    "torch.package",
    "torch.package archive",
    "torch.package archive runs code: PackageImporter imports the Python modules it "
    "carries (and the TorchScript in it), outside the pickle machinery",
    listed_by_add=False,
)
PT2 = CodeArchive(
    "pt2",
    "PT2 archive",
    "PT2 archive (torch.export, AOTInductor) runs code when it is loaded: "
    "torch.export.load evaluates the symbolic expressions it carries with "
    "sympy.sympify, which calls eval, and AOTInductor loads the shared libraries it carries",
    listed_by_add=False,
)

_ZIP_MAGIC = b"PK\x03\x04"
_UNCERTAIN = _archive.UNCERTAIN_ZIP_FINDINGS


def _strict() -> bool:
    """Whether a load the firewall cannot check must be refused."""
    return STATE.mode in ("deny", "enforce") or bool(STATE.tokens)


def _uncheckable(archive: CodeArchive, what: str, entry: str, file: str | None) -> None:
    """Refuses (deny, enforce, ``no_pickles()``) or warns (warn) about a
    code archive the firewall cannot hash."""
    frames, location = _state.stack()
    site = STATE.manifest.call_site(frames) if frames else None
    shown = display(file) if file else "not known"
    message = (
        f"hermetic refused to load {archive.article} {archive.title} it cannot check: "
        f"{display(what)}\n"
        f"  what:      {archive.article} {archive.runs}\n"
        f"  file:      {shown}\n"
        f"  call site: {display(site or '?')} ({display(location or '?')})\n"
        f"  through:   {display(entry)}\n"
        f"  mode:      {STATE.mode or 'no_pickles()'}\n"
        "The firewall allows such a file only by the SHA-256 of all of its bytes: "
        "load it from a path or a binary file object."
    )
    if _strict():
        raise NoPickleError(message, file=file, call_site=site, mode=STATE.mode)
    if STATE.mode == "warn":
        _state._warn_at(message.replace("refused to load", "cannot check", 1), location)


def _read_path(path: Any) -> tuple[bytes, str]:
    """All bytes of the file at ``path`` and its absolute name."""
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    name = os.path.abspath(os.fspath(path))
    with open(name, "rb") as fh:
        return fh.read(), name


def _read_rest(f: Any, archive: CodeArchive, entry: str) -> bytes:
    """The bytes of a binary file object from its position to its end, the
    object put back where it was. One that cannot be read that way is
    refused under deny, enforce and ``no_pickles()`` (its loader would read
    it in its own way, unchecked); otherwise raises ``_Unchecked``."""
    name = _streams.file_name(f)
    try:
        start = f.tell()
        data = f.read()
        f.seek(start)
    except Exception as e:  # noqa: BLE001 - whatever it is, the file cannot be checked
        _uncheckable(archive, f"reading it failed ({type(e).__name__}: {e})", entry, name)
        raise _Unchecked from e
    if not isinstance(data, (bytes, bytearray, memoryview)):
        _uncheckable(archive, f"read() gave {type(data).__name__}, not bytes", entry, name)
        raise _Unchecked
    return bytes(data)


class _Unchecked(Exception):
    """Not checkable, and not refused (record, warn): run the loader as it
    was called."""


def _take(f: Any, archive: CodeArchive, entry: str) -> tuple[bytes, str | None]:
    """The bytes a loader given ``f`` (a path or a file object) reads, and
    the file's name."""
    if isinstance(f, (str, os.PathLike)):
        if os.path.isdir(f):
            _uncheckable(archive, "it is a directory", entry, os.path.abspath(os.fspath(f)))
            raise _Unchecked
        return _read_path(f)
    return _read_rest(f, archive, entry), _streams.file_name(f)


# --------------------------------------------------------------------------
# torch.load: TorchScript archives are handed to torch.jit.load


def torchscript_reading(result: Any) -> tuple[bool, str | None]:
    """Whether torch.load may hand a zip the scanner read as ``result`` to
    torch.jit.load: ``(True, None)`` for a TorchScript archive, ``(True,
    why)`` when the scanner cannot rule it out, ``(False, None)`` otherwise.

    torch.serialization forwards a zip whose records include
    ``constants.pkl`` (``_is_torchscript_zip``); the scanner calls a zip
    ``torchscript`` when any record, in any letter case (miniz looks names
    up ignoring case), is ``constants.pkl`` or under ``code/``.
    """
    if result.error is not None:
        return True, f"the scanner cannot read the archive ({result.error})"
    findings = result.all_findings()
    if result.format == "torchscript" or any(f.code == "torchscript_code" for f in findings):
        return True, None
    uncertain = sorted({f.code for f in findings if f.code in _UNCERTAIN})
    if uncertain:
        return True, (
            f"the scanner finds the archive ambiguous ({', '.join(uncertain)}), so it cannot "
            "rule out that torch's zip reader sees a constants.pkl record and hands the "
            "file to torch.jit.load"
        )
    return False, None


def gate_torch_load(f: Any) -> str | None:
    """Called by the ``torch.load`` wrapper before torch reads anything:
    decides on a file that torch.load would hand to torch.jit.load, as a
    whole. Returns the approved blob id, or ``None`` for everything else
    (pickles, checkpoints), which the pickle hooks decide."""
    from hermetic import _scan

    entry = "torch.load"
    if isinstance(f, (str, os.PathLike)):
        path = os.fspath(f)
        # torch.load reads a path ending in .safetensors with safetensors.
        if isinstance(path, str) and path.endswith(".safetensors"):
            return None
        try:
            with open(path, "rb") as fh:
                head = fh.read(len(_ZIP_MAGIC))
        except (OSError, TypeError, ValueError):
            return None  # torch.load raises its own error
        # torch.serialization._is_zipfile: only these first four bytes count.
        if head != _ZIP_MAGIC:
            return None
        scanned, is_ts, why = _scan_path(path)
        if not is_ts:
            return None
        data, name = _read_path(path)
        return _archive.check_archive(
            data, TORCHSCRIPT, file=name, entry=entry, scan=scanned, note=why
        )
    # A file object: torch reads from its position (_is_zipfile does tell,
    # read(4), seek; an object that fails those fails torch.load the same way).
    try:
        start = f.tell()
        head = f.read(len(_ZIP_MAGIC))
        f.seek(start)
    except Exception:  # noqa: BLE001 - torch.load meets the same error
        return None
    if head != _ZIP_MAGIC:
        return None
    fname = _streams.file_name(f)
    result: Any = None
    fd_path = _fd_path(f, start)
    if fd_path is not None:
        # An open regular file read from its start: the scanner maps it
        # through its descriptor, so a checkpoint is not read into memory
        # just to learn that it is not TorchScript.
        result, is_ts, why = _scan_path(fd_path)
        if not is_ts:
            return None
    try:
        data = _read_rest(f, TORCHSCRIPT, entry)
    except _Unchecked:
        return None
    if fd_path is None:
        try:
            result = _scan.scan_bytes(data, name=fname or "<file object>")
            is_ts, why = torchscript_reading(result)
        except HermeticError as e:
            is_ts, why = True, f"the scanner cannot read the archive ({e})"
        if not is_ts:
            return None
    return _archive.check_archive(data, TORCHSCRIPT, file=fname, entry=entry, scan=result, note=why)


def _scan_path(path: str | bytes) -> tuple[Any, bool, str | None]:
    """Scans the file at ``path`` (a symbolic link's target: the scanner
    does not follow links) and reads the result as ``torchscript_reading``
    does: ``(result or None, is TorchScript, why)``."""
    from hermetic import _scan

    try:
        results = _scan.scan(os.path.realpath(os.fsdecode(path)), include_clean=True)
        if len(results) != 1:
            raise OSError(f"the scanner gave {len(results)} results for one file")
        is_ts, why = torchscript_reading(results[0])
        return results[0], is_ts, why
    except (HermeticError, OSError) as e:
        return None, True, f"the scanner cannot read the archive ({e})"


def _fd_path(f: Any, start: int) -> str | None:
    """The path of the regular file the file object ``f`` has open, when
    ``f`` stands at its start and the path names that same file (same
    device and inode as the descriptor), so that scanning the path reads
    what ``f`` holds."""
    if start != 0:
        return None
    try:
        fd = f.fileno()
        if not isinstance(fd, int):
            return None
        st = os.fstat(fd)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    candidates = [_streams.file_name(f)]
    candidates += [os.path.realpath(f"{base}/{fd}") for base in ("/proc/self/fd", "/dev/fd")]
    for path in candidates:
        try:
            if path is not None and os.path.samestat(os.stat(path), st):
                return path
        except OSError:
            continue
    return None


# --------------------------------------------------------------------------
# torch._C: the functions that parse TorchScript and mobile models

#: ``name: (index of the path or buffer argument, its kind, the buffer twin
#: a path variant is replaced with, what the file is)``. Every one of them parses a model with
#: torch's C++ unpickler; those that build the module run its TorchScript
#: (``_get_model_extra_files_from_buffer`` too). The metadata readers are
#: covered as well: the firewall does not reason about which of torch's C++
#: paths stop short of running the model's code.
_C_LOADERS: dict[str, tuple[int, str, str | None, CodeArchive]] = {
    "import_ir_module": (1, "path", "import_ir_module_from_buffer", TORCHSCRIPT),
    "import_ir_module_from_buffer": (1, "buffer", None, TORCHSCRIPT),
    "_load_for_lite_interpreter": (0, "path", "_load_for_lite_interpreter_from_buffer", MOBILE),
    "_load_for_lite_interpreter_from_buffer": (0, "buffer", None, MOBILE),
    "_load_jit_module_from_file": (0, "path", "_load_jit_module_from_bytes", MOBILE),
    "_load_jit_module_from_bytes": (0, "buffer", None, MOBILE),
    "_load_mobile_module_from_file": (0, "path", "_load_mobile_module_from_bytes", MOBILE),
    "_load_mobile_module_from_bytes": (0, "buffer", None, MOBILE),
    "_backport_for_mobile": (0, "path", "_backport_for_mobile_from_buffer", MOBILE),
    "_backport_for_mobile_from_buffer": (0, "buffer", None, MOBILE),
    "_backport_for_mobile_to_buffer": (
        0,
        "path",
        "_backport_for_mobile_from_buffer_to_buffer",
        MOBILE,
    ),
    "_backport_for_mobile_from_buffer_to_buffer": (0, "buffer", None, MOBILE),
    "_get_model_extra_files_from_buffer": (0, "buffer", None, MOBILE),
    "_get_model_bytecode_version_from_buffer": (0, "buffer", None, MOBILE),
    "_get_mobile_model_contained_types_from_buffer": (0, "buffer", None, MOBILE),
    "_get_model_ops_and_info_from_buffer": (0, "buffer", None, MOBILE),
    "_get_module_info_from_flatbuffer": (0, "buffer", None, MOBILE),
}


def _as_buffer(value: Any, entry: str) -> bytes:
    """The bytes a C++ ``std::string`` argument receives (pybind11 takes
    ``bytes`` and ``str``, the latter as UTF-8), as a snapshot."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"{entry}: expected bytes, not {type(value).__name__}")


def _wrap_c_loader(
    name: str, orig: Callable[..., Any], spec: tuple[int, str, str | None, CodeArchive]
) -> Callable[..., Any]:
    index, kind, twin_name, archive = spec
    entry = f"torch._C.{name}"

    @functools.wraps(orig)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not STATE.active or len(args) <= index:
            return orig(*args, **kwargs)
        args_l = list(args)
        if kind == "path":
            target = args_l[index]
            if not isinstance(target, (str, bytes)):
                raise TypeError(f"{entry}: expected a path (str), not {type(target).__name__}")
            data, file = _read_path(target)
            _archive.check_archive(data, archive, file=file, entry=entry)
            # Hand torch exactly the bytes that were checked, never the path
            # to read again.
            twin = _ORIGINALS.get(twin_name) if twin_name is not None else None
            if twin is None:
                return orig(*args, **kwargs)
            args_l[index] = data
            return twin(*args_l, **kwargs)
        data = _as_buffer(args_l[index], entry)
        _archive.check_archive(data, archive, file=None, entry=entry)
        args_l[index] = data
        return orig(*args_l, **kwargs)

    wrapper._hermetic_wrapped = True  # type: ignore[attr-defined]
    return wrapper


# id(reader) -> the PackageImporter that made it from approved bytes.
_PACKAGE_READERS: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


def _wrap_import_from_package(orig: Callable[..., Any]) -> Callable[..., Any]:
    entry = "torch._C._import_ir_module_from_package"

    @functools.wraps(orig)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if STATE.active and len(args) > 1:
            reader = args[1]
            owner = _PACKAGE_READERS.get(id(reader))
            if owner is None or getattr(owner, "zip_reader", None) is not reader:
                _uncheckable(
                    PACKAGE,
                    "its zip reader was not opened by a PackageImporter the firewall checked",
                    entry,
                    None,
                )
        return orig(*args, **kwargs)

    wrapper._hermetic_wrapped = True  # type: ignore[attr-defined]
    return wrapper


_ORIGINALS: dict[str, Any] = {}


def patch_torch_c(mod: Any) -> None:
    """Wraps torch._C's model loaders (once), in torch._C and wherever
    torch re-exported them (``from torch._C import *`` in torch/__init__)."""
    torch = sys.modules.get("torch")
    for name in _C_LOADERS:
        orig = getattr(mod, name, None)
        if orig is None or getattr(orig, "_hermetic_wrapped", False):
            continue
        _ORIGINALS[name] = orig
    for name, spec in _C_LOADERS.items():
        orig = _ORIGINALS.get(name)
        if orig is None or getattr(getattr(mod, name, None), "_hermetic_wrapped", False):
            continue
        wrapped = _wrap_c_loader(name, orig, spec)
        setattr(mod, name, wrapped)
        if torch is not None and getattr(torch, name, None) is orig:
            setattr(torch, name, wrapped)
    orig_pkg = getattr(mod, "_import_ir_module_from_package", None)
    if orig_pkg is not None and not getattr(orig_pkg, "_hermetic_wrapped", False):
        mod._import_ir_module_from_package = _wrap_import_from_package(orig_pkg)


# --------------------------------------------------------------------------
# Python-level loaders: name the file and the entry point for messages, or
# decide on the whole file before their own code reads it.


def _naming(orig: Callable[..., Any], entry: str) -> Callable[..., Any]:
    """``torch.jit.load`` and friends: the decision happens in torch._C;
    this tells it the file's name and the entry point the program called."""
    if getattr(orig, "_hermetic_wrapped", False):
        return orig

    @functools.wraps(orig)
    def wrapper(f: Any, *args: Any, **kwargs: Any) -> Any:
        if not STATE.active or CURRENT.get()[1] is not None:
            return orig(f, *args, **kwargs)
        if isinstance(f, (str, os.PathLike)):
            name: str | None = os.path.abspath(os.fspath(f))  # type: ignore[arg-type]
        else:
            name = _streams.file_name(f)
        token = CURRENT.set((name, entry))
        try:
            return orig(f, *args, **kwargs)
        finally:
            CURRENT.reset(token)

    wrapper._hermetic_wrapped = True  # type: ignore[attr-defined]
    return wrapper


def _whole_file(orig: Callable[..., Any], archive: CodeArchive, entry: str) -> Callable[..., Any]:
    """A loader of a code archive given as a path or a file object: decides
    on all of its bytes, then hands the loader an ``io.BytesIO`` of exactly
    those bytes."""
    if getattr(orig, "_hermetic_wrapped", False):
        return orig

    @functools.wraps(orig)
    def wrapper(f: Any, *args: Any, **kwargs: Any) -> Any:
        if not STATE.active:
            return orig(f, *args, **kwargs)
        try:
            data, name = _take(f, archive, entry)
        except _Unchecked:
            return orig(f, *args, **kwargs)
        approved = _archive.check_archive(data, archive, file=name, entry=entry)
        cur = CURRENT.set((name, CURRENT.get()[1] or entry))
        ok = ARCHIVE_APPROVED.set(approved)
        try:
            return orig(io.BytesIO(data), *args, **kwargs)
        finally:
            ARCHIVE_APPROVED.reset(ok)
            CURRENT.reset(cur)

    wrapper._hermetic_wrapped = True  # type: ignore[attr-defined]
    return wrapper


def _rebind(
    orig: Any, new: Any, attr: str, modules: tuple[str, ...], first: Any | None = None
) -> None:
    """Points ``attr`` at ``new`` in ``first`` and in each of ``modules``
    (already imported) that still holds ``orig``."""
    if first is not None:
        setattr(first, attr, new)
    for m in modules:
        mod = sys.modules.get(m)
        if mod is not None and getattr(mod, attr, None) is orig:
            setattr(mod, attr, new)


def patch_jit_serialization(mod: Any) -> None:
    for attr in ("load", "jit_module_from_flatbuffer"):
        orig = getattr(mod, attr, None)
        if orig is None or getattr(orig, "_hermetic_wrapped", False):
            continue
        entry = "torch.jit.load" if attr == "load" else f"torch.jit.{attr}"
        _rebind(orig, _naming(orig, entry), attr, ("torch.jit",), mod)


def patch_jit_mobile(mod: Any) -> None:
    orig = getattr(mod, "_load_for_lite_interpreter", None)
    if orig is not None and not getattr(orig, "_hermetic_wrapped", False):
        mod._load_for_lite_interpreter = _naming(
            orig, "torch.jit.mobile._load_for_lite_interpreter"
        )


def patch_package_importer(mod: Any) -> None:
    cls = mod.PackageImporter
    orig_init = cls.__init__
    if getattr(orig_init, "_hermetic_wrapped", False):
        return
    entry = "torch.package.PackageImporter"

    @functools.wraps(orig_init)
    def __init__(self: Any, file_or_buffer: Any, *args: Any, **kwargs: Any) -> None:
        if not STATE.active:
            return orig_init(self, file_or_buffer, *args, **kwargs)
        import torch

        if isinstance(file_or_buffer, torch._C.PyTorchFileReader):
            _uncheckable(PACKAGE, "it was given as an open zip reader", entry, None)
            orig_init(self, file_or_buffer, *args, **kwargs)
            _PACKAGE_READERS[id(file_or_buffer)] = self
            return None
        try:
            data, name = _take(file_or_buffer, PACKAGE, entry)
        except _Unchecked:
            return orig_init(self, file_or_buffer, *args, **kwargs)
        _archive.check_archive(data, PACKAGE, file=name, entry=entry)
        # The package is read from exactly the bytes that were checked.
        reader = torch._C.PyTorchFileReader(io.BytesIO(data))
        orig_init(self, reader, *args, **kwargs)
        if isinstance(file_or_buffer, (str, os.PathLike)):
            self.filename = os.fspath(file_or_buffer)
        else:
            self.filename = "<binary>"
        _PACKAGE_READERS[id(reader)] = self
        return None

    __init__._hermetic_wrapped = True  # type: ignore[attr-defined]
    cls.__init__ = __init__


def patch_pt2_package(mod: Any) -> None:
    orig = getattr(mod, "load_pt2", None)
    if orig is not None and not getattr(orig, "_hermetic_wrapped", False):
        new = _whole_file(orig, PT2, "torch.export.pt2_archive._package.load_pt2")
        _rebind(orig, new, "load_pt2", ("torch._inductor.package.package",), mod)


def patch_torch_export(mod: Any) -> None:
    orig = getattr(mod, "load", None)
    if orig is not None and not getattr(orig, "_hermetic_wrapped", False):
        mod.load = _whole_file(orig, PT2, "torch.export.load")


def patch_inductor_package(mod: Any) -> None:
    orig = getattr(mod, "load_package", None)
    if orig is not None and not getattr(orig, "_hermetic_wrapped", False):
        new = _whole_file(orig, PT2, "torch._inductor.package.load_package")
        _rebind(orig, new, "load_package", ("torch._inductor.package",), mod)


def patch_inductor(mod: Any) -> None:
    orig = getattr(mod, "aoti_load_package", None)
    if orig is not None and not getattr(orig, "_hermetic_wrapped", False):
        mod.aoti_load_package = _whole_file(orig, PT2, "torch._inductor.aoti_load_package")


#: Module name -> the patch applied right after it is first imported.
POST_IMPORT: dict[str, Callable[[Any], None]] = {
    "torch._C": patch_torch_c,
    "torch.jit._serialization": patch_jit_serialization,
    "torch.jit.mobile": patch_jit_mobile,
    "torch.package.package_importer": patch_package_importer,
    "torch.export.pt2_archive._package": patch_pt2_package,
    "torch.export": patch_torch_export,
    "torch._inductor.package.package": patch_inductor_package,
    "torch._inductor": patch_inductor,
}
