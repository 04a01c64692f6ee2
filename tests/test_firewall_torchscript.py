"""Files whose loaders run code without Python's pickle machinery: TorchScript
archives (``torch.jit.load``, and ``torch.load``, which hands them to it),
TorchScript mobile and flatbuffer files, torch.package archives and PT2
archives (``torch.export.load``).

Each fixture carries a harmless payload that creates a canary file. The
unprotected run proves every technique really runs it; under ``deny`` and
``enforce`` every entry point is refused before the canary appears, unless
the manifest lists the whole file's id (the SHA-256 of all of its bytes).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from _firewall_util import blob_line, hermetic_cli, ok, run_py, write_manifest

import hermetic

torch = pytest.importorskip("torch")

# torch.jit.script reads a class's source, so it lives in a real module.
CANARY_MODULE = '''
from typing import Tuple

import torch


class Canary(torch.nn.Module):
    """Its __setstate__ runs when the module is loaded: it writes a file."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.w = torch.ones(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.w

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, torch.Tensor, bool]:
        return (self.path, self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, torch.Tensor, bool]) -> None:
        self.path = state[0]
        self.w = state[1]
        self.training = state[2]
        torch.save(torch.zeros(1), self.path)
'''

BUILD = r"""
import os, sys, warnings, zipfile
warnings.simplefilter("ignore")
import torch
out, canary = sys.argv[1], sys.argv[2]
sys.path.insert(0, out)
from canary_mod import Canary

m = torch.jit.script(Canary(canary))
torch.jit.save(m, os.path.join(out, "ts.pt"))
m._save_for_lite_interpreter(os.path.join(out, "lite.ptl"))
torch.jit.save_jit_module_to_flatbuffer(m, os.path.join(out, "ts.ff"))
torch.save({"w": torch.ones(2)}, os.path.join(out, "state.pt"))

from torch.package import PackageExporter
with PackageExporter(os.path.join(out, "pkg.pt")) as ex:
    ex.save_source_string("payload", f"open({canary!r}, 'w').close()\n")

# A PT2 archive whose symbolic shape expression, which torch.export.load
# hands to sympy.sympify (eval), also creates the canary.
class Double(torch.nn.Module):
    def forward(self, x):
        return x * 2

ep = torch.export.export(
    Double(), (torch.ones(3),), dynamic_shapes={"x": {0: torch.export.Dim("n")}}
)
plain = os.path.join(out, "plain.pt2")
torch.export.save(ep, plain)
src = zipfile.ZipFile(plain)
expr = "Symbol('s77', positive=True, integer=True)"
payload = f"(__import__('builtins').open({canary!r}, 'w').close(), {expr})[1]"
with zipfile.ZipFile(os.path.join(out, "evil.pt2"), "w") as dst:
    for info in src.infolist():
        data = src.read(info.filename)
        if info.filename.endswith("models/model.json"):
            text = data.decode()
            assert expr in text, "the exported program changed shape; update the payload"
            data = text.replace(expr, payload).encode()
        dst.writestr(info.filename, data)
print("built")
"""

# Loads each job in one child and prints a JSON line per job: the outcome,
# and whether the canary appeared.
HARNESS = r"""
import io, json, os, sys, warnings
warnings.simplefilter("ignore")
import torch

def read(path):
    with open(path, "rb") as fh:
        return fh.read()

def run(form, path):
    if form == "torch.load":
        return torch.load(path, weights_only=False)
    if form == "torch.load(file object)":
        with open(path, "rb") as fh:
            return torch.load(fh, weights_only=False)
    if form == "torch.load(BytesIO)":
        return torch.load(io.BytesIO(read(path)), weights_only=False)
    if form == "torch.load(weights_only=True)":
        return torch.load(path, weights_only=True)
    if form == "torch.jit.load":
        return torch.jit.load(path)
    if form == "torch.jit.load(file object)":
        with open(path, "rb") as fh:
            return torch.jit.load(fh)
    if form == "torch.jit.load(BytesIO)":
        return torch.jit.load(io.BytesIO(read(path)))
    if form == "torch.jit._serialization.load":
        import torch.jit._serialization as s
        return s.load(path)
    if form == "torch._C.import_ir_module":
        return torch._C.import_ir_module(torch._C.CompilationUnit(), path, None, {}, False)
    if form == "torch._C.import_ir_module_from_buffer":
        cu = torch._C.CompilationUnit()
        return torch._C.import_ir_module_from_buffer(cu, read(path), None, {}, False)
    if form == "torch.jit.mobile._load_for_lite_interpreter":
        from torch.jit.mobile import _load_for_lite_interpreter
        return _load_for_lite_interpreter(path)
    if form == "torch._C._load_for_lite_interpreter_from_buffer":
        return torch._C._load_for_lite_interpreter_from_buffer(read(path), None)
    if form == "torch._C._get_model_extra_files_from_buffer":
        return torch._C._get_model_extra_files_from_buffer(read(path), {})
    if form == "torch.jit.jit_module_from_flatbuffer":
        from torch.jit._serialization import jit_module_from_flatbuffer
        return jit_module_from_flatbuffer(path)
    if form == "torch._C._load_mobile_module_from_file":
        return torch._C._load_mobile_module_from_file(path)
    if form == "PackageImporter":
        from torch.package import PackageImporter
        return PackageImporter(path).import_module("payload")
    if form == "PackageImporter(file object)":
        from torch.package import PackageImporter
        with open(path, "rb") as fh:
            return PackageImporter(fh).import_module("payload")
    if form == "torch.export.load":
        return torch.export.load(path)
    if form == "torch.export.load(BytesIO)":
        return torch.export.load(io.BytesIO(read(path)))
    raise SystemExit("unknown form " + form)

jobs = json.loads(open(sys.argv[1]).read())
canary = sys.argv[2]
for form, path in jobs:
    if os.path.exists(canary):
        os.remove(canary)
    rec = {"form": form, "path": path}
    try:
        value = run(form, path)
        rec["outcome"] = "ok"
    except BaseException as e:
        rec["outcome"] = "refused" if type(e).__name__ == "NoPickleError" else "error"
        rec["error"] = type(e).__name__
        rec["message"] = str(e)[:4000]
        rec["blob_id"] = getattr(e, "blob_id", None)
        rec["file"] = getattr(e, "file", None)
    rec["fired"] = os.path.exists(canary)
    print(json.dumps(rec), flush=True)
if os.path.exists(canary):
    os.remove(canary)
"""

TS_FORMS = (
    "torch.load",
    "torch.load(file object)",
    "torch.load(BytesIO)",
    "torch.jit.load",
    "torch.jit.load(file object)",
    "torch.jit.load(BytesIO)",
    "torch.jit._serialization.load",
    "torch._C.import_ir_module",
    "torch._C.import_ir_module_from_buffer",
)
LITE_FORMS = (
    "torch.jit.mobile._load_for_lite_interpreter",
    "torch._C._load_for_lite_interpreter_from_buffer",
    "torch._C._get_model_extra_files_from_buffer",
)
FLATBUFFER_FORMS = (
    "torch.jit.jit_module_from_flatbuffer",
    "torch._C._load_mobile_module_from_file",
)
PACKAGE_FORMS = ("PackageImporter", "PackageImporter(file object)")
PT2_FORMS = ("torch.export.load", "torch.export.load(BytesIO)")


class Fixtures:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.canary = root / "canary"
        self.ts = root / "ts.pt"
        self.lite = root / "lite.ptl"
        self.flatbuffer = root / "ts.ff"
        self.state = root / "state.pt"
        self.package = root / "pkg.pt"
        self.pt2 = root / "evil.pt2"

    def jobs(self) -> list[tuple[str, Path]]:
        return [
            *((f, self.ts) for f in TS_FORMS),
            *((f, self.lite) for f in LITE_FORMS),
            *((f, self.flatbuffer) for f in FLATBUFFER_FORMS),
            *((f, self.package) for f in PACKAGE_FORMS),
            *((f, self.pt2) for f in PT2_FORMS),
        ]

    def code_files(self) -> list[Path]:
        return [self.ts, self.lite, self.flatbuffer, self.package, self.pt2]


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Fixtures:
    root = tmp_path_factory.mktemp("code-archives")
    (root / "canary_mod.py").write_text(CANARY_MODULE)
    f = Fixtures(root)
    out = ok(run_py(BUILD, args=[str(root), str(f.canary)], timeout=300))
    assert "built" in out
    assert not f.canary.exists(), "building the fixtures must not fire the payload"
    return f


def load(
    fx: Fixtures,
    jobs: list[tuple[str, Path]],
    *,
    mode: str | None = None,
    manifest: Path | None = None,
    inventory: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Runs the jobs in one child; the result per ``form``, keyed
    ``form@file name``."""
    spec = fx.root / f"jobs-{mode}.json"
    spec.write_text(json.dumps([(form, str(p)) for form, p in jobs]))
    proc = run_py(
        HARNESS,
        mode=mode,
        manifest=manifest,
        inventory=inventory,
        args=[str(spec), str(fx.canary)],
        timeout=300,
    )
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == len(jobs), f"harness died:\n{proc.stdout}\n{proc.stderr}"
    assert not fx.canary.exists()
    return {f"{r['form']}@{Path(r['path']).name}": r for r in lines}


def key(form: str, path: Path) -> str:
    return f"{form}@{path.name}"


def test_unprotected_loads_run_the_payload(fx: Fixtures) -> None:
    """Without the firewall, every one of these loads runs the file's code:
    if a technique stopped working, the refusals below would prove nothing."""
    jobs = [*fx.jobs(), ("torch.load(weights_only=True)", fx.ts)]
    res = load(fx, jobs)
    for form, path in fx.jobs():
        r = res[key(form, path)]
        assert r["fired"], f"{form} on {path.name} did not run the payload: {r}"
    # torch.load's weights-only default refuses TorchScript archives itself.
    wo = res[key("torch.load(weights_only=True)", fx.ts)]
    assert wo["outcome"] == "error" and not wo["fired"]


@pytest.mark.parametrize("mode", ["deny", "enforce"])
def test_deny_and_enforce_refuse_before_any_code_runs(fx: Fixtures, mode: str) -> None:
    manifest = None
    if mode == "enforce":
        # The archive's pickle streams, listed alone, allow nothing: its code
        # is outside them.
        streams = [s for p in fx.code_files() for r in hermetic.scan(p) for s in r.streams]
        assert streams
        lines = [f'"{s.sha256}" = {{ size = {s.length} }}' for s in streams]
        manifest = write_manifest(fx.root / "streams.toml", sorted(set(lines)))
    jobs = [*fx.jobs(), ("torch.load(weights_only=True)", fx.ts)]
    res = load(fx, jobs, mode=mode, manifest=manifest)
    ts_id = hermetic.blob_id(fx.ts.read_bytes())
    for r in res.values():
        assert r["outcome"] == "refused", r
        assert not r["fired"], r
        path = Path(r["path"])
        assert r["blob_id"] == hermetic.blob_id(path.read_bytes()), r
        assert "runs code" in r["message"], r["message"]
    for form in TS_FORMS:
        r = res[key(form, fx.ts)]
        msg = r["message"]
        assert r["blob_id"] == ts_id
        assert "a TorchScript archive" in msg and "the SHA-256 of the whole file" in msg, msg
        assert f'"{ts_id}" = {{ size = {fx.ts.stat().st_size}' in msg, msg
        if "BytesIO" not in form and "from_buffer" not in form:
            # The file is named, and the command that lists it given.
            assert r["file"] == str(fx.ts), r
            assert f"file:      {fx.ts}" in msg, msg
        if "BytesIO" not in form and "from_buffer" not in form and "file object" not in form:
            assert f"hermetic manifest add {fx.ts}" in msg, msg
    assert "torch.load" in res[key("torch.load", fx.ts)]["message"]
    assert (
        "PackageImporter imports the Python modules"
        in res[key("PackageImporter", fx.package)]["message"]
    )
    assert "sympy.sympify" in res[key("torch.export.load", fx.pt2)]["message"]


def test_a_listed_archive_loads_under_enforce(fx: Fixtures) -> None:
    """The manifest line for the whole file lets each entry point through
    (and then the trusted file's code runs, as it would without hermetic).
    Pickles a trusted archive's loader unpickles on its own (a PT2's sample
    inputs, through torch.load) are decided on their own, by their ids."""
    streams = {
        f'"{s.sha256}" = {{ size = {s.length} }}'
        for p in fx.code_files()
        for r in hermetic.scan(p)
        for s in r.streams
    }
    manifest = write_manifest(
        fx.root / "whole.toml",
        [blob_line(p.read_bytes()) for p in fx.code_files()] + sorted(streams),
    )
    res = load(fx, fx.jobs(), mode="enforce", manifest=manifest)
    for r in res.values():
        assert r["outcome"] == "ok", r
        assert r["fired"], r


def test_manifest_add_lists_the_whole_archive(fx: Fixtures, tmp_path: Path) -> None:
    manifest = tmp_path / "m.toml"
    added = hermetic_cli("manifest", "add", str(fx.ts), "--to", str(manifest))
    assert added.returncode == 0, added.stderr
    ts_id = hermetic.blob_id(fx.ts.read_bytes())
    assert ts_id in manifest.read_text()
    res = load(
        fx, [("torch.jit.load", fx.ts), ("torch.load", fx.ts)], mode="enforce", manifest=manifest
    )
    assert all(r["outcome"] == "ok" for r in res.values()), res


def test_record_inventories_archives_and_freeze_allows_them(fx: Fixtures, tmp_path: Path) -> None:
    inventory = tmp_path / "inv.jsonl"
    jobs = [
        ("torch.load", fx.ts),
        ("torch.jit.load", fx.ts),
        ("torch.jit.load(BytesIO)", fx.ts),
        ("PackageImporter", fx.package),
    ]
    res = load(fx, jobs, mode="record", inventory=inventory)
    assert all(r["outcome"] == "ok" and r["fired"] for r in res.values()), res
    recs = [json.loads(x) for x in inventory.read_text().splitlines()]
    ts_id = hermetic.blob_id(fx.ts.read_bytes())
    ts_loads = [r for r in recs if r["event"] == "load" and r["blob"] == ts_id]
    assert ts_loads, recs
    for r in ts_loads:
        assert r["kind"] == "torchscript" and r["size"] == fx.ts.stat().st_size
        # The call site is the program's, not torch.jit's.
        assert r["call_site"] == "__main__:run", r
        assert "torchscript_code" in r["findings"]
    # One line per blob, call site and file: torch.jit.load of the same
    # path repeats torch.load's; the BytesIO has no file.
    entries = {(r["entry_point"], r["file"]) for r in ts_loads}
    assert entries == {
        ("torch.load", str(fx.ts)),
        ("torch.jit.load (torch._C.import_ir_module_from_buffer)", None),
    }
    pkg = [r for r in recs if r.get("kind") == "torch.package"]
    assert pkg and pkg[0]["blob"] == hermetic.blob_id(fx.package.read_bytes())

    manifest = tmp_path / "frozen.toml"
    frozen = hermetic_cli("manifest", "freeze", str(inventory), "-o", str(manifest))
    assert frozen.returncode == 0, frozen.stderr
    res = load(fx, jobs, mode="enforce", manifest=manifest)
    assert all(r["outcome"] == "ok" for r in res.values()), res


def test_warn_mode_warns_and_loads(fx: Fixtures, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.toml", [])
    proc = run_py(
        f"""
        import os, warnings, torch
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.jit.load({str(fx.ts)!r})
        found = [str(w.message) for w in caught if w.category.__name__ == "PickleWarning"]
        print(len(found), os.path.exists({str(fx.canary)!r}))
        print(found[0])
        os.remove({str(fx.canary)!r})
        """,
        mode="warn",
        manifest=manifest,
    )
    out = ok(proc)
    assert out.splitlines()[0] == "1 True"
    assert "hermetic loaded an unlisted TorchScript archive" in out


def test_no_pickles_blocks_restrict_torchscript(fx: Fixtures) -> None:
    ts_id = hermetic.blob_id(fx.ts.read_bytes())
    out = ok(
        run_py(
            f"""
            import os, warnings, hermetic, torch
            warnings.simplefilter("ignore")
            with hermetic.no_pickles() as token:
                try:
                    torch.jit.load({str(fx.ts)!r})
                except hermetic.NoPickleError as e:
                    fired = os.path.exists({str(fx.canary)!r})
                    print("refused", "TorchScript archive" in str(e), fired)
                with hermetic.allow_pickles(token, only_objects=[{ts_id!r}]):
                    torch.jit.load({str(fx.ts)!r})
                    print("allowed", os.path.exists({str(fx.canary)!r}))
            os.remove({str(fx.canary)!r})
            """
        )
    )
    assert out.split() == ["refused", "True", "False", "allowed", "True"]


def test_state_dicts_load_as_before(fx: Fixtures, tmp_path: Path) -> None:
    """A torch.save checkpoint is not a code archive: the pickle hooks
    decide on its data.pkl as before, by that stream's id."""
    [result] = hermetic.scan(fx.state)
    assert result.format == "torch-zip"
    manifest = write_manifest(
        tmp_path / "m.toml", [f'"{s.sha256}" = {{ size = {s.length} }}' for s in result.streams]
    )
    inventory = tmp_path / "inv.jsonl"
    # A link to the checkpoint, as the Hugging Face cache makes them.
    link = tmp_path / "link.pt"
    link.symlink_to(fx.state)
    code = f"""
        import io, torch
        for kw in ({{}}, {{"weights_only": False}}):
            assert torch.load({str(fx.state)!r}, **kw)["w"].sum() == 2
            assert torch.load({str(link)!r}, **kw)["w"].sum() == 2
            with open({str(fx.state)!r}, "rb") as fh:
                assert torch.load(fh, **kw)["w"].sum() == 2
            with open({str(fx.state)!r}, "rb") as fh:
                assert torch.load(io.BytesIO(fh.read()), **kw)["w"].sum() == 2
        print("loaded")
        """
    assert "loaded" in ok(run_py(code, mode="enforce", manifest=manifest))
    assert "loaded" in ok(run_py(code, mode="record", inventory=inventory))
    recs = [json.loads(x) for x in inventory.read_text().splitlines()]
    loads = [r for r in recs if r["event"] == "load"]
    assert loads and all("kind" not in r for r in loads), loads
    assert {r["blob"] for r in loads} == {s.sha256 for s in result.streams}
    # Under deny the checkpoint's pickle is refused, as it always was.
    proc = run_py(code, mode="deny")
    assert proc.returncode == 1 and "refused to unpickle blob" in proc.stderr, proc.stderr


def test_an_ambiguous_zip_is_decided_as_a_whole_file(fx: Fixtures, tmp_path: Path) -> None:
    """Fail closed: when the scanner cannot rule out that torch's zip reader
    sees a TorchScript archive, torch.load decides on the whole file."""
    odd = tmp_path / "odd.pt"
    odd.write_bytes(fx.state.read_bytes() + b"trailing bytes after the archive")
    [result] = hermetic.scan(odd)
    assert any(f.code == "ambiguous_zip" for f in result.all_findings()), result
    streams = [f'"{s.sha256}" = {{ size = {s.length} }}' for s in result.streams]
    manifest = write_manifest(tmp_path / "m.toml", streams)
    proc = run_py(
        f"""
        import torch
        torch.load({str(odd)!r})
        """,
        mode="enforce",
        manifest=manifest,
    )
    assert proc.returncode == 1, proc.stderr
    assert "cannot rule out" in proc.stderr and "ambiguous_zip" in proc.stderr, proc.stderr
    odd_id = hermetic.blob_id(odd.read_bytes())
    assert odd_id in proc.stderr
    assert f"hermetic manifest add {odd}" in proc.stderr
    # manifest add lists such a file whole too, and then it loads.
    whole = tmp_path / "whole.toml"
    added = hermetic_cli("manifest", "add", "--force", str(odd), "--to", str(whole))
    assert added.returncode == 0, added.stderr
    listed = whole.read_text()
    assert odd_id in listed
    # ... under the file's own name, since the id is the whole file's.
    line = next(ln for ln in listed.splitlines() if odd_id in ln)
    assert f'source = "{odd}"' in line and "whole file" in line, line
    ok(run_py(f"import torch; torch.load({str(odd)!r})", mode="enforce", manifest=whole))


def test_buffer_forms_are_checked_on_exactly_the_bytes_given() -> None:
    """A buffer that is not bytes is snapshotted: what torch parses is what
    was hashed."""
    from hermetic.firewall import _code

    data = bytearray(b"PK\x03\x04 not really an archive")
    snap = _code._as_buffer(data, "t")
    data[0] = 0
    assert snap == b"PK\x03\x04 not really an archive"
    assert _code._as_buffer("é", "t") == "é".encode()
    with pytest.raises(TypeError):
        _code._as_buffer(io.BytesIO(b""), "t")
