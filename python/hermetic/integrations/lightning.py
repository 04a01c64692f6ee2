"""Lightning checkpoints without pickle.

:class:`HermeticCheckpointIO` is a Lightning ``CheckpointIO`` plugin. With
``Trainer(plugins=[HermeticCheckpointIO()])`` every checkpoint the trainer
writes (``ModelCheckpoint``, ``trainer.save_checkpoint``) is a hermetic file: a
safetensors file whose tree holds the whole training state (the model's state
dict, optimizer and LR scheduler states, callbacks' and loops' states,
hyperparameters, what ``on_save_checkpoint`` hooks add). Resuming with
``trainer.fit(model, ckpt_path=...)`` reads it back without unpickling anything;
so does :func:`load_from_checkpoint`, the safe replacement of
``LightningModule.load_from_checkpoint``, which also reads the torch-pickle
``.ckpt`` files Lightning's default ``TorchCheckpointIO`` writes (through
:func:`hermetic.torch.load`, which never runs them), so a project can switch
without re-saving its checkpoints.

What hermetic's tree cannot hold natively is stored as two small records of
this module and rebuilt on load: an OmegaConf ``DictConfig`` / ``ListConfig``
(:class:`OmegaConfNode`) and Lightning's ``AttributeDict``
(:class:`AttributeDictNode`). Anything else the format cannot represent (a
lambda or an arbitrary object in a callback's state, say) makes the save fail
with a :class:`hermetic.FormatError` naming its place in the checkpoint
(``tree["callbacks"]["MyCallback"]["fn"]``); nothing is ever dropped or
pickled.

This module needs Lightning (``pip install 'hermetic[lightning]'``) and imports
it when it is imported; ``import hermetic`` never does.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from hermetic import _format
from hermetic import torch as _htorch
from hermetic._hermetic import FormatError

try:
    import torch
    from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
    from lightning.fabric.utilities.data import AttributeDict
except ImportError as e:  # pragma: no cover - only without the extra
    raise ImportError(
        "hermetic.integrations.lightning needs Lightning: pip install 'hermetic[lightning]'"
    ) from e

if TYPE_CHECKING:
    from lightning.pytorch import LightningDataModule, LightningModule

__all__ = [
    "AttributeDictNode",
    "HermeticCheckpointIO",
    "OmegaConfNode",
    "load_checkpoint",
    "load_from_checkpoint",
    "pickle_allow",
    "save_checkpoint",
]

PathLike = str | os.PathLike[str]
_T = TypeVar("_T", bound="LightningModule | LightningDataModule")

# The metadata every checkpoint written here carries (safetensors' __metadata__).
METADATA_KEY = "hermetic.integration"


# ------------------------------------------------------------------ records


@dataclass(frozen=True)
class OmegaConfNode:
    """An OmegaConf ``DictConfig`` or ``ListConfig`` as a checkpoint stores it.

    ``kind`` is the class name, ``content`` is
    ``OmegaConf.to_container(cfg, resolve=False)`` (interpolations stay
    ``"${...}"`` strings and are live again after loading, missing values stay
    ``"???"``), ``struct`` and ``readonly`` are the root's flags. A structured
    config (one backed by a dataclass) comes back as a plain ``DictConfig``
    with the same values. The file records it as
    ``hermetic.integrations.lightning:OmegaConfNode``; ``hermetic.load(path,
    plain=True)`` reads it without this module.
    """

    kind: str
    content: Any
    struct: bool = False
    readonly: bool = False


@dataclass(frozen=True)
class AttributeDictNode:
    """A Lightning ``AttributeDict`` (a ``dict`` subclass, which hermetic does
    not store as such) as a checkpoint stores it: its items."""

    items: dict[Any, Any]


# ------------------------------------------------------------------ tree rewriting


def _rewrite(obj: Any, special: Callable[[Any], Any], memo: dict[int, Any]) -> Any:
    """``obj`` with ``special`` applied to every value it does not return
    ``_KEEP`` for, copying only the containers (dict, OrderedDict, list, tuple)
    on the way to a changed value: untouched subtrees stay the very same
    objects, so shared tensors and containers stay shared and a state dict's
    ``_metadata`` stays where it is."""
    key = id(obj)
    if key in memo:
        return memo[key]
    got = special(obj)
    if got is not _KEEP:
        memo[key] = got
        return got
    t = type(obj)
    if t is dict or t is OrderedDict:
        memo[key] = obj  # a cycle back to an open container keeps the original
        items = [(k, _rewrite(v, special, memo)) for k, v in obj.items()]
        if all(v is obj[k] for k, v in items):
            return obj
        new = t(items)
        if t is OrderedDict:
            new.__dict__.update(obj.__dict__)
        memo[key] = new
        return new
    if t is list or t is tuple:
        memo[key] = obj
        vals = [_rewrite(v, special, memo) for v in obj]
        if all(a is b for a, b in zip(vals, obj, strict=True)):
            return obj
        out = t(vals)
        memo[key] = out
        return out
    return obj


_KEEP = object()
_ATTRIBUTE_DICTS = {
    "lightning.fabric.utilities.data",
    "lightning_fabric.utilities.data",
}


def _is_attribute_dict(obj: Any) -> bool:
    t = type(obj)
    return t.__name__ == "AttributeDict" and t.__module__ in _ATTRIBUTE_DICTS


def _encode(checkpoint: Any) -> Any:
    # A DictConfig in a checkpoint means omegaconf is already imported.
    oc = sys.modules.get("omegaconf")
    container = getattr(oc, "Container", None)
    memo: dict[int, Any] = {}

    def special(obj: Any) -> Any:
        if container is not None and isinstance(obj, container):
            assert oc is not None
            conf = oc.OmegaConf
            content = conf.to_container(obj, resolve=False)
            return OmegaConfNode(
                kind=type(obj).__name__,
                content=_rewrite(content, special, memo),
                struct=bool(conf.is_struct(obj)),
                readonly=bool(conf.is_readonly(obj)),
            )
        if _is_attribute_dict(obj):
            return AttributeDictNode({k: _rewrite(v, special, memo) for k, v in obj.items()})
        return _KEEP

    return _rewrite(checkpoint, special, memo)


def _decode(tree: Any) -> Any:
    memo: dict[int, Any] = {}

    def special(obj: Any) -> Any:
        if isinstance(obj, OmegaConfNode):
            return _omegaconf(obj, _rewrite(obj.content, special, memo))
        if isinstance(obj, AttributeDictNode):
            return AttributeDict({k: _rewrite(v, special, memo) for k, v in obj.items.items()})
        return _KEEP

    return _rewrite(tree, special, memo)


def _omegaconf(node: OmegaConfNode, content: Any) -> Any:
    try:
        from omegaconf import OmegaConf
    except ImportError as e:
        raise ImportError(
            f"the checkpoint holds an OmegaConf {node.kind}: install omegaconf to load it"
        ) from e
    if node.kind not in ("DictConfig", "ListConfig"):
        raise FormatError(f"OmegaConfNode of kind {node.kind!r}: expected DictConfig or ListConfig")
    cfg = OmegaConf.create(content)
    if type(cfg).__name__ != node.kind:
        raise FormatError(f"OmegaConfNode of kind {node.kind} holds a {type(content).__name__}")
    if node.struct:
        OmegaConf.set_struct(cfg, True)
    if node.readonly:
        OmegaConf.set_readonly(cfg, True)
    return cfg


# ------------------------------------------------------------------ allowlists


def _format_allow(allow: Iterable[Any] | None) -> list[Any]:
    """What a hermetic checkpoint of this module may name: its two records and
    OmegaConf's container classes (``hparams_type``, which Lightning sets to
    the class of ``DictConfig`` hyperparameters, by reference)."""
    out: list[Any] = [OmegaConfNode, AttributeDictNode]
    try:
        from omegaconf import DictConfig, ListConfig
    except ImportError:
        pass
    else:
        out += [DictConfig, ListConfig]
    return out + list(allow or ())


def pickle_allow() -> list[Any]:
    """The classes Lightning's default ``TorchCheckpointIO`` puts in a ``.ckpt``
    pickle beyond plain data, which :func:`load_checkpoint` trusts there:
    ``AttributeDict`` and, when omegaconf is installed, OmegaConf's containers,
    their metadata and value nodes (``DictConfig`` hyperparameters), and
    ``typing.Any`` (the key and element type their metadata records). Trusting
    them means their own ``__setstate__`` runs, as under ``torch.load``."""
    out: list[Any] = [AttributeDict, "typing:Any"]
    try:
        import omegaconf
        from omegaconf import base, nodes
    except ImportError:
        return out
    out += [omegaconf.DictConfig, omegaconf.ListConfig, base.ContainerMetadata, base.Metadata]
    out += [
        v
        for v in vars(nodes).values()
        if isinstance(v, type) and issubclass(v, base.Node) and v.__module__ == nodes.__name__
    ]
    return out


# ------------------------------------------------------------------ files


def _local(path: PathLike) -> str:
    p = os.fspath(path)
    if p.startswith("file://"):
        p = p[len("file://") :]
    elif "://" in p:
        raise ValueError(
            f"{p}: hermetic's Lightning checkpoints are local files or folders, not URLs "
            "(save locally and upload, or keep TorchCheckpointIO for remote storage)"
        )
    return p


def is_hermetic_file(path: PathLike) -> bool:
    """Whether ``path`` is a hermetic/safetensors file (or a sharded folder),
    judged by its first bytes; otherwise it is taken for a torch pickle."""
    p = _local(path)
    if os.path.isdir(p):
        return True
    with open(p, "rb") as f:
        head = f.read(9)
    # safetensors: an 8-byte little-endian header length, then the JSON header.
    return len(head) == 9 and head[8:9] == b"{"


def save_checkpoint(
    checkpoint: Mapping[str, Any],
    path: PathLike,
    *,
    metadata: Mapping[str, str] | None = None,
    max_shard_size: int | str | None = None,
    fsync: bool = False,
) -> None:
    """Save a Lightning checkpoint dict (what ``Trainer.save_checkpoint`` hands
    its ``CheckpointIO``) to ``path`` as a hermetic file.

    OmegaConf containers and ``AttributeDict`` anywhere in it are stored as
    :class:`OmegaConfNode` / :class:`AttributeDictNode`; everything else as
    :func:`hermetic.save` stores it. What it cannot store raises
    :class:`hermetic.FormatError` naming its place, and leaves any earlier file
    at ``path`` intact (the save is atomic; ``fsync=True`` also makes it
    durable). ``max_shard_size`` makes ``path`` a folder of shards.
    """
    p = _local(path)
    md = {METADATA_KEY: "lightning"}
    version = checkpoint.get("pytorch-lightning_version")
    if isinstance(version, str):
        md["pytorch-lightning_version"] = version
    md.update(metadata or {})
    tree = _encode(dict(checkpoint))
    try:
        _format.save(tree, p, metadata=md, max_shard_size=max_shard_size, fsync=fsync)
    except FormatError as e:
        raise FormatError(f"cannot save the Lightning checkpoint {p}: {e}") from e


def _device(map_location: Any) -> Any:
    if map_location is None or isinstance(map_location, (str, torch.device)):
        return map_location
    raise TypeError(
        "a hermetic checkpoint loads onto one device: map_location must be None (the CPU), a "
        f"str or a torch.device, not {type(map_location).__name__}"
    )


def load_checkpoint(
    path: PathLike,
    map_location: Any = None,
    *,
    allow: Iterable[Any] | None = None,
    mmap: bool = False,
) -> dict[str, Any]:
    """Read a Lightning checkpoint without unpickling anything.

    A hermetic file (what :class:`HermeticCheckpointIO` writes) is loaded with
    :func:`hermetic.load`, its OmegaConf and ``AttributeDict`` records rebuilt;
    tensors land on the CPU, or on ``map_location`` (a device or a string).
    Anything else is taken for a torch pickle (what Lightning's default
    ``TorchCheckpointIO`` writes) and read by :func:`hermetic.torch.load`,
    which trusts :func:`pickle_allow`'s classes; ``map_location`` then takes
    every form ``torch.load``'s does.

    ``allow=`` adds classes and functions the checkpoint may name (your own
    dataclasses or enums in hyperparameters, a pickled config class), with the
    syntax of :func:`hermetic.load`. With ``mmap=True`` the tensors of a
    hermetic file are zero-copy views of a private copy-on-write map of it
    (faster, but a program that truncates the file in place while they live
    makes them fault); the default reads them into memory of their own, as a
    resumed optimizer state that outlives the file needs.
    """
    p = _local(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"Checkpoint file not found: {p}")
    if is_hermetic_file(p):
        tree = _format.load(p, allow=_format_allow(allow), device=_device(map_location), mmap=mmap)
        if not isinstance(tree, dict):
            raise FormatError(f"{p}: a Lightning checkpoint is a dict, not {type(tree).__name__}")
        out = _decode(tree)
        assert isinstance(out, dict)
        return out
    obj = _htorch.load(p, map_location=map_location, allow=pickle_allow() + list(allow or ()))
    if not isinstance(obj, dict):
        raise TypeError(f"{p}: a Lightning checkpoint is a dict, not {type(obj).__name__}")
    return obj


# ------------------------------------------------------------------ the plugin


class HermeticCheckpointIO(CheckpointIO):
    """A Lightning ``CheckpointIO`` that saves and loads whole checkpoints in
    hermetic's format: no pickle when saving, nothing run when loading.

    ::

        trainer = Trainer(plugins=[HermeticCheckpointIO()], callbacks=[ModelCheckpoint()])
        trainer.fit(model)                           # every .ckpt is a hermetic file
        trainer.fit(model, ckpt_path="last.ckpt")    # resumes without torch.load

    ``load_checkpoint`` also reads torch-pickle checkpoints written by
    Lightning's default ``TorchCheckpointIO`` (see :func:`load_checkpoint`), so
    a run saved before switching resumes after it. ``allow=`` is passed to
    every load, ``mmap`` to hermetic files' loads; ``fsync``, ``metadata`` and
    ``max_shard_size`` to every save (:func:`save_checkpoint`). Paths are local
    files (or folders, with ``max_shard_size``); URLs are refused.
    """

    def __init__(
        self,
        *,
        allow: Iterable[Any] | None = None,
        mmap: bool = False,
        fsync: bool = False,
        metadata: Mapping[str, str] | None = None,
        max_shard_size: int | str | None = None,
    ) -> None:
        super().__init__()
        self.allow = list(allow or ())
        self.mmap = mmap
        self.fsync = fsync
        self.metadata = dict(metadata or {})
        self.max_shard_size = max_shard_size

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: PathLike, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` with :func:`save_checkpoint`."""
        if storage_options is not None:
            raise TypeError(
                "HermeticCheckpointIO takes no storage_options (got "
                f"{storage_options!r}); pass fsync=, metadata= or max_shard_size= to "
                "HermeticCheckpointIO(...) instead"
            )
        save_checkpoint(
            checkpoint,
            path,
            metadata=self.metadata,
            max_shard_size=self.max_shard_size,
            fsync=self.fsync,
        )

    def load_checkpoint(
        self, path: PathLike, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Read ``path`` with :func:`load_checkpoint`. ``weights_only`` is
        accepted and has no effect: nothing in the file ever runs."""
        del weights_only
        return load_checkpoint(path, map_location, allow=self.allow, mmap=self.mmap)

    def remove_checkpoint(self, path: PathLike) -> None:
        """Delete the checkpoint file (or sharded folder) at ``path``, if any."""
        p = _local(path)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        elif os.path.lexists(p):
            os.remove(p)


# ------------------------------------------------------------------ load_from_checkpoint


def load_from_checkpoint(
    cls: type[_T],
    checkpoint_path: PathLike,
    map_location: Any = None,
    strict: bool | None = None,
    *,
    allow: Iterable[Any] | None = None,
    mmap: bool = False,
    **kwargs: Any,
) -> _T:
    """``cls.load_from_checkpoint(checkpoint_path, ...)`` without ``torch.load``.

    ``cls`` is a ``LightningModule`` (or ``LightningDataModule``) subclass. The
    checkpoint is read with :func:`load_checkpoint` (a hermetic file, or a
    torch-pickle ``.ckpt`` from Lightning's default ``TorchCheckpointIO``), then
    handed to Lightning's own restore: the stored hyperparameters (updated by
    ``kwargs``, which take priority) build ``cls``, ``on_load_checkpoint`` runs,
    and the state dict is loaded (``strict`` as in Lightning). The module is
    moved to the device of the loaded tensors: those of a hermetic file are on
    the CPU unless ``map_location`` names a device; a torch pickle follows
    Lightning's rule (saved devices, CUDA/MPS mapped to the CPU where absent)
    unless ``map_location`` says otherwise. ``hparams_file`` is not supported:
    pass overrides as keyword arguments. ``allow`` and ``mmap`` are as in
    :func:`load_checkpoint`.

    ::

        model = load_from_checkpoint(MyModel, "epoch=3-step=400.ckpt", map_location="cpu")
    """
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.core.saving import _default_map_location, _load_state
    from lightning.pytorch.utilities.migration import migrate_checkpoint

    p = _local(checkpoint_path)
    if map_location is None and os.path.isfile(p) and not is_hermetic_file(p):
        map_location = _default_map_location
    checkpoint = load_checkpoint(p, map_location, allow=allow, mmap=mmap)
    checkpoint, _ = migrate_checkpoint(checkpoint)
    checkpoint.setdefault(cls.CHECKPOINT_HYPER_PARAMS_KEY, {})
    checkpoint[cls.CHECKPOINT_HYPER_PARAMS_KEY].update(kwargs)
    if issubclass(cls, LightningDataModule):
        return _load_state(cls, checkpoint, **kwargs)  # type: ignore[return-value]
    if not issubclass(cls, LightningModule):
        raise TypeError(f"{cls!r} is not a LightningModule or LightningDataModule subclass")
    model = _load_state(cls, checkpoint, strict=strict, **kwargs)
    assert isinstance(model, LightningModule)
    state_dict = checkpoint.get("state_dict") or {}
    tensor = next((t for t in state_dict.values() if isinstance(t, torch.Tensor)), None)
    if tensor is not None:
        model = model.to(tensor.device)
    return model  # type: ignore[return-value]
