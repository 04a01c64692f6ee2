"""Building Python objects for the safe evaluator (``hermetic.load_pickle``,
``hermetic.torch.load``).

The file is scanned and evaluated in Rust (``hermetic._hermetic.evaluate``);
nothing from the file is ever imported or called. Rust builds containers and
scalars itself and asks a :class:`Maker` only for tensors, storages and numpy
objects, always with plain numbers, strings and buffers. torch is imported
only when a file actually holds tensors.
"""

from __future__ import annotations

import builtins
import collections
import os
import sys
from collections.abc import Iterable
from typing import IO, Any

from hermetic import _hermetic, _tensors, _typed
from hermetic._hermetic import CheckpointError, UnsafePickleError

__all__ = ["CheckpointError", "Maker", "UnsafePickleError", "load_pickle"]

PathLike = str | os.PathLike[str]

# Classes a data file may name as plain values (never called from here).
_KNOWN_CLASSES = {
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.complex": complex,
    "builtins.slice": slice,
    "builtins.range": range,
    "builtins.bytearray": bytearray,
    "builtins.bytes": bytes,
    "builtins.int": int,
    "builtins.float": float,
    "builtins.bool": bool,
    "builtins.str": str,
    "builtins.list": list,
    "builtins.tuple": tuple,
    "builtins.dict": dict,
    "collections.OrderedDict": collections.OrderedDict,
    "collections.Counter": collections.Counter,
}


# Standard-library classes rebuilt without allow= (their reconstruction only
# stores its arguments; the list and why: hermetic_pickle::policy::INERT_CLASSES).
_INERT = frozenset(_hermetic.INERT_CLASSES)


# The frameworks and torch's closed table are shared with the format's maker.
_torch = _tensors.torch
_np = _tensors.np


class Maker:
    """Makes tensors, storages and numpy objects from what Rust read.

    ``source`` is the file's path or its bytes (storage offsets index it).
    With ``mmap=True`` zip checkpoint storages are zero-copy slices of one
    private copy-on-write map of the file: writable, and writes never reach
    the file. Otherwise they are copied into memory once.
    """

    def __init__(
        self,
        source: str | bytes | bytearray,
        *,
        mmap: bool = True,
        map_location: Any = None,
        allow: _typed.Allow | None = None,
        plain: bool = False,
    ) -> None:
        self.source = source
        self.allow = allow
        self.plain = plain
        # plain=True: ids of the records made for classes outside allow= (kept alive).
        self._records: dict[int, dict[str, Any]] = {}
        self.mmap = mmap
        self.map_location = map_location
        self._file: Any = None  # the whole file as a torch uint8 tensor (mapped or read)
        self._buffer: Any = None  # the Python buffer behind it
        self._storage: Any = None  # the untyped storage of _file
        self._fd: int | None = None  # for copies read from a path

    # -------------------------------------------------------------- plain

    def big_int(self, data: bytes) -> int:
        return int.from_bytes(data, "little", signed=True)

    def slice(self, start: Any, stop: Any, step: Any) -> slice:
        return builtins.slice(start, stop, step)

    def range(self, start: int, stop: int, step: int) -> range:
        return builtins.range(start, stop, step)

    def ordered_dict(self) -> collections.OrderedDict[Any, Any]:
        return collections.OrderedDict()

    def counter(self) -> collections.Counter[Any]:
        return collections.Counter()

    def known(self, qualname: str) -> Any:
        cls = _KNOWN_CLASSES.get(qualname)
        if cls is not None:
            return cls
        if qualname == "torch.Tensor":
            return _torch().Tensor
        if qualname == "torch.nn.parameter.Parameter":
            return _torch().nn.Parameter
        if qualname == "torch.Size":
            return _torch().Size
        if qualname == "torch.device":
            return _torch().device
        if qualname == "numpy.ndarray":
            return _np().ndarray
        if qualname == "numpy.dtype":
            return _np().dtype
        raise CheckpointError(
            f"{qualname} appears as a value; hermetic does not hand out functions"
        )

    # ------------------------------------------------- allowed classes

    def foreign(self, module: str, name: str) -> Any:
        """A class or function the caller's ``allow=`` names (Rust passes only
        those); resolved against that list again, never imported for the file."""
        if (module, name) == ("builtins", "object"):
            return object
        qualified = f"{module}:{name}"
        if qualified in _INERT:
            # A closed table of hermetic's, not a name from the file.
            return _typed._import(module, name)
        if self.allow is None or not self.allow.permits(qualified):
            if self.plain:
                # Stands for the class; never imported or called.
                return {"$callable": qualified}
            raise UnsafePickleError(f"{qualified} is not in allow=")
        try:
            return self.allow.resolve(qualified, "class or function")
        except _typed.ClassNotAllowedError as e:
            raise UnsafePickleError(str(e)) from None

    def instance(self, cls: Any, made: str, args: Any, kwargs: Any, base: Any) -> Any:
        """What CPython's unpickler does for NEWOBJ(_EX), REDUCE and
        ``copyreg._reconstructor``, with an allowed class or function."""
        if isinstance(cls, dict):
            # plain=True: a record of what would have been made.
            record: dict[str, Any] = {"$class": cls["$callable"]}
            if args:
                record["$args"] = args
            if kwargs:
                record["$kwargs"] = kwargs
            self._records[id(record)] = record
            return record
        if made == "new":
            if not isinstance(cls, type):
                raise CheckpointError(f"NEWOBJ on {cls!r}, which is not a class")
            return cls.__new__(cls, *args, **(kwargs or {}))
        if made == "call":
            return cls(*args)
        # copyreg._reconstructor(cls, base, state); Rust admits only object
        # and builtin containers as the base.
        if base is object:
            return object.__new__(cls)
        obj = base.__new__(cls, args)
        if base.__init__ != object.__init__:
            base.__init__(obj, args)
        return obj

    def extend(self, obj: Any, items: list[Any]) -> None:
        """APPENDS on an instance: ``extend`` if it has one, else ``append``."""
        if id(obj) in self._records:
            obj.setdefault("$items", []).extend(items)
            return
        if isinstance(obj, list):
            obj.extend(items)
            return
        ext = getattr(obj, "extend", None)
        if ext is not None:
            ext(items)
            return
        for item in items:
            obj.append(item)

    def set_state(self, obj: Any, state: Any) -> None:
        """BUILD, as CPython's ``load_build``: ``__setstate__`` if the object has
        one, else the instance dict (and slots, for a ``(dict, slots)`` pair)."""
        if id(obj) in self._records:
            parts = state if type(state) is tuple and len(state) == 2 else (state,)
            if not _merge_into_record(obj, [p for p in parts if p is not None]):
                obj["$state"] = state
            return
        setstate = getattr(obj, "__setstate__", None)
        if setstate is not None:
            setstate(state)
            return
        slots = None
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
        # Any state but None must be a dict, as CPython's UnpicklingError says
        # ("state is not a dictionary"); an object without an instance dict
        # fails on it as it does there.
        if state is not None:
            if not isinstance(state, dict):
                raise CheckpointError(
                    f"BUILD on {type(obj).__name__}: the state must be None or a dict, "
                    f"not {type(state).__name__}"
                )
            d = obj.__dict__
            for k, v in state.items():
                d[sys.intern(k) if type(k) is str else k] = v
        if slots is not None:
            if not isinstance(slots, dict):
                raise CheckpointError(
                    f"BUILD on {type(obj).__name__}: the slot state must be None or a dict, "
                    f"not {type(slots).__name__}"
                )
            for k, v in slots.items():
                setattr(obj, k, v)

    def set_items(self, obj: Any, pairs: list[tuple[Any, Any]]) -> None:
        """SETITEMS on an instance: ``__setitem__`` per pair."""
        if id(obj) in self._records:
            items = dict(pairs)
            if not _merge_into_record(obj, [items]):
                obj["$dictitems"] = items
            return
        for k, v in pairs:
            obj[k] = v

    def set_dict_state(self, obj: Any, state: Any) -> None:
        """BUILD on an OrderedDict (a state dict's ``_metadata``)."""
        dict_state, slots = state if isinstance(state, tuple) else (state, None)
        if dict_state:
            obj.__dict__.update(dict_state)
        if slots:
            for k, v in slots.items():
                setattr(obj, k, v)

    # -------------------------------------------------------------- numpy

    def np_dtype(self, spec: Any) -> Any:
        np = _np()
        try:
            if isinstance(spec, str):
                return np.dtype(spec)
            if spec[0] == "subarray":
                return np.dtype((self.np_dtype(spec[1]), tuple(spec[2])))
        except (TypeError, ValueError) as e:
            # Rust checked the description; numpy refusing it is a dtype its
            # unpickler would store but its constructor cannot make.
            raise CheckpointError(f"numpy cannot rebuild the dtype {spec!r}: {e}") from None
        _, fields, itemsize, aligned = spec
        desc: dict[str, Any] = {
            "names": [f[0] for f in fields],
            "formats": [self.np_dtype(f[1]) for f in fields],
            "offsets": [f[2] for f in fields],
            "itemsize": itemsize,
        }
        if any(f[3] is not None for f in fields):
            desc["titles"] = [f[3] for f in fields]
        try:
            return np.dtype(desc, align=aligned)
        except ValueError as e:
            # An aligned record whose offsets align=True cannot give: numpy's
            # unpickler keeps such a state as given, a dtype no numpy writes.
            raise CheckpointError(f"a record dtype numpy cannot rebuild as aligned: {e}") from None

    def np_array(
        self, dtype: Any, shape: list[int], fortran: bool, data: bytearray, readonly: bool = False
    ) -> Any:
        arr = _np().ndarray(shape, dtype=dtype, buffer=data, order="F" if fortran else "C")
        if readonly:
            arr.flags.writeable = False
        return arr

    def np_object_array(self, dtype: Any, shape: list[int], fortran: bool) -> Any:
        return _np().empty(shape, dtype=dtype, order="F" if fortran else "C")

    def fill_object_array(self, arr: Any, items: list[Any]) -> None:
        np = _np()
        flat = np.empty(len(items), dtype=object)
        for i, item in enumerate(items):
            flat[i] = item
        arr[...] = flat.reshape(arr.shape)

    def np_scalar(self, dtype: Any, data: bytes) -> Any:
        # ndarray(), not frombuffer(): a size-0 dtype (numpy.dtype("S")) is valid here.
        return _np().ndarray((), dtype=dtype, buffer=data)[()]

    # -------------------------------------------------------------- torch

    def torch_attr(self, name: str) -> Any:
        value = _tensors.torch_value(name)
        if value is None:
            if name not in _tensors.TORCH_NAMES:
                raise CheckpointError(f"torch.{name} is not a torch value hermetic builds")
            raise CheckpointError(f"this torch ({_torch().__version__}) has no torch.{name}")
        return value

    def torch_size(self, dims: list[int]) -> Any:
        return _torch().Size(dims)

    def torch_device(self, text: str) -> Any:
        return _torch().device(text)

    def _whole_file(self) -> Any:
        """The file as one uint8 tensor: a private map of it, or (for bytes) a copy."""
        if self._file is None:
            torch = _torch()
            if isinstance(self.source, (bytes, bytearray)):
                self._buffer = bytearray(self.source)
            else:
                self._buffer = _tensors.private_map(self.source)
            self._file = torch.frombuffer(self._buffer, dtype=torch.uint8)
        return self._file

    def _read(self, offset: int, nbytes: int) -> Any:
        """A new storage holding bytes offset..offset+nbytes of the file, read into it."""
        # storage() reads only from a path: bytes sources are sliced in memory instead.
        path = self.source
        assert isinstance(path, str)
        torch = _torch()
        st = torch.UntypedStorage(nbytes)
        out = torch.empty(0, dtype=torch.uint8).set_(st).numpy()
        if self._fd is None:
            self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        _tensors.read_exact(
            self._fd,
            offset,
            out,
            lambda at: CheckpointError(f"{path}: the file shrank while it was read (at byte {at})"),
        )
        return st

    def close(self) -> None:
        """Closes the descriptor copies were read through (tensors keep their data)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def storage(self, source: int | bytearray, nbytes: int, location: str, mappable: bool) -> Any:
        torch = _torch()
        in_memory = isinstance(self.source, (bytes, bytearray))
        if nbytes == 0:
            st = torch.UntypedStorage(0)
        elif isinstance(source, bytearray):
            st = torch.frombuffer(source, dtype=torch.uint8).untyped_storage()
        elif (mappable and self.mmap) or in_memory:
            # A slice of the file's storage: its own storage object, sharing memory.
            if self._storage is None:
                self._storage = self._whole_file().untyped_storage()
            st = self._storage[source : source + nbytes]
            if not mappable:
                # Legacy checkpoints do not align storages: a copy of its own.
                st = st.clone()
        else:
            # Copies (and legacy checkpoints, whose storages are not aligned):
            # each storage read into memory of its own, as torch.load does.
            st = self._read(source, nbytes)
        if self.map_location is None and location == "cpu":
            return st
        return self._restore(st, location)

    def _restore(self, storage: Any, location: str) -> Any:
        ml = self.map_location
        if ml is None:
            target: Any = location
        elif isinstance(ml, dict):
            target = ml.get(location, location)
        elif callable(ml):
            result = ml(storage, location)
            if result is not None:
                return result
            target = location
        else:
            target = ml
        torch = _torch()
        device = torch.device(target)
        if device.type == "cpu":
            return storage
        if device.type == "cuda":
            _check_cuda(torch, device)
        if device.type == "meta":
            return torch.UntypedStorage(storage.nbytes(), device="meta")
        return storage.to(device=device)

    def storage_view(self, storage: Any, byte_offset: int, nbytes: int) -> Any:
        return storage[byte_offset : byte_offset + nbytes]

    def typed_storage(self, storage: Any, dtype: str) -> Any:
        torch = _torch()
        return torch.storage.TypedStorage(
            wrap_storage=storage, dtype=self.torch_attr(dtype), _internal=True
        )

    def tensor(
        self,
        storage: Any,
        dtype: str,
        offset: int,
        shape: tuple[int, ...],
        stride: tuple[int, ...],
        requires_grad: bool,
        parameter: bool,
    ) -> Any:
        t = _tensors.on_storage(storage, self.torch_attr(dtype), offset, shape, stride)
        return _tensors.finish(t, parameter, requires_grad)

    def meta_tensor(
        self,
        dtype: str,
        shape: tuple[int, ...],
        stride: tuple[int, ...],
        requires_grad: bool,
        parameter: bool,
    ) -> Any:
        t = _torch().empty_strided(shape, stride, dtype=self.torch_attr(dtype), device="meta")
        return _tensors.finish(t, parameter, requires_grad)

    def tensor_metadata(self, t: Any, metadata: dict[str, bool]) -> None:
        _torch()._utils.set_tensor_metadata(t, metadata)

    def set_tensor_state(self, t: Any, state: Any) -> None:
        """Python attributes saved with a tensor (``torch._utils._set_obj_state``)."""
        dict_state, slots = state if isinstance(state, tuple) else (state, None)
        for part in (dict_state, slots):
            if part:
                for k, v in part.items():
                    setattr(t, k, v)


def _merge_into_record(record: dict[str, Any], parts: list[Any]) -> bool:
    """Merges plain dicts into a ``plain=True`` record when that loses
    nothing: every key a str not starting with ``$`` (so the file cannot
    forge the record's own ``$class``) and none already there. Otherwise the
    caller keeps the value whole under its ``$`` key."""
    seen: set[str] = set()
    for p in parts:
        if type(p) is not dict and (type(p) is not collections.OrderedDict or vars(p)):
            return False
        for k in p:
            if type(k) is not str or k.startswith("$") or k in record or k in seen:
                return False
            seen.add(k)
    for p in parts:
        record.update(p)
    return True


def _check_cuda(torch: Any, device: Any) -> None:
    """torch.load's own errors for a CUDA location this machine cannot serve."""
    if not torch.cuda.is_available():
        raise RuntimeError(
            "Attempting to deserialize object on a CUDA device but "
            "torch.cuda.is_available() is False. If you are running on a CPU-only "
            "machine, please use hermetic.torch.load with map_location="
            "torch.device('cpu') to map your storages to the CPU."
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise RuntimeError(
            f"Attempting to deserialize object on CUDA device {device.index} but "
            f"torch.cuda.device_count() is {count}. Please use hermetic.torch.load with "
            "map_location to map your storages to an existing device."
        )


def allowlist(allow: Iterable[Any] | None) -> _typed.Allow | None:
    """The ``allow=`` of the evaluator's loads: the syntax of ``hermetic.load``."""
    return None if allow is None else _typed.Allow(allow)


class _Everything:
    """``plain=True``: the evaluator may take every class the scanner merely
    does not know (as a record; dangerous imports are still refused in Rust)."""

    def permits(self, name: str) -> bool:
        return True


def trust(allow: _typed.Allow | None, plain: bool) -> Any:
    """What Rust asks about the file's classes."""
    return _Everything() if plain else allow


def _source(f: Any) -> str | bytes | bytearray:
    if isinstance(f, (bytes, bytearray)):
        return f
    if isinstance(f, memoryview):
        return f.tobytes()
    if isinstance(f, (str, os.PathLike)):
        # A path given as bytes (``PathLike[bytes]``) is still a path, not
        # the file's contents.
        return os.fsdecode(os.fspath(f))
    read = getattr(f, "read", None)
    if read is None:
        raise TypeError(f"expected a path, bytes or a binary file object, not {type(f).__name__}")
    data = read()
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError("the file object must be opened in binary mode")
    return data


def load_pickle(
    source: PathLike | bytes | bytearray | memoryview | IO[bytes],
    *,
    allow: Iterable[Any] | None = None,
    encoding: str = "ASCII",
    plain: bool = False,
) -> Any:
    """Load a data-only pickle without running it.

    ``source`` is a path or the file's bytes: a pickle of any protocol (0-5),
    a ``.npy`` or ``.npz`` file (like ``np.load``, object arrays too; an
    ``.npz`` comes back as a dict of arrays), or a PyTorch checkpoint. The
    result is made of ordinary Python, numpy (and torch) objects. A file that
    imports anything outside hermetic's data allowlist raises
    :class:`UnsafePickleError` naming every offending import (``.imports``);
    nothing from the file is imported or called, ever.

    ``allow=[Config, "mypkg.models:*", "torch._C._nn:gelu"]`` trusts the
    classes and functions it names, with the syntax of ``hermetic.load``: a
    file that needs them is rebuilt as CPython's unpickler would (``__new__``
    for NEWOBJ, ``__setstate__`` or the instance dict for BUILD, the callable
    of a REDUCE only when it is itself allowed). Their own code then runs, as
    it would under ``pickle.load``; nothing else in the file is imported or
    called, and a dangerous import (``os.system``) is refused whatever
    ``allow`` says.

    ``encoding`` is ``pickle.load``'s, for the ``str`` of Python 2 pickles:
    ``"ASCII"`` (the default), ``"utf-8"``, ``"latin1"`` (what numpy arrays
    pickled by Python 2 need) or ``"bytes"``.

    ``plain=True`` reads a file whose classes you do not have or do not
    trust: each object of a class outside ``allow=`` comes back as a dict
    ``{"$class": "module:qualname", ...its state}`` (with ``"$args"``,
    ``"$items"``, ``"$dictitems"`` or ``"$state"`` where the pickle gave
    those and they do not merge), and a class used as a value as
    ``{"$callable": "module:qualname"}``, as hermetic files spell it.
    Nothing is imported or called for them; dangerous imports are still
    refused.
    """
    return _load_pickle(source, allow, encoding, plain, companions=False)


def _load_pickle(
    source: PathLike | bytes | bytearray | memoryview | IO[bytes],
    allow: Iterable[Any] | None,
    encoding: str,
    plain: bool,
    *,
    companions: bool,
) -> Any:
    """``load_pickle``; ``companions`` reads the array files beside an old
    joblib dump, as ``joblib.load`` (not ``pickle.load``) does."""
    src = _source(source)
    trusted = allowlist(allow)
    maker = Maker(src, mmap=False, allow=trusted, plain=plain)
    try:
        _, obj = _hermetic.evaluate(
            src, "any", maker, trust(trusted, plain), encoding, companions=companions
        )
    finally:
        maker.close()
    return obj
