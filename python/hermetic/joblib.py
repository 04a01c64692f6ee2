"""``hermetic.joblib.load``: a drop-in for ``joblib.load`` that never runs the file.

joblib dumps are pickles whose numpy arrays follow their ``NumpyArrayWrapper``
placeholders as raw bytes, often inside a compressed layer (zlib, gzip, bz2, lzma,
xz, lz4). The scanner and the Rust evaluator read them as ``joblib.load`` does;
arrays come back as numpy arrays in memory of their own. joblib is never imported.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import IO, Any

from hermetic._evaluate import _load_pickle

__all__ = ["load"]


def load(
    filename: str | os.PathLike[str] | IO[bytes] | bytes,
    mmap_mode: str | None = None,
    ensure_native_byte_order: bool | str = "auto",
    *,
    allow: Iterable[Any] | None = None,
    plain: bool = False,
) -> Any:
    """Load a joblib dump (or any pickle ``hermetic.load_pickle`` reads) without
    unpickling it: the values ``joblib.load`` returns, numpy arrays included.

    Estimators and other classes load only when ``allow=`` names them (the
    syntax of ``hermetic.torch.load``): trusting scikit-learn's classes means
    their ``__setstate__`` runs, as it would under ``joblib.load``, but nothing
    the file names beyond the list is imported or called.

    Dumps of joblib < 0.10 keep their arrays in companion files beside the
    dump (``model.pkl_01.npy``, ``model.pkl_01.npy.z``); given a path, those
    are read as joblib reads them, numeric arrays only (an object array there
    would be unpickled by joblib) and only plain names in the dump's folder.

    ``mmap_mode`` other than ``None`` is refused (arrays are read into memory).
    Arrays are returned in the machine's byte order, swapped where the file
    holds big-endian ones, as joblib's default does.
    """
    if mmap_mode is not None:
        raise ValueError(
            "hermetic.joblib.load reads arrays into memory; mmap_mode is not supported"
        )
    if ensure_native_byte_order not in ("auto", True):
        raise ValueError(
            "hermetic.joblib.load returns native-byte-order arrays only "
            "(ensure_native_byte_order='auto' or True)"
        )
    return _load_pickle(filename, allow, "ASCII", plain, companions=True)
