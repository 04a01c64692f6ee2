"""hermetic.integrations.lightning with a real Lightning Trainer: whole training
checkpoints saved by HermeticCheckpointIO are hermetic files `hermetic scan` calls
safe, resuming from them restores the step, the weights, the optimizer and the
scheduler bit for bit (and N steps straight equal N/2 + resume + N/2), and
load_from_checkpoint rebuilds the module from hermetic files and from Lightning's
default torch-pickle .ckpt files without torch.load."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning")
omegaconf = pytest.importorskip("omegaconf")

import lightning as L  # noqa: E402, N812
import torch  # noqa: E402
from lightning.fabric.utilities.data import AttributeDict  # noqa: E402
from lightning.pytorch.callbacks import Callback, ModelCheckpoint  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

import hermetic  # noqa: E402
from hermetic.integrations.lightning import (  # noqa: E402
    AttributeDictNode,
    HermeticCheckpointIO,
    OmegaConfNode,
    is_hermetic_file,
    load_checkpoint,
    load_from_checkpoint,
)

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints"
STEPS_PER_EPOCH = 4  # 16 samples, batches of 4


class Tiny(L.LightningModule):
    def __init__(
        self, lr: float = 0.05, hidden: int = 3, nested: Any = None, cfg: Any = None
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 2)
        )

    def training_step(self, batch: Any, idx: int) -> Any:
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": sched}


class ConfigModule(L.LightningModule):
    """Its hparams are the DictConfig itself (Lightning stores hparams_type too)."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.save_hyperparameters(cfg)
        self.net = torch.nn.Linear(4, 2)

    def training_step(self, batch: Any, idx: int) -> Any:
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.optim.lr)


class Recorder(Callback):
    """What the trainer holds when training starts, i.e. after the restore."""

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.global_step = trainer.global_step
        self.weights = {k: v.clone() for k, v in module.state_dict().items()}
        self.optimizer = _clone(trainer.optimizers[0].state_dict())
        self.scheduler = trainer.lr_scheduler_configs[0].scheduler.state_dict()


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    lr: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)


class LambdaState(Callback):
    def state_dict(self) -> dict[str, Any]:
        return {"count": 1, "fn": lambda x: x}


def _clone(tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.clone()
    if isinstance(tree, dict):
        return {k: _clone(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_clone(v) for v in tree)
    return tree


def assert_bitwise(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
        return
    assert type(a) is type(b), f"{where}: {type(a)} vs {type(b)}"
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_bitwise(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_bitwise(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def loader() -> torch.utils.data.DataLoader[Any]:
    g = torch.Generator().manual_seed(1234)
    data = torch.utils.data.TensorDataset(
        torch.randn(16, 4, generator=g), torch.randn(16, 2, generator=g)
    )
    return torch.utils.data.DataLoader(data, batch_size=4, shuffle=False)


def trainer(root: Path, max_steps: int, *, hermetic_io: bool = True, **kw: Any) -> L.Trainer:
    kw.setdefault("callbacks", [ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1)])
    return L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        plugins=[HermeticCheckpointIO()] if hermetic_io else None,
        **kw,
    )


def make_model(**kw: Any) -> Tiny:
    L.seed_everything(0, verbose=False)
    kw.setdefault("nested", {"arch": {"depth": 2, "widths": [3, 5]}, "tags": ("a", "b")})
    return Tiny(**kw)


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One epoch (4 steps) with HermeticCheckpointIO; ModelCheckpoint writes
    epoch=0-step=4.ckpt at its end."""
    root = tmp_path_factory.mktemp("run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make_model()
        t = trainer(root, STEPS_PER_EPOCH)
        t.fit(model, loader())
    path = root / f"epoch=0-step={STEPS_PER_EPOCH}.ckpt"
    assert path.exists(), sorted(root.iterdir())
    return {
        "root": root,
        "path": path,
        "model": model,
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
        "optimizer": _clone(t.optimizers[0].state_dict()),
        "scheduler": t.lr_scheduler_configs[0].scheduler.state_dict(),
        "global_step": t.global_step,
    }


@pytest.fixture()
def no_torch_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any torch.load (or unpickling by torch) during the test fails it."""

    def refuse(*a: Any, **k: Any) -> Any:
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(torch.serialization, "load", refuse)


# ------------------------------------------------------------------ the file


def test_the_checkpoint_is_a_hermetic_file_scan_calls_safe(run: dict[str, Any]) -> None:
    path = run["path"]
    assert path.suffix == ".ckpt"
    out = subprocess.run(
        [sys.executable, "-m", "hermetic", "scan", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["summary"]["verdict"] == "safe"
    (entry,) = report["files"]
    assert entry["format"] == "safetensors" and entry["verdict"] == "safe"
    assert entry["streams"] == [] and entry["findings"] == []
    with hermetic.open(path) as h:
        assert h.metadata["hermetic.integration"] == "lightning"
        assert "state_dict" in h.tree and "optimizer_states" in h.tree


def test_the_whole_checkpoint_round_trips(run: dict[str, Any], no_torch_load: None) -> None:
    ckpt = load_checkpoint(run["path"])
    assert ckpt["global_step"] == run["global_step"] == STEPS_PER_EPOCH
    assert ckpt["epoch"] == 0
    assert_bitwise(dict(ckpt["state_dict"]), run["weights"])
    assert_bitwise(ckpt["optimizer_states"][0], run["optimizer"])
    assert ckpt["optimizer_states"][0]["state"][0]["exp_avg"].abs().sum() > 0
    assert ckpt["lr_schedulers"][0] == run["scheduler"]
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 1
    # The state dict keeps its per-module versions (load_state_dict's upgrades).
    assert ckpt["state_dict"]._metadata == run["model"].state_dict()._metadata
    assert set(ckpt["loops"]) == {"fit_loop", "validate_loop", "test_loop", "predict_loop"}
    progress = ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    assert progress["total"]["completed"] == STEPS_PER_EPOCH
    (cb,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert cb["dirpath"] == str(run["root"])
    hp = ckpt["hyper_parameters"]
    assert hp == {
        "lr": 0.05,
        "hidden": 3,
        "nested": {"arch": {"depth": 2, "widths": [3, 5]}, "tags": ("a", "b")},
        "cfg": None,
    }
    assert type(hp["nested"]["tags"]) is tuple


# ------------------------------------------------------------------ resuming


def test_resume_restores_step_weights_optimizer_and_scheduler(
    run: dict[str, Any], tmp_path: Path, no_torch_load: None
) -> None:
    rec = Recorder()
    model = make_model()
    # A fresh model differs from the saved one: the restore is what makes them equal.
    assert not torch.equal(model.net[0].weight, run["weights"]["net.0.weight"])
    t = trainer(tmp_path, 2 * STEPS_PER_EPOCH, callbacks=[rec])
    t.fit(model, loader(), ckpt_path=run["path"])
    assert rec.global_step == run["global_step"] == STEPS_PER_EPOCH
    assert_bitwise(rec.weights, run["weights"])
    assert_bitwise(rec.optimizer, run["optimizer"])
    assert rec.scheduler == run["scheduler"]
    assert t.global_step == 2 * STEPS_PER_EPOCH


def test_straight_equals_half_resume_half(tmp_path: Path) -> None:
    """Two epochs straight, and one epoch + resume + one epoch, end bitwise equal.

    The runs are bounded by max_epochs: Lightning (2.6) restores a checkpoint taken
    when max_steps stopped the run on an epoch's last batch as an unfinished epoch
    and runs one extra batch before the next one, with its default TorchCheckpointIO
    as with this plugin (see the next test), so such a resume cannot match."""
    straight = make_model()
    trainer(tmp_path / "straight", -1, max_epochs=2).fit(straight, loader())

    first = make_model()
    trainer(tmp_path / "a", -1, max_epochs=1).fit(first, loader())
    ckpt = tmp_path / "a" / f"epoch=0-step={STEPS_PER_EPOCH}.ckpt"
    assert is_hermetic_file(ckpt)
    resumed = make_model()
    rec = Recorder()
    t = trainer(tmp_path / "b", -1, max_epochs=2, callbacks=[rec])
    t.fit(resumed, loader(), ckpt_path=ckpt)
    assert rec.global_step == STEPS_PER_EPOCH and t.global_step == 2 * STEPS_PER_EPOCH

    assert_bitwise(resumed.state_dict(), straight.state_dict())
    # And the run moved: the final weights are not the checkpoint's.
    assert not torch.equal(resumed.net[0].weight, first.net[0].weight)


def test_a_max_steps_resume_is_the_one_torch_checkpoint_io_gives(tmp_path: Path) -> None:
    """4 steps, then resume to 8 under max_steps: whatever Lightning's loops make of
    the restore, the weights equal those of the same runs with TorchCheckpointIO."""
    final = {}
    for hermetic_io in (True, False):
        root = tmp_path / str(hermetic_io)
        trainer(root / "a", STEPS_PER_EPOCH, hermetic_io=hermetic_io).fit(make_model(), loader())
        ckpt = root / "a" / f"epoch=0-step={STEPS_PER_EPOCH}.ckpt"
        assert is_hermetic_file(ckpt) == hermetic_io
        model = make_model()
        t = trainer(root / "b", 2 * STEPS_PER_EPOCH, hermetic_io=hermetic_io)
        t.fit(model, loader(), ckpt_path=ckpt)
        final[hermetic_io] = model.state_dict()
    assert_bitwise(final[True], final[False])


def test_resume_from_a_default_torch_pickle_checkpoint(tmp_path: Path) -> None:
    """A run saved with Lightning's TorchCheckpointIO resumes under
    HermeticCheckpointIO (read by hermetic.torch.load)."""
    first = make_model()
    trainer(tmp_path / "a", STEPS_PER_EPOCH, hermetic_io=False).fit(first, loader())
    ckpt = tmp_path / "a" / f"epoch=0-step={STEPS_PER_EPOCH}.ckpt"
    assert not is_hermetic_file(ckpt)
    rec = Recorder()
    trainer(tmp_path / "b", 2 * STEPS_PER_EPOCH, callbacks=[rec]).fit(
        make_model(), loader(), ckpt_path=ckpt
    )
    assert rec.global_step == STEPS_PER_EPOCH
    assert_bitwise(rec.weights, dict(first.state_dict()))


def test_old_checkpoints_are_removed_through_the_plugin(tmp_path: Path) -> None:
    cb = ModelCheckpoint(dirpath=tmp_path, save_top_k=1, monitor="step", mode="max")
    cb_every = ModelCheckpoint(dirpath=tmp_path / "last", every_n_train_steps=1, save_top_k=1)
    trainer(tmp_path, 3, callbacks=[cb, cb_every]).fit(make_model(), loader())
    assert [p.name for p in (tmp_path / "last").iterdir()] == ["epoch=0-step=3.ckpt"]


# ------------------------------------------------------------------ load_from_checkpoint


def test_load_from_checkpoint_of_a_hermetic_file(run: dict[str, Any], no_torch_load: None) -> None:
    model = load_from_checkpoint(Tiny, run["path"])
    assert type(model) is Tiny
    assert_bitwise(dict(model.state_dict()), run["weights"])
    assert model.hparams == run["model"].hparams
    assert model.hparams.nested["arch"]["widths"] == [3, 5]
    # kwargs override the stored hparams, as in Lightning.
    assert load_from_checkpoint(Tiny, run["path"], lr=0.5).hparams.lr == 0.5


def test_load_from_checkpoint_of_a_torch_pickle_file(tmp_path: Path, no_torch_load: None) -> None:
    model = make_model(cfg=OmegaConf.create({"model": {"hidden": 3}, "ref": "${model.hidden}"}))
    # Lightning's default TorchCheckpointIO: torch.save (nothing is loaded here).
    trainer(tmp_path, STEPS_PER_EPOCH, hermetic_io=False).fit(model, loader())
    path = tmp_path / f"epoch=0-step={STEPS_PER_EPOCH}.ckpt"
    assert not is_hermetic_file(path)
    got = load_from_checkpoint(Tiny, path)
    assert_bitwise(dict(got.state_dict()), dict(model.state_dict()))
    assert got.hparams == model.hparams
    assert isinstance(got.hparams.cfg, DictConfig) and got.hparams.cfg.ref == 3


def test_a_torch_pickle_checkpoint_converts_losslessly(tmp_path: Path) -> None:
    """Lightning's own torch-pickle checkpoint, saved again through the plugin, reads
    back equal to what torch.load and hermetic.torch.load read from the pickle."""
    model = make_model()
    trainer(tmp_path, STEPS_PER_EPOCH, hermetic_io=False).fit(model, loader())
    pickled = tmp_path / f"epoch=0-step={STEPS_PER_EPOCH}.ckpt"
    ref = torch.load(pickled, weights_only=False)
    io = HermeticCheckpointIO()
    io.save_checkpoint(ref, tmp_path / "converted.ckpt")
    back = io.load_checkpoint(tmp_path / "converted.ckpt")
    assert_bitwise(back, load_checkpoint(pickled))
    assert_bitwise(back["state_dict"], ref["state_dict"])
    assert_bitwise(back["optimizer_states"], ref["optimizer_states"])


def test_omegaconf_hparams_round_trip(tmp_path: Path, no_torch_load: None) -> None:
    cfg = OmegaConf.create({"optim": {"lr": 0.1}, "width": "${optim.lr}"})
    L.seed_everything(0, verbose=False)
    model = ConfigModule(cfg)
    t = trainer(tmp_path, 2, callbacks=[])
    t.fit(model, loader())
    path = tmp_path / "cfg.ckpt"
    t.save_checkpoint(path)
    ckpt = load_checkpoint(path)
    assert ckpt["hparams_type"] is DictConfig
    hp = ckpt["hyper_parameters"]
    assert isinstance(hp, DictConfig) and hp.width == 0.1
    got = load_from_checkpoint(ConfigModule, path)
    assert isinstance(got.hparams, DictConfig) and got.hparams == model.hparams
    assert_bitwise(dict(got.state_dict()), dict(model.state_dict()))
    # Read without this module, the records are plain tagged dicts.
    plain = hermetic.load(path, plain=True)
    assert plain["hyper_parameters"]["$class"] == ("hermetic.integrations.lightning:OmegaConfNode")


def test_attribute_dicts_and_flags_anywhere(tmp_path: Path) -> None:
    # Lightning's save_hyperparameters cannot take a missing value; a checkpoint can.
    cfg = OmegaConf.create({"a": [1, {"b": 2}], "ref": "${a.1.b}", "todo": "???"})
    OmegaConf.set_struct(cfg, True)
    ckpt = {
        "pytorch-lightning_version": L.__version__,
        "hyper_parameters": {"ad": AttributeDict(x=AttributeDict(y=torch.ones(2)))},
        "extra": [cfg, OmegaConf.create([1, 2])],
    }
    HermeticCheckpointIO().save_checkpoint(ckpt, tmp_path / "x.ckpt")
    raw = hermetic.load(tmp_path / "x.ckpt", allow=[AttributeDictNode, OmegaConfNode])
    assert isinstance(raw["hyper_parameters"]["ad"], AttributeDictNode)
    back = HermeticCheckpointIO().load_checkpoint(tmp_path / "x.ckpt")
    ad = back["hyper_parameters"]["ad"]
    assert type(ad) is AttributeDict and type(ad.x) is AttributeDict
    assert torch.equal(ad.x.y, torch.ones(2))
    got = back["extra"][0]
    assert OmegaConf.is_struct(got) and got == cfg and got.ref == 2
    assert OmegaConf.is_missing(got, "todo")
    assert type(back["extra"][1]).__name__ == "ListConfig" and list(back["extra"][1]) == [1, 2]
    assert type(ckpt["hyper_parameters"]["ad"]) is AttributeDict  # the input is untouched


def test_the_omegaconf_fixture_reads_as_torch_load_reads_it() -> None:
    path = FIXTURES / "lightning_omegaconf.ckpt"
    ref = torch.load(path, weights_only=False)
    got = load_checkpoint(path)
    assert_bitwise(got["state_dict"], ref["state_dict"])
    assert isinstance(got["hyper_parameters"]["cfg"], DictConfig)
    assert got["hyper_parameters"] == ref["hyper_parameters"]


def test_your_own_classes_in_hparams_need_allow(tmp_path: Path) -> None:
    ckpt = {"hyper_parameters": {"optim": OptimConfig(lr=0.5)}, "state_dict": {}}
    path = tmp_path / "x.ckpt"
    HermeticCheckpointIO().save_checkpoint(ckpt, path)
    with pytest.raises(hermetic.ClassNotAllowedError, match="OptimConfig"):
        HermeticCheckpointIO().load_checkpoint(path)
    back = HermeticCheckpointIO(allow=[OptimConfig]).load_checkpoint(path)
    assert back["hyper_parameters"]["optim"] == OptimConfig(lr=0.5)


def test_sharded_checkpoints_save_load_and_remove(run: dict[str, Any], tmp_path: Path) -> None:
    ckpt = load_checkpoint(run["path"])
    io = HermeticCheckpointIO(max_shard_size=64, fsync=True, metadata={"run": "t"})
    path = tmp_path / "sharded.ckpt"
    io.save_checkpoint(ckpt, path)
    assert path.is_dir() and len(list(path.iterdir())) > 2
    assert_bitwise(io.load_checkpoint(path), ckpt)
    io.remove_checkpoint(path)
    assert not path.exists()
    io.remove_checkpoint(path)  # gone already: nothing to do


# ------------------------------------------------------------------ errors and isolation


def test_an_unstorable_callback_state_is_an_error_naming_it(tmp_path: Path) -> None:
    t = trainer(tmp_path, 1, callbacks=[LambdaState()], enable_checkpointing=False)
    t.fit(make_model(), loader())
    path = tmp_path / "bad.ckpt"
    with pytest.raises(hermetic.FormatError) as e:
        t.save_checkpoint(path)
    msg = str(e.value)
    assert 'tree["callbacks"]["LambdaState"]["fn"]' in msg and "lambda" in msg, msg
    assert str(path) in msg
    assert not path.exists()


def test_unpicklable_objects_are_refused_not_dropped(tmp_path: Path) -> None:
    io = HermeticCheckpointIO()
    with pytest.raises(hermetic.FormatError, match=r'tree\["hyper_parameters"\]\["obj"\]'):
        io.save_checkpoint({"hyper_parameters": {"obj": object()}}, tmp_path / "x.ckpt")
    with pytest.raises(TypeError, match="storage_options"):
        io.save_checkpoint({}, tmp_path / "y.ckpt", storage_options={"a": 1})
    with pytest.raises(ValueError, match="URL"):
        io.save_checkpoint({}, "s3://bucket/x.ckpt")
    with pytest.raises(FileNotFoundError):
        io.load_checkpoint(tmp_path / "missing.ckpt")


def test_a_pickled_class_in_a_checkpoint_is_refused(tmp_path: Path) -> None:
    """A torch-pickle .ckpt naming a class outside the allowlist is refused, not run."""
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"p": Path("x")}, "cb": Recorder()}, path)
    with pytest.raises(hermetic.UnsafePickleError, match="Recorder"):
        load_checkpoint(path)
    # Trusted explicitly, it is rebuilt (its own code runs, as under torch.load).
    assert type(load_checkpoint(path, allow=[Recorder])["cb"]) is Recorder


def test_import_hermetic_does_not_import_lightning() -> None:
    code = (
        "import sys, hermetic, hermetic.integrations\n"
        "bad = [m for m in ('lightning', 'pytorch_lightning', 'omegaconf', 'torch') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    # Without Lightning, the integration says what to install.
    code = (
        "import sys\n"
        "sys.modules['lightning'] = None\n"
        "try:\n"
        "    import hermetic.integrations.lightning\n"
        "except ImportError as e:\n"
        "    assert \"pip install 'hermetic[lightning]'\" in str(e), e\n"
        "else:\n"
        "    raise AssertionError('imported without lightning')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
