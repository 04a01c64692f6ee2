"""Process-wide modes from the environment, switched on by the start-up hook
before the program's first line, without the program importing hermetic."""

from __future__ import annotations

import json
import pickle
import subprocess
from pathlib import Path

import pytest
from _firewall_util import SAFE, blob_line, hook_python, ok, run_py, write_manifest

import hermetic

EVIL_TEMPLATE = "c__builtin__\nopen\n(S'{canary}'\nS'w'\ntR."


def evil(canary: Path) -> bytes:
    return EVIL_TEMPLATE.format(canary=canary).encode()


def test_hook_is_inert_without_the_variable() -> None:
    out = ok(
        run_py(
            """
            import pickle, sys
            assert pickle.loads(pickle.dumps([1])) == [1]
            print("hermetic" in sys.modules, pickle.loads.__module__)
            """
        )
    )
    assert out.split() == ["False", "_pickle"]


def test_deny_refuses_in_the_first_statement_without_importing_hermetic(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    (tmp_path / "evil.pkl").write_bytes(evil(canary))
    proc = run_py(
        """
        import pickle; pickle.load(open("evil.pkl", "rb"))
        """,
        mode="deny",
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert "NoPickleError" in proc.stderr and "deny mode allows no blob" in proc.stderr
    assert str(tmp_path / "evil.pkl") in proc.stderr  # the file is named
    assert "builtins.open (called)" in proc.stderr  # what the scanner found
    assert not canary.exists()


def test_enforce_call_site_patterns(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.toml", [blob_line(SAFE, ["__main__:trusted_*"])])
    (tmp_path / "data.pkl").write_bytes(SAFE)
    proc = run_py(
        """
        import pickle
        def trusted_loader():
            return pickle.load(open("data.pkl", "rb"))
        def elsewhere():
            return pickle.load(open("data.pkl", "rb"))
        assert trusted_loader()["step"] == 3
        print("trusted ok", flush=True)
        elsewhere()
        """,
        mode="enforce",
        manifest=manifest,
        cwd=tmp_path,
    )
    assert proc.stdout.strip() == "trusted ok"
    assert "lists this blob only for the call sites __main__:trusted_*" in proc.stderr
    assert "call site: __main__:elsewhere" in proc.stderr


@pytest.mark.parametrize(
    ("mode", "manifest_text", "expect"),
    [
        ("enforced", None, "mode must be one of"),
        ("enforce", None, "enforce mode needs a manifest"),
        ("enforce", "version = 1\nunlisted = 'maybe'\n", "unlisted"),
        ("enforce", "not toml [", "TOML"),
        ("deny", "version = 7\n", "version"),
    ],
)
def test_fails_closed(tmp_path: Path, mode: str, manifest_text: str | None, expect: str) -> None:
    manifest = None
    if manifest_text is not None:
        manifest = tmp_path / "m.toml"
        manifest.write_text(manifest_text)
    proc = run_py(
        """
        import pickle
        pickle.loads(pickle.dumps(1))
        """,
        mode=mode,
        manifest=manifest,
    )
    assert proc.returncode == 1, proc.stderr
    assert "failing closed" in proc.stderr and expect in proc.stderr, proc.stderr
    assert "NoPickleError" in proc.stderr


def test_firewall_that_cannot_import_exits(tmp_path: Path) -> None:
    # A broken installation must not run unprotected.
    (tmp_path / "hermetic").mkdir()
    (tmp_path / "hermetic" / "__init__.py").write_text("raise ImportError('broken install')\n")
    proc = subprocess.run(
        [hook_python(), "-c", "print('ran')"],
        env={"HERMETIC_PICKLE": "deny", "PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 70, proc
    assert "ran" not in proc.stdout
    assert "failed to start" in proc.stderr


def test_record_writes_loads_and_writers(tmp_path: Path) -> None:
    inventory = tmp_path / "inv.jsonl"
    (tmp_path / "data.pkl").write_bytes(SAFE)
    ok(
        run_py(
            """
            import pickle, torch
            def load_it():
                return pickle.load(open("data.pkl", "rb"))
            def save_it():
                pickle.dumps({"x": 1})
                torch.save({"t": torch.zeros(2)}, "model.pt")
            load_it(); load_it()
            save_it()
            torch.load("model.pt")
            """,
            mode="record",
            inventory=inventory,
            cwd=tmp_path,
        )
    )
    recs = [json.loads(x) for x in inventory.read_text().splitlines()]
    loads = [r for r in recs if r["event"] == "load"]
    dumps = [r for r in recs if r["event"] == "dump"]
    first = next(r for r in loads if r["file"] == str(tmp_path / "data.pkl"))
    assert first["blob"] == hermetic.blob_id(SAFE) and first["size"] == len(SAFE)
    assert first["call_site"] == "__main__:load_it" and first["location"].endswith("prog.py:4")
    assert first["verdict"] == "safe" and first["judgement"] == "unlisted"
    assert first["entry_point"] == "pickle.load" and first["v"] == 1
    assert sum(r["file"] == first["file"] for r in loads) == 1  # repeats are one line
    torch_load = next(r for r in loads if r["file"] == str(tmp_path / "model.pt"))
    assert torch_load["entry_point"].startswith("torch.load")
    assert torch_load["call_site"] == "__main__:<module>"
    assert "torch._utils._rebuild_tensor_v2" in torch_load["imports"]
    writers = {(r["entry_point"], r["call_site"]) for r in dumps}
    assert ("pickle.dumps", "__main__:save_it") in writers
    assert ("torch.save", "__main__:save_it") in writers


def test_record_appends_from_concurrent_processes(tmp_path: Path) -> None:
    inventory = tmp_path / "inv.jsonl"
    n_proc, n_each = 6, 40
    ok(
        run_py(
            f"""
            import multiprocessing as mp, pickle
            def work(i):
                for j in range({n_each}):
                    # Long, distinct blobs: lines of a few kB each.
                    pickle.loads(pickle.dumps((i, j, "x" * 3000)))
            if __name__ == "__main__":
                ctx = mp.get_context("spawn")
                ps = [ctx.Process(target=work, args=(i,)) for i in range({n_proc})]
                [p.start() for p in ps]
                [p.join() for p in ps]
                assert all(p.exitcode == 0 for p in ps)
            """,
            mode="record",
            inventory=inventory,
        )
    )
    lines = inventory.read_bytes().split(b"\n")
    assert lines[-1] == b""
    recs = [json.loads(x) for x in lines[:-1]]  # every line is whole JSON
    worker_loads = [
        r for r in recs if r["event"] == "load" and r["call_site"] == "__mp_main__:work"
    ]
    assert len(worker_loads) == n_proc * n_each
    assert len({r["blob"] for r in worker_loads}) == n_proc * n_each
    assert len({r["pid"] for r in worker_loads}) == n_proc


def test_warn_mode_warns_once_per_unlisted_load(tmp_path: Path) -> None:
    other = b"\x80\x04K\x07."
    manifest = write_manifest(tmp_path / "m.toml", [blob_line(SAFE)])
    proc = run_py(
        f"""
        import pickle
        assert pickle.loads({SAFE!r})["step"] == 3
        assert pickle.loads({other!r}) == 7
        print("loaded both")
        """,
        mode="warn",
        manifest=manifest,
    )
    out = ok(proc)
    assert "loaded both" in out
    assert proc.stderr.count("PickleWarning") == 1, proc.stderr
    assert hermetic.blob_id(other) in proc.stderr
    assert "loaded an unlisted blob" in proc.stderr


def test_unlisted_safe_refuses_dangerous_and_uses_only_the_evaluator(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    manifest = write_manifest(tmp_path / "m.toml", [], header='unlisted = "safe"\n')
    proc = run_py(
        f"""
        import pickle, hermetic
        try:
            pickle.loads({evil(canary)!r})
        except hermetic.NoPickleError as e:
            assert "data-only" in str(e), str(e)
            print("dangerous refused")
        import collections, sys
        resolved = []
        sys.addaudithook(lambda ev, args: ev == "pickle.find_class" and resolved.append(args))
        od = pickle.dumps(collections.OrderedDict(a=1))
        try:
            value = pickle.loads({SAFE!r})
            print("evaluated", value == {{"weights": [1.0, 2.0], "step": 3}})
            # The evaluator rebuilt the OrderedDict; no unpickler resolved it.
            assert pickle.loads(od) == {{"a": 1}}
            assert resolved == [], resolved
        except hermetic.NoPickleError as e:
            assert "evaluator" in str(e), str(e)
            print("no evaluator")
        """,
        mode="enforce",
        manifest=manifest,
    )
    out = ok(proc)
    assert "dangerous refused" in out
    assert "evaluated True" in out
    assert not canary.exists()


IPC = """
import concurrent.futures as cf, multiprocessing as mp, pickle, sys

def square(x):
    return x * x

def unpickle_in_worker(data):
    return pickle.loads(data)

if __name__ == "__main__":
    for method in ("fork", "spawn", "forkserver"):
        ctx = mp.get_context(method)
        with ctx.Pool(2) as pool:
            assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]
        with cf.ProcessPoolExecutor(2, mp_context=ctx) as ex:
            assert list(ex.map(square, range(5))) == [0, 1, 4, 9, 16]
            # The worker's own unpickle is not inter-process pickling.
            try:
                ex.submit(unpickle_in_worker, pickle.dumps(5, protocol=0)).result()
            except Exception as e:
                assert type(e).__name__ == "NoPickleError", repr(e)
                print(method, "worker load refused")
        print(method, "ok", flush=True)
"""


def test_python_ipc_rule_keeps_multiprocessing_working_under_deny(tmp_path: Path) -> None:
    out = ok(run_py(IPC, mode="deny", timeout=300))
    for method in ("fork", "spawn", "forkserver"):
        assert f"{method} ok" in out
        assert f"{method} worker load refused" in out


@pytest.mark.parametrize("rules", ["", "builtin_rules = []\n"])
def test_python_ipc_rule_is_removable(tmp_path: Path, rules: str) -> None:
    manifest = write_manifest(tmp_path / "m.toml", [], header=rules)
    proc = run_py(
        """
        import multiprocessing as mp
        a, b = mp.Pipe()
        a.send({"batch": [1, 2, 3]})
        print(b.recv())
        """,
        mode="enforce",
        manifest=manifest,
    )
    if rules:
        assert proc.returncode == 1
        assert "NoPickleError" in proc.stderr
        assert "call site: multiprocessing.connection:_ConnectionBase.recv" in proc.stderr
    else:
        assert ok(proc).strip() == "{'batch': [1, 2, 3]}"


def test_record_keeps_one_line_per_inter_process_call_site(tmp_path: Path) -> None:
    inventory = tmp_path / "inv.jsonl"
    ok(
        run_py(
            """
            import multiprocessing as mp
            a, b = mp.Pipe()
            for i in range(50):
                a.send({"message": i})
                assert b.recv() == {"message": i}
            """,
            mode="record",
            inventory=inventory,
        )
    )
    loads = [json.loads(x) for x in inventory.read_text().splitlines()]
    ipc = [r for r in loads if r["event"] == "load" and r["judgement"] == "rule:python-ipc"]
    assert len(ipc) == 1, ipc
    assert ipc[0]["call_site"] == "multiprocessing.connection:_ConnectionBase.recv"


def test_the_package_ships_the_start_up_hook() -> None:
    """A wheel install (what pip users get, and what scripts/test tests)
    puts hermetic_firewall.pth next to the package in site-packages."""
    import os

    from _firewall_util import PTH, ROOT

    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'include = [{{ path = "{PTH}", format = "wheel" }}]' in pyproject
    assert (ROOT / "python" / PTH).is_file()
    package_parent = Path(hermetic.__file__).resolve().parent.parent
    if package_parent == (ROOT / "python").resolve():
        pytest.skip("editable install (maturin develop): the hook is not installed")
    assert (package_parent / PTH).is_file(), f"{PTH} missing from {package_parent}"
    assert os.path.basename(str(package_parent)) in ("site-packages", "dist-packages")


def test_unlisted_safe_reads_torch_checkpoints_with_the_evaluator(tmp_path: Path) -> None:
    """A state dict's data.pkl needs torch's persistent_load, so under
    ``unlisted = "safe"`` torch.load hands the whole file to hermetic.torch.load:
    plain checkpoints keep loading with no unpickler resolving anything, and a
    whole pickled model is still refused."""
    pytest.importorskip("torch")
    benign = Path(__file__).parent / "fixtures" / "benign"
    manifest = write_manifest(tmp_path / "m.toml", [], header='unlisted = "safe"\n')
    proc = run_py(
        f"""
        import sys, torch, hermetic
        resolved = []
        sys.addaudithook(lambda ev, args: ev == "pickle.find_class" and resolved.append(args))
        for name in ("mlp_state_zip.pt", "mlp_state_legacy.pt"):
            sd = torch.load({str(benign)!r} + "/" + name)
            assert sd["fc1.weight"].shape == (16, 8), sd.keys()
            print("loaded", name, type(sd).__name__)
        # File objects too: read once, from where they stand.
        import io
        with open({str(benign)!r} + "/mlp_state_zip.pt", "rb") as fh:
            sd = torch.load(fh)
            assert sd["fc1.weight"].shape == (16, 8)
        raw = open({str(benign)!r} + "/mlp_state_legacy.pt", "rb").read()
        buf = io.BytesIO(b"junk" + raw)
        buf.seek(4)
        sd = torch.load(buf)
        assert sd["fc1.weight"].shape == (16, 8)
        print("loaded file objects")
        assert resolved == [], resolved
        try:
            torch.load({str(benign / "model_whole.pt")!r}, weights_only=False)
        except hermetic.NoPickleError as e:
            print("whole model refused")
        with open({str(benign / "model_whole.pt")!r}, "rb") as fh:
            try:
                torch.load(fh, weights_only=False)
            except hermetic.NoPickleError as e:
                print("whole model refused from a file object")
        """,
        mode="enforce",
        manifest=manifest,
    )
    out = ok(proc)
    assert "loaded mlp_state_zip.pt OrderedDict" in out
    assert "loaded mlp_state_legacy.pt OrderedDict" in out
    assert "loaded file objects" in out
    assert "whole model refused" in out
    assert "whole model refused from a file object" in out


def test_a_manifest_allow_list_lets_the_evaluator_rebuild_those_classes(tmp_path: Path) -> None:
    """``allow`` beside ``unlisted = "safe"``: checkpoints holding the listed classes
    load through the evaluator without listing their blobs; nothing else is trusted."""
    pytest.importorskip("torch")
    canary = tmp_path / "canary"
    tests = Path(__file__).parent
    manifest = write_manifest(
        tmp_path / "m.toml",
        [],
        header=(
            'unlisted = "safe"\n'
            'allow = ["allow_classes:TrainConfig", "allow_classes:AttributeDict"]\n'
        ),
    )
    proc = run_py(
        f"""
        import pickle, sys, torch, hermetic
        import allow_classes as ac
        resolved = []
        sys.addaudithook(lambda ev, args: ev == "pickle.find_class" and resolved.append(args))
        cfg = pickle.loads({pickle_dumps_config()!r})
        print("config", type(cfg).__name__, cfg.lr)
        path = {str(tmp_path / "ckpt.pt")!r}
        torch.save({{"hparams": ac.AttributeDict(lr=0.5), "w": torch.ones(2)}}, path)
        ck = torch.load(path, weights_only=False)
        print("checkpoint", type(ck["hparams"]).__name__, ck["hparams"].lr)
        assert resolved == [], resolved
        try:
            pickle.loads({pickle_dumps_call()!r})
        except hermetic.NoPickleError as e:
            print("other callable refused")
        """,
        mode="enforce",
        manifest=manifest,
        env={"PYTHONPATH": str(tests), "HERMETIC_CANARY": str(canary)},
    )
    out = ok(proc)
    assert "config TrainConfig 0.25" in out
    assert "checkpoint AttributeDict 0.5" in out
    assert "other callable refused" in out
    assert not canary.exists()
    # allow means nothing unless unlisted blobs go to the evaluator: an invalid manifest.
    bad = write_manifest(tmp_path / "bad.toml", [], header='allow = ["allow_classes:*"]\n')
    proc = run_py("import pickle", mode="enforce", manifest=bad)
    assert "`allow` is read only with" in proc.stderr and "failing closed" in proc.stderr


def pickle_dumps_config() -> bytes:
    import allow_classes as ac

    return pickle.dumps(ac.TrainConfig(0.25, [1]), protocol=4)


def pickle_dumps_call() -> bytes:
    # REDUCE of allow_classes.touch_canary(): not on the manifest's list.
    return b"\x80\x02callow_classes\ntouch_canary\n)R."
