"""The `hermetic-scan` pre-commit hook, run by the real `pre-commit` against temporary repos.

The hook (`.pre-commit-hooks.yaml`) runs the `hermetic` command already installed next to
this interpreter, so nothing is built or downloaded: the hook repository is a temporary git
repository holding a copy of the manifest, and the project a second one.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pre_commit")

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# A tampered checkpoint: loading it would call os.system("true"). Never loaded here.
EVIL = b"cos\nsystem\n(S'true'\ntR."
# A pickle of a project's own class: suspicious, allowed by a policy.
MODEL = b"\x80\x02cmypkg.models\nNet\n)\x81."

if shutil.which("hermetic", path=str(BIN)) is None:
    pytest.skip("the hermetic command is not installed next to python", allow_module_level=True)


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "PRE_COMMIT"))}
    e.update(
        PATH=f"{BIN}{os.pathsep}{e.get('PATH', '')}",
        PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"),
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.invalid",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.invalid",
    )
    e.pop("HERMETIC_PICKLE", None)
    return e


def sh(
    env: dict[str, str], cwd: Path, *args: str | Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    if check and p.returncode != 0:
        raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def git_init(env: dict[str, str], path: Path) -> None:
    path.mkdir()
    sh(env, path, "git", "init", "-q", "-b", "main")


def commit(env: dict[str, str], repo: Path, message: str, *, verify: bool = False) -> None:
    sh(env, repo, "git", "add", "-A")
    sh(env, repo, "git", "commit", "-q", "-m", message, *([] if verify else ["--no-verify"]))


def precommit(
    env: dict[str, str], cwd: Path, *args: str | Path
) -> subprocess.CompletedProcess[str]:
    return sh(env, cwd, sys.executable, "-m", "pre_commit", *args, check=False)


@pytest.fixture()
def hook_repo(tmp_path: Path, env: dict[str, str]) -> Path:
    repo = tmp_path / "hook-repo"
    git_init(env, repo)
    shutil.copy(ROOT / ".pre-commit-hooks.yaml", repo / ".pre-commit-hooks.yaml")
    commit(env, repo, "hooks")
    return repo


@pytest.fixture()
def project(tmp_path: Path, env: dict[str, str]) -> Path:
    repo = tmp_path / "project"
    git_init(env, repo)
    (repo / "README.md").write_text("a model\n")
    (repo / "weights.pkl").write_bytes(pickle.dumps({"w": [0.5, 1.5], "step": 3}, protocol=4))
    (repo / "config.json").write_text("{}\n")
    sh(env, repo, "git", "add", "-A")
    return repo


def head(env: dict[str, str], repo: Path) -> str:
    return sh(env, repo, "git", "rev-parse", "HEAD").stdout.strip()


def test_manifest_hook_shape() -> None:
    # pre-commit's own loader validates the manifest as `pre-commit` reads it.
    from pre_commit.clientlib import load_manifest  # type: ignore[import-untyped]

    (hook,) = load_manifest(str(ROOT / ".pre-commit-hooks.yaml"))
    assert hook["id"] == "hermetic-scan"
    assert hook["entry"] == "hermetic scan"
    assert hook["args"] == ["--fail-on", "suspicious"]
    assert hook["language"] in ("system", "unsupported"), "uses the installed hermetic"
    files = re.compile(hook["files"])
    for name in ["m.pt", "m.PTH", "a/b.bin", "c.ckpt", "d.pkl", "e.pickle", "f.joblib"]:
        assert files.search(name), name
    for name in ["g.npy", "h.npz", "i.safetensors", "j.tar", "k.dill"]:
        assert files.search(name), name
    for name in ["README.md", "train.py", "data.csv", "m.pt.txt"]:
        assert not files.search(name), name


def test_try_repo_passes_a_clean_commit_and_blocks_a_tampered_checkpoint(
    env: dict[str, str], hook_repo: Path, project: Path
) -> None:
    clean = precommit(env, project, "try-repo", hook_repo, "hermetic-scan")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "Passed" in clean.stdout

    (project / "model.ckpt").write_bytes(EVIL)
    sh(env, project, "git", "add", "model.ckpt")
    bad = precommit(env, project, "try-repo", hook_repo, "hermetic-scan")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "Failed" in bad.stdout
    assert "model.ckpt" in bad.stdout and "os.system (called)" in bad.stdout


def test_installed_hook_blocks_git_commit(
    env: dict[str, str], hook_repo: Path, project: Path
) -> None:
    (project / ".pre-commit-config.yaml").write_text(
        f"repos:\n- repo: {hook_repo}\n  rev: {head(env, hook_repo)}\n"
        "  hooks:\n  - id: hermetic-scan\n"
    )
    sh(env, project, "git", "add", "-A")
    install = precommit(env, project, "install")
    assert install.returncode == 0, install.stdout + install.stderr

    commit(env, project, "clean", verify=True)
    first = head(env, project)

    (project / "checkpoints").mkdir()
    (project / "checkpoints" / "epoch1.pt").write_bytes(EVIL)
    sh(env, project, "git", "add", "-A")
    blocked = sh(env, project, "git", "commit", "-m", "tampered", check=False)
    assert blocked.returncode != 0
    assert "dangerous" in blocked.stdout + blocked.stderr
    assert head(env, project) == first, "the tampered commit was not made"


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (None, 1),  # suspicious fails the default level
        ("[--fail-on, dangerous]", 0),
        ("[--policy, policy.toml]", 0),
        ("[--policy, policy.toml, --fail-on, dangerous]", 0),
    ],
)
def test_args_pass_policy_and_fail_level(
    env: dict[str, str], hook_repo: Path, project: Path, args: str | None, code: int
) -> None:
    (project / "policy.toml").write_text('[allow]\nglobals = ["mypkg.models:*"]\n')
    (project / "net.pkl").write_bytes(MODEL)
    config = project / ".pre-commit-config.yaml"
    config.write_text(
        f"repos:\n- repo: {hook_repo}\n  rev: {head(env, hook_repo)}\n"
        "  hooks:\n  - id: hermetic-scan\n" + (f"    args: {args}\n" if args else "")
    )
    sh(env, project, "git", "add", "-A")
    p = precommit(env, project, "run", "--files", "net.pkl", "weights.pkl")
    assert p.returncode == code, p.stdout + p.stderr
    if code:
        assert "mypkg.models.Net" in p.stdout
