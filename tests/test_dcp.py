"""hermetic.dcp.Writer / Reader: torch.distributed.checkpoint with no pickle anywhere.

Single-process saves and loads (model + optimizer state dicts, non-tensor values,
classes behind ``allow=``), the metadata document, crash safety (a save that fails
or is killed before the metadata is written never loads), hostile metadata, DCP's
own pickle reader refused by the firewall with a hint, and 2- and 4-rank FSDP2 /
DTensor saves on CPU with gloo, loaded on 1, 2 and 4 ranks (resharding), and a
2-rank FSDP2 + Adam run resumed from a checkpoint whose losses are bit for bit the
uninterrupted run's, with every pickle and torch.load/torch.save entry point raising
inside the ranks.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import hermetic

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():  # pragma: no cover - builds without distributed
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import torch.distributed.checkpoint as dcp  # noqa: E402
from torch.distributed.checkpoint._traverse import set_element  # noqa: E402
from torch.distributed.checkpoint.default_planner import (  # noqa: E402
    DefaultLoadPlanner,
    DefaultSavePlanner,
)
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict  # noqa: E402

import hermetic.dcp  # noqa: E402
from hermetic.dcp import _storage  # noqa: E402

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_dcp_worker.py"

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@dataclasses.dataclass
class RunConfig:
    name: str
    layers: tuple[int, ...]


def _model(seed: int) -> Any:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def _trained(seed: int) -> tuple[Any, Any]:
    m = _model(seed)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2 * (seed + 1))
    torch.manual_seed(seed + 10)
    m(torch.randn(5, 4)).pow(2).sum().backward()
    opt.step()
    opt.zero_grad()
    return m, opt


def _state(seed: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    m, opt = _trained(seed)
    msd, osd = get_state_dict(m, opt)
    out: dict[str, Any] = {"model": msd, "optim": osd}
    if extra is not None:
        out["extra"] = extra
    return out


EXTRA = {"epoch": 3, "name": "run-1", "loss": float("inf"), "shape": (2, 3), "flags": [True, None]}
BLANK = {"epoch": 0, "name": "", "loss": 0.0, "shape": (0,), "flags": []}


def _same(a: Any, b: Any, where: str = "state") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, sorted(a), sorted(b))
        for k in a:
            _same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and a != a:
        assert isinstance(b, float) and b != b, where
    else:
        assert type(a) is type(b) and a == b, (where, a, b)


@pytest.fixture()
def no_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pickle and torch serialisation entry point raises."""

    def refuse(name: str) -> Any:
        def f(*args: object, **kwargs: object) -> None:
            raise AssertionError(f"{name} was called")

        return f

    for mod, name in [
        (pickle, "load"),
        (pickle, "loads"),
        (pickle, "dump"),
        (pickle, "dumps"),
        (torch, "load"),
        (torch, "save"),
    ]:
        monkeypatch.setattr(mod, name, refuse(f"{mod.__name__}.{name}"))


# ------------------------------------------------------------------ one process


def test_model_and_optimizer_round_trip(tmp_path: Path, no_pickle: None) -> None:
    saved = _state(0, dict(EXTRA))
    md = dcp.save(saved, storage_writer=hermetic.dcp.Writer(tmp_path / "ck"))
    assert sorted(os.listdir(tmp_path / "ck")) == [
        ".metadata.json",
        "__0_objects.safetensors",
        "__0_tensors.safetensors",
    ]
    m, opt = _trained(5)  # other values everywhere
    msd, osd = get_state_dict(m, opt)
    loaded = {"model": msd, "optim": osd, "extra": dict(BLANK)}
    dcp.load(loaded, storage_reader=hermetic.dcp.Reader(tmp_path / "ck"))
    _same(saved, loaded)
    set_state_dict(m, opt, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"])
    _same(saved["model"], get_state_dict(m, opt)[0])
    assert md.storage_meta is not None and md.storage_meta.save_id


def test_metadata_document_rebuilds_the_dataclasses(tmp_path: Path) -> None:
    saved = _state(1, dict(EXTRA))
    md = dcp.save(saved, storage_writer=hermetic.dcp.Writer(tmp_path))
    doc = json.loads((tmp_path / ".metadata.json").read_text())
    assert doc["format"] == "hermetic-dcp" and doc["format_version"] == 1
    assert doc["version"] == md.version
    assert set(doc["files"]) == {"__0_tensors.safetensors", "__0_objects.safetensors"}
    for name, size in doc["files"].items():
        assert (tmp_path / name).stat().st_size == size
    assert doc["state_dict_metadata"]["extra.epoch"] == {"type": "bytes"}
    w = doc["state_dict_metadata"]["model.0.weight"]
    assert w["size"] == [8, 4] and w["properties"]["dtype"] == "float32"
    assert w["chunks"] == [{"offsets": [0, 0], "sizes": [8, 4]}]
    # DefaultSavePlanner's flattening map: tuples survive the JSON.
    assert doc["planner_data"]["extra.shape"] == {"$tuple": ["extra", "shape"]}

    reader = hermetic.dcp.Reader(tmp_path)
    back = reader.read_metadata()
    assert back.state_dict_metadata == md.state_dict_metadata
    assert back.planner_data == md.planner_data
    assert back.version == md.version
    assert set(back.storage_data) == set(md.storage_data)
    assert back.storage_meta is not None and md.storage_meta is not None
    assert back.storage_meta.save_id == md.storage_meta.save_id
    assert back.storage_meta.checkpoint_id == os.fspath(tmp_path)
    assert back.storage_meta.load_id == reader.load_id
    # Every file is a hermetic/safetensors file or JSON: nothing to unpickle.
    for r in hermetic.scan(tmp_path, include_clean=True):
        assert r.verdict == "safe" and not r.has_pickle, r


@pytest.mark.parametrize("kind", [str, Path])
def test_checkpoint_id_str_or_pathlike(tmp_path: Path, kind: Any) -> None:
    saved = _state(2)
    target = kind(tmp_path / "by-id")
    dcp.save(saved, checkpoint_id=target, storage_writer=hermetic.dcp.Writer(tmp_path / "x"))
    assert (tmp_path / "by-id" / ".metadata.json").is_file()
    assert not (tmp_path / "x").exists()
    loaded = _state(3)
    dcp.load(loaded, checkpoint_id=target, storage_reader=hermetic.dcp.Reader(tmp_path / "y"))
    _same(saved, loaded)
    assert hermetic.dcp.Reader.validate_checkpoint_id(target)
    assert not hermetic.dcp.Reader.validate_checkpoint_id(tmp_path / "x")
    assert hermetic.dcp.Writer.validate_checkpoint_id(target)
    assert not hermetic.dcp.Writer.validate_checkpoint_id("s3://bucket/ckpt")


def test_classes_need_allow(tmp_path: Path) -> None:
    cfg = RunConfig("base", (4, 8, 3))
    dcp.save({"w": torch.ones(3), "cfg": cfg}, storage_writer=hermetic.dcp.Writer(tmp_path))
    state: dict[str, Any] = {"w": torch.zeros(3), "cfg": None}
    with pytest.raises(BaseException, match="RunConfig") as e:
        dcp.load(state, storage_reader=hermetic.dcp.Reader(tmp_path))
    assert "allow" in str(e.value)
    dcp.load(state, storage_reader=hermetic.dcp.Reader(tmp_path, allow=[RunConfig]))
    assert state["cfg"] == cfg and torch.equal(state["w"], torch.ones(3))
    plain: dict[str, Any] = {"w": torch.zeros(3), "cfg": None}
    dcp.load(plain, storage_reader=hermetic.dcp.Reader(tmp_path, plain=True))
    assert plain["cfg"]["name"] == "base" and plain["cfg"]["$class"].endswith(":RunConfig")


def test_sharded_chunks_and_views_are_stored_contiguous(tmp_path: Path) -> None:
    base = torch.arange(60, dtype=torch.int32).reshape(6, 10)
    state = {
        "t": base.t(),  # not contiguous
        "narrow": base[2:4],  # a view into a larger storage
        "scalar": torch.tensor(2.5, dtype=torch.bfloat16),
        "tied_a": base,
        "tied_b": base,
    }
    dcp.save(state, storage_writer=hermetic.dcp.Writer(tmp_path))
    with hermetic.open(tmp_path / "__0_tensors.safetensors") as h:
        infos = h.tree
        assert infos["narrow"].nbytes == 2 * 10 * 4  # only its own bytes
    out = {k: torch.zeros_like(v) for k, v in state.items()}
    dcp.load(out, storage_reader=hermetic.dcp.Reader(tmp_path, verify=True))
    for k in state:
        _same(state[k].contiguous(), out[k], k)


# ------------------------------------------------------------------ planners


class JsonSavePlanner(DefaultSavePlanner):
    """A planner with its own (pickle-free) bytes for non-tensor values."""

    def transform_object(self, write_item: Any, object: Any) -> Any:
        if write_item.type.name == "BYTE_IO":
            return io.BytesIO(json.dumps(object).encode())
        return object


class JsonLoadPlanner(DefaultLoadPlanner):
    def load_bytes(self, read_item: Any, value: Any) -> None:
        path = self.mappings[read_item.dest_index.fqn]
        set_element(self.original_state_dict, path, json.loads(value.getvalue()))


class PickleSavePlanner(DefaultSavePlanner):
    def transform_object(self, write_item: Any, object: Any) -> Any:
        return super().transform_object(write_item, object)  # torch.save


class SeeingLoadPlanner(DefaultLoadPlanner):
    seen: list[Any]

    def load_bytes(self, read_item: Any, value: Any) -> None:
        self.seen = [*getattr(self, "seen", []), value]
        assert isinstance(value, hermetic.dcp.ObjectBytesIO)
        assert hermetic.loads(value.getvalue()) == value.object
        path = self.mappings[read_item.dest_index.fqn]
        set_element(self.original_state_dict, path, value.object)


def test_a_planners_own_bytes_round_trip_verbatim(tmp_path: Path) -> None:
    state = {"w": torch.ones(2), "meta": {"k": [1, 2]}}
    dcp.save(
        state,
        storage_writer=hermetic.dcp.Writer(tmp_path),
        planner=JsonSavePlanner(),
    )
    out: dict[str, Any] = {"w": torch.zeros(2), "meta": {"k": None}}
    dcp.load(
        out,
        storage_reader=hermetic.dcp.Reader(tmp_path),
        planner=JsonLoadPlanner(),
    )
    assert out["meta"] == {"k": [1, 2]}
    # The default planner would torch.load those bytes: refused instead.
    with pytest.raises(BaseException, match="torch.load them"):
        dcp.load(
            {"w": torch.zeros(2), "meta": {"k": None}},
            storage_reader=hermetic.dcp.Reader(tmp_path),
            planner=DefaultLoadPlanner(),
        )


def test_a_planner_that_pickles_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BaseException, match="never stores pickles"):
        dcp.save(
            {"w": torch.ones(2), "n": 3},
            storage_writer=hermetic.dcp.Writer(tmp_path),
            planner=PickleSavePlanner(),
        )
    assert not (tmp_path / ".metadata.json").exists()


def test_a_load_planner_overriding_load_bytes_gets_the_object(tmp_path: Path) -> None:
    dcp.save({"w": torch.ones(2), "n": {"a": 1}}, storage_writer=hermetic.dcp.Writer(tmp_path))
    planner = SeeingLoadPlanner()
    out: dict[str, Any] = {"w": torch.zeros(2), "n": {"a": None}}
    dcp.load(out, storage_reader=hermetic.dcp.Reader(tmp_path), planner=planner)
    assert out["n"] == {"a": 1} and len(planner.seen) == 1


# ------------------------------------------------------------------ crash safety


def _refused(folder: Path, match: str) -> None:
    """The reader refuses the folder, and so does dcp.load (whose message holds the
    reader's since torch 2.12; older versions log it and raise "metadata is None")."""
    with pytest.raises(hermetic.FormatError, match=match):
        hermetic.dcp.Reader(folder).read_metadata()
    with pytest.raises(BaseException) as e:
        dcp.load(_state(9), storage_reader=hermetic.dcp.Reader(folder))
    assert "metadata" in str(e.value)


def test_a_save_that_fails_before_finish_never_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(_storage, "_write_atomic", fail)
    with pytest.raises(BaseException, match="disk full"):
        dcp.save(_state(0), storage_writer=hermetic.dcp.Writer(tmp_path))
    assert (tmp_path / "__0_tensors.safetensors").is_file()  # the shards are there ...
    _refused(tmp_path, "not a complete hermetic DCP checkpoint")  # ... and never load


def test_a_failed_overwrite_never_loads_a_mix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dcp.save(_state(0), storage_writer=hermetic.dcp.Writer(tmp_path))
    with pytest.raises(BaseException, match="overwrite=False"):
        dcp.save(_state(1), storage_writer=hermetic.dcp.Writer(tmp_path, overwrite=False))
    dcp.load(_state(2), storage_reader=hermetic.dcp.Reader(tmp_path))  # still intact

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("killed (simulated)")

    monkeypatch.setattr(_storage, "_write_atomic", fail)
    with pytest.raises(BaseException, match="killed"):
        dcp.save(_state(1), storage_writer=hermetic.dcp.Writer(tmp_path))
    _refused(tmp_path, "not a complete hermetic DCP checkpoint")


def test_a_save_killed_midway_never_loads(tmp_path: Path) -> None:
    # The process dies (SIGKILL) right after its first shard file is in place.
    code = textwrap.dedent(
        f"""
        import os, signal, torch, torch.distributed.checkpoint as dcp
        import hermetic.dcp
        from hermetic import _format
        real = _format.save
        def save(*a, **k):
            real(*a, **k)
            os.kill(os.getpid(), signal.SIGKILL)
        _format.save = save
        writer = hermetic.dcp.Writer({str(tmp_path)!r})
        dcp.save({{"w": torch.ones(4), "n": 1}}, storage_writer=writer)
        """
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert (tmp_path / "__0_tensors.safetensors").is_file()
    with pytest.raises(hermetic.FormatError, match="not a complete hermetic DCP checkpoint"):
        hermetic.dcp.Reader(tmp_path).read_metadata()
    with pytest.raises(BaseException, match="metadata"):
        dcp.load({"w": torch.zeros(4), "n": 0}, storage_reader=hermetic.dcp.Reader(tmp_path))


def test_missing_or_changed_shards_are_refused(tmp_path: Path) -> None:
    dcp.save(_state(0), storage_writer=hermetic.dcp.Writer(tmp_path))
    shard = tmp_path / "__0_tensors.safetensors"
    with open(shard, "ab") as f:
        f.write(b"\0")
    _refused(tmp_path, "says")
    shard.unlink()
    _refused(tmp_path, "is missing")


def test_a_dcp_pickle_folder_is_pointed_at_safe_reader(tmp_path: Path) -> None:
    dcp.save({"w": torch.ones(2)}, storage_writer=dcp.FileSystemWriter(tmp_path))
    with pytest.raises(hermetic.FormatError, match="hermetic.dcp.SafeReader"):
        hermetic.dcp.Reader(tmp_path).read_metadata()


def _doc(folder: Path) -> dict[str, Any]:
    return json.loads((folder / ".metadata.json").read_text())


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d["files"].update({"../evil.safetensors": 1}), "files"),
        (lambda d: d["storage_data"][0].update(file="/etc/passwd"), "malformed record"),
        (lambda d: d.update(format_version=2), "format_version"),
        (lambda d: d.update(planner_data={"$reduce": ["os", "system"]}), "unknown tagged"),
        (
            lambda d: d["state_dict_metadata"]["model.0.weight"]["properties"].update(
                dtype="object"
            ),
            "unknown dtype",
        ),
        (
            lambda d: d["state_dict_metadata"]["model.0.weight"]["chunks"][0].update(
                offsets=[7, 0]
            ),
            "reaches past",
        ),
    ],
)
def test_hostile_metadata_is_refused(tmp_path: Path, edit: Any, match: str) -> None:
    dcp.save(_state(0), storage_writer=hermetic.dcp.Writer(tmp_path))
    doc = _doc(tmp_path)
    edit(doc)
    (tmp_path / ".metadata.json").write_text(json.dumps(doc))
    with pytest.raises(hermetic.FormatError, match=match):
        hermetic.dcp.Reader(tmp_path).read_metadata()


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    dcp.save(_state(0), storage_writer=hermetic.dcp.Writer(tmp_path))
    text = (tmp_path / ".metadata.json").read_text()
    (tmp_path / ".metadata.json").write_text(text.replace('{"format"', '{"format":"x","format"'))
    with pytest.raises(hermetic.FormatError, match="appears twice"):
        hermetic.dcp.Reader(tmp_path).read_metadata()


def test_async_save_single_process(tmp_path: Path) -> None:
    saved = _state(0, dict(EXTRA))
    fut = dcp.async_save(saved, storage_writer=hermetic.dcp.Writer(tmp_path))
    fut.result()  # type: ignore[union-attr]
    loaded = _state(4, dict(BLANK))
    dcp.load(loaded, storage_reader=hermetic.dcp.Reader(tmp_path))
    _same(saved, loaded)


# ------------------------------------------------------------------ the firewall


def test_firewall_refusal_of_dcp_names_safe_reader(tmp_path: Path) -> None:
    from _firewall_util import ok, run_py

    out = ok(
        run_py(
            f"""
            import warnings; warnings.simplefilter("ignore")
            import torch, torch.distributed.checkpoint as dcp
            import hermetic, hermetic.dcp
            folder = {str(tmp_path)!r}
            fs = folder + "/fs"
            dcp.save({{"w": torch.ones(2), "n": 1}}, storage_writer=dcp.FileSystemWriter(fs))
            # What dcp.load calls first (its pickle.load of .metadata); dcp.load
            # wraps the refusal (torch >= 2.12) or logs it and raises its own.
            try:
                dcp.FileSystemReader(fs).read_metadata()
            except hermetic.NoPickleError as e:
                msg = str(e)
                assert "refused to unpickle" in msg, msg
                assert "hint: " in msg and "hermetic.dcp.SafeReader" in msg, msg
                print("refused with hint")
            else:
                raise SystemExit("FileSystemReader loaded a pickle under deny")
            try:
                dcp.load({{"w": torch.zeros(2), "n": 0}}, storage_reader=dcp.FileSystemReader(fs))
            except BaseException:  # DCP's CheckpointException is a BaseException
                print("dcp.load refused")
            # hermetic.dcp needs no pickle, so deny mode lets it through.
            st = {{"w": torch.full((2,), 3.0), "n": 5}}
            dcp.save(st, storage_writer=hermetic.dcp.Writer(folder + "/h"))
            back = {{"w": torch.zeros(2), "n": 0}}
            dcp.load(back, storage_reader=hermetic.dcp.Reader(folder + "/h"))
            assert back["n"] == 5 and torch.equal(back["w"], st["w"])
            print("hermetic.dcp ok")
            """,
            mode="deny",
            timeout=300,
        )
    )
    assert "refused with hint" in out and "dcp.load refused" in out and "hermetic.dcp ok" in out


def test_hint_for_frames() -> None:
    from hermetic.firewall import _core

    hint = _core.hint_for(
        ["pickle:load", "torch.distributed.checkpoint.filesystem:FileSystemReader.read_metadata"]
    )
    assert hint is not None and "hermetic.dcp.SafeReader" in hint
    assert _core.hint_for(["app.model:load_config"]) is None
    assert _core.hint_for(None) is None


# ------------------------------------------------------------------ several ranks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ranks(world: int, scenario: str, folder: Path) -> None:
    port = _free_port()
    procs = []
    for rank in range(world):
        env = dict(
            os.environ,
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            RANK=str(rank),
            WORLD_SIZE=str(world),
            LOCAL_RANK=str(rank),
            OMP_NUM_THREADS="1",
            PYTHONWARNINGS="ignore",
        )
        env.pop("HERMETIC_PICKLE", None)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), scenario, str(folder)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=400)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for rank, (p, out) in enumerate(zip(procs, outs, strict=True)):
        assert p.returncode == 0, f"rank {rank} of {world} ({scenario}):\n{out[-6000:]}"
    assert (folder / f"{scenario}-{world}.ok").is_file()


def _load_on_one_rank(folder: Path) -> None:
    """The sharded checkpoint into a plain, unsharded model in this process."""
    sys.path.insert(0, str(HERE))
    try:
        import _dcp_worker as w
    finally:
        sys.path.remove(str(HERE))
    ref = hermetic.load(folder / "ref.safetensors")
    for sub in ("ckpt", "async"):
        m = w.model(seed=77)
        opt = torch.optim.AdamW(m.parameters(), lr=1.0)
        m(torch.randn(2, 8)).sum().backward()
        opt.step()
        msd, osd = get_state_dict(m, opt)
        state = {
            "model": msd,
            "optim": osd,
            "dt": torch.zeros(12, 10, dtype=torch.float64),
            "extra": {"step": 0, "tag": ""},
        }
        dcp.load(state, storage_reader=hermetic.dcp.Reader(folder / sub))
        set_state_dict(m, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
        msd, osd = get_state_dict(m, opt)
        _same(ref["model"], msd, f"{sub}: model")
        _same(ref["optim"], osd, f"{sub}: optim")
        _same(w.dtensor_full(), state["dt"], f"{sub}: dt")
        assert state["extra"] == {"step": 7, "tag": "run-1"}
        results = hermetic.scan(folder / sub, include_clean=True)
        assert len(results) == len(os.listdir(folder / sub))
        for r in results:
            assert r.verdict == "safe" and not r.has_pickle, r


def test_two_ranks_save_load_on_two_and_one(tmp_path: Path) -> None:
    _ranks(2, "save", tmp_path)  # save, async_save, and load back on 2 ranks, resharded
    assert (tmp_path / "how").read_text() in ("fsdp2", "dtensor")
    names = sorted(os.listdir(tmp_path / "ckpt"))
    assert ".metadata.json" in names and "__1_tensors.safetensors" in names
    _load_on_one_rank(tmp_path)
    p = subprocess.run(
        [sys.executable, "-m", "hermetic", "scan", "--all", str(tmp_path / "ckpt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0 and "0 with pickles" in p.stdout, p.stdout + p.stderr


def test_four_ranks_save_load_on_two(tmp_path: Path) -> None:
    _ranks(4, "save", tmp_path)
    _ranks(2, "load", tmp_path)
    _load_on_one_rank(tmp_path)


def test_two_ranks_save_load_on_four(tmp_path: Path) -> None:
    """Resharding up: a 2-rank checkpoint loaded on 4 ranks (each rank's model,
    optimizer and DTensor compared bit for bit, the non-tensor state equal)."""
    _ranks(2, "save", tmp_path)
    _ranks(4, "load", tmp_path)


def _floats(raw: bytes) -> list[str]:
    """float32 bytes as exact hex strings (for a readable failure)."""
    return [float(x).hex() for x in struct.unpack(f"<{len(raw) // 4}f", raw)]


def test_resumed_training_gives_bitwise_identical_losses(tmp_path: Path) -> None:
    """Train N steps straight; separately train N/2, save with Writer, load in
    fresh processes with Reader (model + Adam through get/set_state_dict) and
    train N/2 more: every rank's losses, and the final states, are bit for bit
    those of the uninterrupted run."""
    sys.path.insert(0, str(HERE))
    try:
        import _dcp_worker as w
    finally:
        sys.path.remove(str(HERE))
    _ranks(2, "train", tmp_path)
    _ranks(2, "resume", tmp_path)
    assert (tmp_path / "how").read_text() in ("fsdp2", "dtensor")
    for rank in range(2):
        straight = (tmp_path / f"straight-{rank}.bin").read_bytes()
        first = (tmp_path / f"first-{rank}.bin").read_bytes()
        second = (tmp_path / f"second-{rank}.bin").read_bytes()
        assert len(straight) == 4 * w.STEPS and len(first) == len(second) == 2 * w.STEPS
        assert len(set(_floats(straight))) == w.STEPS  # the losses move
        assert _floats(first + second) == _floats(straight), rank
        assert first + second == straight
    ref = hermetic.load(tmp_path / "straight.safetensors")
    got = hermetic.load(tmp_path / "resumed.safetensors")
    _same(ref, got, "final state")
    assert hermetic.dcp.Reader(tmp_path / "resume").read_metadata().state_dict_metadata
