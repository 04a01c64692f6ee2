"""`Manifest.decide_blob`: one call decides a load, asks for the call stack
only when the decision depends on it, and names the rule that allowed it."""

from __future__ import annotations

import pickle

import hermetic
from hermetic import _hermetic

BLOB = pickle.dumps({"a": 1}, protocol=4)
BLOB_ID = hermetic.blob_id(BLOB)


def _manifest(callers: str = "") -> _hermetic.Manifest:
    entry = f"size = {len(BLOB)}" + (f", callers = [{callers!r}]" if callers else "")
    rule = '[rules.mine]\ncallers = ["app.worker:recv"]\n'
    text = f'version = 1\n{rule}[blobs]\n"{BLOB_ID}" = {{ {entry} }}\n'
    return _hermetic.Manifest.from_toml(text)


class _Stack:
    def __init__(self, frames: list[str]) -> None:
        self.frames = frames
        self.calls = 0

    def __call__(self) -> tuple[list[str], str | None]:
        self.calls += 1
        return self.frames, "app/worker.py:3"


def test_listed_blob_without_callers_never_walks_the_stack() -> None:
    s = _Stack(["app.main:run"])
    # Simply allowed and not recorded: no Decision is made at all.
    assert _manifest().decide_blob("enforce", BLOB, None, s) is None
    assert s.calls == 0
    d = _manifest().decide_blob("enforce", BLOB, None, None, True)
    assert d is not None
    assert (d.action, d.judgement, d.rule) == ("allow", "listed", None)
    assert d.blob_id == BLOB_ID and d.size == len(BLOB)
    assert d.frames is None


def test_frames_are_taken_once_when_the_decision_needs_them() -> None:
    s = _Stack(["app.main:run"])
    d = _manifest("app.train:*").decide_blob("enforce", BLOB, BLOB_ID, s)
    assert d is not None and s.calls == 1
    assert (d.action, d.judgement) == ("refuse", "caller-mismatch")
    assert d.frames == ["app.main:run"] and d.location == "app/worker.py:3"
    # Recording asks for the frames even when the decision does not need them.
    s2 = _Stack(["app.main:run"])
    d2 = _manifest().decide_blob("enforce", BLOB, None, s2, True)
    assert d2 is not None and d2.frames == ["app.main:run"] and s2.calls == 1


def test_a_rule_is_named_not_encoded_in_the_label() -> None:
    s = _Stack(["app.worker:recv"])
    d = _manifest().decide_blob("deny", b"\x80\x04N.", None, s, True)
    assert d is not None
    assert (d.action, d.judgement, d.rule) == ("allow", "rule:mine", "mine")


def test_scan_summary_is_the_scanners() -> None:
    evil = b"cos\nsystem\n(S'true'\ntR."
    d = _manifest().decide_blob("enforce", evil, None, _Stack([]))
    assert d is not None and d.action == "refuse"
    first = d.scan()
    assert first == _hermetic.scan_summary(evil)
    assert d.scan() == first
    assert first[0] == "dangerous"
