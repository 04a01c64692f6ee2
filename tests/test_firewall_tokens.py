"""The token API: ``hermetic.no_pickles()`` and ``hermetic.allow_pickles()``.

Every scenario runs in a fresh interpreter: the firewall's audit hook stays
for the life of a process, so nothing may switch it on in the pytest process.
"""

from __future__ import annotations

import pytest
from _firewall_util import ok, run_py

# Shared prelude of every scenario: a data pickle, a pickle that would
# create CANARY if it ran, and helpers that assert refusal.
PRELUDE = r"""
import asyncio, copy, os, pickle, sys, threading
import hermetic

CANARY = os.path.abspath("canary")
DATA = pickle.dumps({"w": [1.0, 2.0]}, protocol=4)
OTHER = pickle.dumps([3, 4], protocol=2)
EVIL = ("c__builtin__\nopen\n(S'%s'\nS'w'\ntR." % CANARY).encode()
ID = hermetic.blob_id(DATA)

def refused(fn, *a):
    try:
        fn(*a)
    except hermetic.NoPickleError as e:
        return e
    raise AssertionError(f"{fn} was not refused")

def no_canary():
    assert not os.path.exists(CANARY), "a refused pickle ran"
"""


def scenario(body: str) -> str:
    return ok(run_py(PRELUDE + body))


def test_no_pickles_refuses_every_entry_point_and_restores_after() -> None:
    out = scenario(
        r"""
import io
with hermetic.no_pickles() as token:
    e = refused(pickle.loads, EVIL)
    refused(pickle.loads, DATA)
    refused(pickle.load, io.BytesIO(DATA))
    refused(pickle.Unpickler(io.BytesIO(DATA)).load)
    refused(pickle._Unpickler(io.BytesIO(DATA)).load)
    refused(pickle._loads, DATA)
    no_canary()
    # The refusal teaches: blob id, size, call site, scanner, the fix.
    msg = str(e)
    assert hermetic.blob_id(EVIL) in msg and f"({len(EVIL)} bytes)" in msg, msg
    assert "__main__:refused" in msg and "builtins.open" in msg, msg
    assert "allow_pickles(token, only_objects=" in msg, msg
    assert e.blob_id == hermetic.blob_id(EVIL) and e.size == len(EVIL)
assert pickle.loads(DATA) == {"w": [1.0, 2.0]}
print("done")
"""
    )
    assert "done" in out


def test_allow_pickles_with_the_token_and_only_objects() -> None:
    scenario(
        r"""
with hermetic.no_pickles() as token:
    with hermetic.allow_pickles(token):
        assert pickle.loads(OTHER) == [3, 4]
    with hermetic.allow_pickles(token, only_objects=[ID]):
        assert pickle.loads(DATA) == {"w": [1.0, 2.0]}
        e = refused(pickle.loads, OTHER)
        assert "allows only 1 other blob id" in str(e), str(e)
        refused(pickle.loads, EVIL)
    no_canary()
    refused(pickle.loads, DATA)
"""
    )


@pytest.mark.parametrize(
    "bad",
    ["None", "object()", "'token'", "copy.copy", "forged", "stale", "lookalike"],
)
def test_wrong_tokens_raise_bad_token_error(bad: str) -> None:
    scenario(
        rf"""
class Lookalike:
    def __eq__(self, other):
        return True
    __hash__ = object.__hash__

with hermetic.no_pickles() as old:
    pass
with hermetic.no_pickles() as token:
    if {bad!r} == "copy.copy":
        try:
            copy.copy(token)
        except TypeError:
            pass
        else:
            raise AssertionError("tokens must not be copyable")
        try:
            pickle.dumps(token)
        except TypeError:
            pass
        else:
            raise AssertionError("tokens must not be picklable")
        candidate = None
    elif {bad!r} == "forged":
        try:
            type(token)()
        except TypeError:
            pass
        else:
            raise AssertionError("tokens must not be constructible")
        candidate = object.__new__(type(token))
    elif {bad!r} == "stale":
        candidate = old
    elif {bad!r} == "lookalike":
        candidate = Lookalike()
    else:
        candidate = {bad}
    try:
        hermetic.allow_pickles(candidate)
    except hermetic.BadTokenError:
        pass
    else:
        raise AssertionError("accepted a wrong token")
    refused(pickle.loads, DATA)
"""
    )


def test_nested_restrictions_need_every_token() -> None:
    scenario(
        r"""
with hermetic.no_pickles() as outer:
    with hermetic.no_pickles() as inner:
        with hermetic.allow_pickles(outer):
            refused(pickle.loads, DATA)
        with hermetic.allow_pickles(inner):
            refused(pickle.loads, DATA)
        with hermetic.allow_pickles(outer), hermetic.allow_pickles(inner):
            assert pickle.loads(DATA)
        # The innermost permission for a token wins.
        with hermetic.allow_pickles(outer), hermetic.allow_pickles(inner):
            with hermetic.allow_pickles(inner, only_objects=[ID]):
                refused(pickle.loads, OTHER)
            assert pickle.loads(OTHER) == [3, 4]
    # The inner block ended: the outer token alone suffices again.
    with hermetic.allow_pickles(outer):
        assert pickle.loads(DATA)
    refused(pickle.loads, DATA)
assert pickle.loads(DATA)
"""
    )


def test_a_library_cannot_lift_the_restriction_without_the_token() -> None:
    scenario(
        r"""
def sneaky_library(data):
    # Its own no_pickles block gives it a token, but not the caller's.
    with hermetic.no_pickles() as mine:
        with hermetic.allow_pickles(mine):
            return pickle.loads(data)

def guessing_library(data):
    import gc
    for candidate in (None, 0, "", object()):
        try:
            with hermetic.allow_pickles(candidate):
                return pickle.loads(data)
        except hermetic.BadTokenError:
            pass
    raise hermetic.NoPickleError("gave up")

with hermetic.no_pickles() as token:
    refused(sneaky_library, EVIL)
    refused(guessing_library, EVIL)
    no_canary()
"""
    )


def test_restriction_covers_all_threads_and_permission_only_its_own() -> None:
    scenario(
        r"""
results = {}

def worker(name, data):
    try:
        results[name] = pickle.loads(data)
    except hermetic.NoPickleError:
        results[name] = "refused"

with hermetic.no_pickles() as token:
    # Another thread is restricted too.
    t = threading.Thread(target=worker, args=("plain", DATA)); t.start(); t.join()
    assert results["plain"] == "refused", results
    with hermetic.allow_pickles(token):
        assert pickle.loads(DATA)
        # A thread started inside allow_pickles does not inherit it ...
        t = threading.Thread(target=worker, args=("inside", EVIL)); t.start(); t.join()
        assert results["inside"] == "refused", results
        no_canary()
        # ... not even when handed this thread's context.
        import contextvars
        ctx = contextvars.copy_context()
        t = threading.Thread(target=ctx.run, args=(worker, "ctx", DATA)); t.start(); t.join()
        assert results["ctx"] == "refused", results
# A restriction entered in another thread restricts this one.
entered, leave = threading.Event(), threading.Event()
def restrict():
    with hermetic.no_pickles():
        entered.set(); leave.wait()
t = threading.Thread(target=restrict); t.start(); entered.wait()
refused(pickle.loads, DATA)
leave.set(); t.join()
assert pickle.loads(DATA)
"""
    )


def test_permissions_are_per_asyncio_task() -> None:
    scenario(
        r"""
async def load(data):
    await asyncio.sleep(0)
    try:
        return pickle.loads(data)
    except hermetic.NoPickleError:
        return "refused"

async def holder(token, started, done):
    with hermetic.allow_pickles(token):
        started.set()
        first = pickle.loads(DATA)
        # A task created inside the block does not inherit the permission.
        child = await asyncio.create_task(load(EVIL))
        await done.wait()
        return first, child

async def main():
    with hermetic.no_pickles() as token:
        started, done = asyncio.Event(), asyncio.Event()
        h = asyncio.create_task(holder(token, started, done))
        await started.wait()
        # While the holder's permission is in force, another task is refused.
        other = await asyncio.create_task(load(DATA))
        done.set()
        first, child = await h
        assert first == {"w": [1.0, 2.0]}
        assert child == "refused", child
        assert other == "refused", other
        no_canary()

asyncio.run(main())
"""
    )


def test_captured_references_and_earlier_subclasses_are_stopped_by_the_audit_hook() -> None:
    scenario(
        r"""
import io
from pickle import loads as early_loads            # taken before the firewall
from _pickle import Unpickler as CUnpickler

class EarlyC(CUnpickler):
    pass

class EarlyPy(pickle._Unpickler):
    pass

class CustomFindClass(CUnpickler):
    def find_class(self, module, name):
        return super().find_class(module, name)

with hermetic.no_pickles() as token:
    for load in (
        lambda: early_loads(EVIL),
        lambda: EarlyC(io.BytesIO(EVIL)).load(),
        lambda: CustomFindClass(io.BytesIO(EVIL)).load(),
        lambda: EarlyPy(io.BytesIO(EVIL)).load(),
    ):
        refused(load)
    no_canary()
    # The audit hook lets globals resolve inside an approved load only.
    with hermetic.allow_pickles(token):
        assert EarlyPy(io.BytesIO(DATA)).load()
        import collections
        od = pickle.dumps(collections.OrderedDict(a=1))
        assert pickle.loads(od) == {"a": 1}
        # A data-only stream through a captured C reference resolves no
        # global, so it is harmless; one with a global is refused, because
        # the firewall cannot see its bytes.
        assert early_loads(DATA) == {"w": [1.0, 2.0]}
        refused(early_loads, od)
"""
    )


def test_refusals_leave_files_where_the_unpickler_would() -> None:
    scenario(
        r"""
import io
buf = io.BytesIO(DATA + OTHER + b"tail")
with hermetic.no_pickles() as token:
    with hermetic.allow_pickles(token):
        assert pickle.load(buf) == {"w": [1.0, 2.0]}
        assert buf.tell() == len(DATA)
        u = pickle.Unpickler(buf)
        assert u.load() == [3, 4]
        assert buf.read() == b"tail"
        # End of file raises EOFError, as loops over pickle.load expect.
        try:
            pickle.load(io.BytesIO(b""))
        except EOFError:
            pass
        else:
            raise AssertionError("no EOFError")
"""
    )
