"""The Python agent the end-to-end tests drive. Each input record names an
"op"; the "dispatch" action does what the op says."""
import asyncio
import collections
import contextvars
import enum
import functools
import itertools
import json
import os
import sys
import threading
import time
import types

from eddy import Agent, Event, InputEvent, NonDeterminismError, OutputEvent, RunnerContext, action


if os.environ.get("EDDY_TEST_PRINT_AT_IMPORT"):
    print("printed when the agent is imported")


class Step(Event):
    pass


class NulStep(Event):
    pass


class Fanned(Event):
    pass


class CustomError(Exception):
    def __init__(self, message, code=0):
        super().__init__(message, code)
        self.code = code


class OddModule:
    """A class's __module__ that can be neither compared nor formatted."""

    def __eq__(self, other):
        raise RuntimeError("no __eq__")

    def __str__(self):
        raise RuntimeError("no __str__")


class Odd(Exception):
    """Its qualified name cannot be made: it was journaled without its
    message (the replay raised DurableCallError('Odd: '))."""


Odd.__module__ = OddModule()


def surrogate_named(x):
    return x


# A lone surrogate in a function's name: its durable call's id is no UTF-8.
surrogate_named.__qualname__ = "caf" + os.fsdecode(b"\xe9")


class TwoArg(Exception):
    """Pickles, but pickle cannot re-create it: its __init__ takes more than
    the args it passes on."""

    def __init__(self, msg, code):
        super().__init__(msg)
        self.code = code


class HTTPError(Exception):
    """Given attributes after it is made, one of which does not pickle."""


class ApiError(Exception):
    """Its args hold one that does not pickle."""

    def __init__(self, msg, code, conn):
        super().__init__(msg, code, conn)
        self.code = code


def describe_error(e):
    """What a replay keeps of an exception: its args, attributes and causes."""
    d = {"args": [a if isinstance(a, (str, int)) else "repr: " + repr(a) for a in e.args],
         "attributes": {k: v for k, v in vars(e).items() if k != "__notes__"
                        and isinstance(v, (str, int))},
         "dropped": sorted(k for k, v in vars(e).items() if k != "__notes__"
                           and not isinstance(v, (str, int))),
         "causes": []}
    c = e.__cause__
    while c is not None and len(d["causes"]) < 20:
        d["causes"].append([type(c).__module__ + "." + type(c).__qualname__, str(c),
                            getattr(c, "status", None)])
        c = c.__cause__
    return d


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Tag(str):
    def shout(self):
        return self.upper() + "!"


def typed_value(path, kind):
    """A durable result that JSON would not give back as it is (counted)."""
    with open(path, "a") as f:
        f.write("called\n")
    if kind == "tuple":
        return (1, (2, "x"), [3])
    if kind == "defaultdict":
        return collections.defaultdict(list, {"a": [1]})
    if kind == "intenum":
        return Level.HIGH
    if kind == "str_subclass":
        return {"tag": Tag("hi")}
    raise ValueError(kind)


def describe_typed(kind, v):
    """What the action sees of typed_value's result: types and behaviour."""
    d = {"type": type(v).__module__ + "." + type(v).__qualname__}
    if kind == "tuple":
        d["inner"] = [type(x).__name__ for x in v]
        d["value"] = [v[0], list(v[1]), v[2]]
    elif kind == "defaultdict":
        v["b"].append(2)  # default_factory still at work
        d["value"] = dict(v)
    elif kind == "intenum":
        d["is_member"] = v is Level.HIGH
        d["name"] = v.name
    elif kind == "str_subclass":
        d["tag_type"] = type(v["tag"]).__name__
        d["shout"] = v["tag"].shout()
    return d


def now_us():
    return int(time.monotonic() * 1e6)


def sleep_call(x, ms):
    t0 = now_us()
    if ms:
        time.sleep(ms / 1000)
    return {"x": x + 1, "start": t0, "end": now_us()}


def spin(seconds):
    """Pure Python work: needs the GIL throughout."""
    t0 = now_us()
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return {"start": t0, "end": now_us(), "n": n}


def count(path, value):
    """A side effect that the tests count: one line per real call."""
    with open(path, "a") as f:
        f.write("called\n")
    return value


def count_args(path, *args, **kwargs):
    """Counted; says what it was called with (as text: a bytes argument too)."""
    with open(path, "a") as f:
        f.write("called\n")
    return [repr(a) for a in args] + ["%s=%r" % kv for kv in sorted(kwargs.items())]


def count_and_raise(path, kind):
    with open(path, "a") as f:
        f.write("called\n")
    if kind == "custom":
        raise CustomError("custom failure", code=7)
    if kind == "two_arg":
        raise TwoArg("two", 5)
    if kind == "unpicklable_attribute":
        e = HTTPError("404")
        e.status = 404
        e.response = threading.Lock()
        raise e
    if kind == "unpicklable_arg":
        raise ApiError("bad gateway", 502, threading.Lock())
    if kind == "cause":
        # Fully picklable, but pickle keeps no __cause__.
        try:
            try:
                raise KeyError("k")
            except KeyError as k:
                inner = HTTPError("503")
                inner.status = 503
                inner.response = threading.Lock()
                raise inner from k
        except HTTPError as h:
            raise ValueError("outer") from h
    if kind == "odd_module":
        raise Odd("odd failure")
    if kind == "local":
        class Local(Exception):
            """Found by no name: neither pickled nor looked up on replay."""
        raise Local("from a local class")
    # A lone surrogate in the message (os.fsdecode of a name that is not
    # UTF-8): the journal holds UTF-8, and lost the message and the pickle.
    if kind == "surrogate":
        raise ValueError("cannot parse " + os.fsdecode(b"caf\xe9.txt"))
    if kind == "surrogate_local":
        class Local(Exception):
            """Replayed from the journaled type name and message alone."""
        raise Local("cannot parse " + os.fsdecode(b"caf\xe9.txt"))
    raise ValueError("value failure")


def call_then_crash(path, crash, value):
    """Counted; dies in the middle of the call while the crash flag exists."""
    with open(path, "a") as f:
        f.write("called\n")
    if crash and os.path.exists(crash):
        os._exit(3)
    return value


async def fetch_async(x):
    """A coroutine function: not what the call API takes."""
    return x


async def stream_async(x):
    """An async generator function: no more what the call API takes."""
    yield x


class AsyncCallable:
    async def __call__(self, x):
        return x

    async def method(self, x):
        return x


class SingletonError(Exception):
    """Pickled by reference: unpickling gives back the module's object."""

    def __reduce__(self):
        return "SINGLETON_ERROR"


SINGLETON_ERROR = SingletonError("the one")


def count_then_raise_singleton(path):
    count(path, None)
    raise SINGLETON_ERROR


def crash_if(flag):
    if flag and os.path.exists(flag):
        os._exit(3)


# The context (and a memory object) keep_ctx keeps, for use_kept; set once
# use_kept tried them.
KEPT = {}
KEPT_TRIED = threading.Event()


def wait_kept():
    deadline = time.monotonic() + 60
    while "ctx" not in KEPT and time.monotonic() < deadline:
        time.sleep(0.005)


# Set by the hold_ready op once it runs (see inline_then_call).
HOLDING = threading.Event()


def wait_holding():
    """Until the hold_ready action steps, and a little more: syncs put off
    by the commits before it have been asked for by then."""
    HOLDING.wait(60)
    time.sleep(0.05)


# Which branch of a gather of coroutines runs: each has its own copy of the
# action's context, as asyncio gives each Task one.
branch_tag = contextvars.ContextVar("branch_tag", default="action")


async def counted_branch(ctx, counter, tag, n):
    """One branch of gather_coros: n durable calls one after the other."""
    branch_tag.set(tag)
    got = []
    for i in range(n):
        got.append(await ctx.durable_execute_async(count, counter, "%s%d" % (tag, i)))
    return got + [branch_tag.get()]


async def nested_branches(ctx, counter):
    return await ctx.gather(counted_branch(ctx, counter, "x", 2),
                            counted_branch(ctx, counter, "y", 1))


async def sleeping_branch(ctx, ms):
    t0 = time.monotonic()
    for i in range(2):
        await ctx.execute_async(sleep_call, i, ms)
    return time.monotonic() - t0


async def failing_branch(ctx, ms):
    await ctx.execute_async(sleep_call, 0, ms)
    raise ValueError("branch failed")


async def stubborn_branch(ctx):
    """Catches eddy's refusal and awaits something refused again, for ever."""
    while True:
        try:
            await asyncio.sleep(0)
        except TypeError:
            pass


@types.coroutine
def generator_branch(ctx):
    r = yield from ctx.execute_async(sleep_call, 10, 0).__await__()
    return r["x"]


async def tag_branch():
    return branch_tag.get()


async def refused_branch(ctx):
    try:
        await asyncio.sleep(0)
    except TypeError as e:
        return "refused: " + str(e).split(";")[0]
    return "not refused"


def out(ctx, rec, **fields):
    o = {"key": rec["key"], "seq": rec.get("seq")}
    o.update(fields)
    ctx.send_event(OutputEvent(output=o))


class TestAgent(Agent):
    @action(InputEvent)
    @staticmethod
    async def dispatch(event: InputEvent, ctx: RunnerContext):
        rec = event.input
        op = rec["op"]
        if op == "chain":
            ctx.short_term_memory.set("chain.x", rec["x"] + 1)
            ctx.send_event(Step(rec=rec))
        elif op == "sleep":
            r = await ctx.execute_async(sleep_call, rec.get("x", 0), rec["ms"])
            out(ctx, rec, start=r["start"], end=r["end"])
        elif op == "chain_async":
            x = rec["x"]
            for _ in range(3):
                x = (await ctx.execute_async(sleep_call, x, rec.get("ms", 0)))["x"]
            out(ctx, rec, x=x)
        elif op == "gather":
            n, ms = rec["n"], rec["ms"]
            t0 = time.monotonic()
            rs = await ctx.gather(*[ctx.execute_async(sleep_call, i, ms) for i in range(n)])
            out(ctx, rec, xs=[r["x"] for r in rs], elapsed=time.monotonic() - t0)
        elif op == "gather_durable":
            rs = await ctx.gather(ctx.durable_execute_async(count, rec["counter"], 1),
                                  ctx.execute_async(sleep_call, 1, 1),
                                  ctx.durable_execute_async(count, rec["counter"], 3))
            crash_if(rec.get("crash"))
            out(ctx, rec, rs=[rs[0], rs[1]["x"], rs[2]])
        elif op == "gather_coros":
            c = rec["counter"]
            rs = await ctx.gather(counted_branch(ctx, c, "a", 3), counted_branch(ctx, c, "b", 1),
                                  ctx.durable_execute_async(count, c, "c"),
                                  nested_branches(ctx, c))
            crash_if(rec.get("crash"))
            out(ctx, rec, rs=rs, tag=branch_tag.get())
        elif op == "gather_coros_timed":
            t0 = time.monotonic()
            rs = await ctx.gather(*[sleeping_branch(ctx, rec["ms"]) for _ in range(rec["n"])])
            out(ctx, rec, n=len(rs), elapsed=time.monotonic() - t0)
        elif op == "gather_coros_errors":
            rs = await ctx.gather(failing_branch(ctx, 50), sleeping_branch(ctx, 1),
                                  refused_branch(ctx), return_exceptions=True)
            got = [repr(rs[0]), type(rs[1]).__name__, rs[2]]
            try:
                await ctx.gather(sleeping_branch(ctx, 1), failing_branch(ctx, 1))
                raised = None
            except ValueError as e:
                raised = str(e)
            unused = sleeping_branch(ctx, 1)
            try:
                ctx.gather(unused, 42)
                bad = None
            except TypeError as e:
                bad = str(e)
            unused.close()
            # A branch that swallows eddy's refusal ends with it (it spun for
            # ever); one coroutine given twice runs once; a generator-based
            # coroutine is a branch; the branches' contexts are copied when
            # gather() is called, as asyncio's Tasks are.
            (stubborn,) = await ctx.gather(stubborn_branch(ctx), return_exceptions=True)
            same = sleeping_branch(ctx, 1)
            twice = await ctx.gather(same, same)
            gen = await ctx.gather(generator_branch(ctx))
            branch_tag.set("at gather()")
            g = ctx.gather(tag_branch(), tag_branch())
            branch_tag.set("at await")
            tags = await g
            branch_tag.set("action")
            ctx.gather(tag_branch())  # never awaited: warned about
            out(ctx, rec, got=got, raised=raised, bad=bad, stubborn=type(stubborn).__name__,
                twice=twice[0] == twice[1], gen=gen, tags=tags)
        elif op == "durable":
            v = await ctx.durable_execute_async(count, rec["counter"], {"v": rec["x"]})
            crash_if(rec.get("crash"))
            out(ctx, rec, v=v)
        elif op == "durable_partial":
            # A call through functools.partial, binding EDDY_TEST_BOUND: as a
            # positional argument, a keyword, one of an inner partial that
            # Python does not flatten into the outer one (it has an attribute
            # of its own), or as bytes (not JSON: the arguments are pickled).
            bound, where = os.environ.get("EDDY_TEST_BOUND", "a"), rec["where"]
            if where == "pos":
                fn = functools.partial(count_args, rec["counter"], bound)
            elif where == "kw":
                fn = functools.partial(count_args, rec["counter"], tag=bound)
            elif where == "inner":
                inner = functools.partial(count_args, rec["counter"], bound)
                inner.note = "kept apart"
                fn = functools.partial(inner, "outer")
            else:
                fn = functools.partial(count_args, rec["counter"], bound.encode())
            v = await ctx.durable_execute_async(fn, "x")
            crash_if(rec.get("crash"))
            out(ctx, rec, v=v)
        elif op == "durable_singleton":
            # A replayed exception that is a module's object is not changed
            # (the replay's note went onto the shared object, once more on
            # every replay).
            same = []
            for _ in range(2):
                try:
                    await ctx.durable_execute_async(count_then_raise_singleton, rec["counter"])
                except SingletonError as e:
                    same.append(e is SINGLETON_ERROR)
            crash_if(rec.get("crash"))
            out(ctx, rec, same=same, notes=len(getattr(SINGLETON_ERROR, "__notes__", ())))
        elif op == "durable_object":
            # A result that is not JSON goes through pickle.
            v = await ctx.durable_execute_async(count, rec["counter"], {1, 2, 3})
            crash_if(rec.get("crash"))
            out(ctx, rec, v=sorted(v), t=type(v).__name__)
        elif op == "durable_sync":
            v = ctx.durable_execute(count, rec["counter"], rec["x"] * 10)
            await ctx.execute_async(sleep_call, 0, 0)  # lets the journal commit
            crash_if(rec.get("crash"))
            out(ctx, rec, v=v)
        elif op == "inline_then_call":
            # A durable_execute journals its result in the open transaction;
            # the next call, which dies on the first run, may run only once
            # that record is committed and on disk.
            if rec.get("hold"):
                await ctx.execute_async(wait_holding)
            v = ctx.durable_execute(count, rec["counter"], rec["x"])
            nxt = rec["next"]
            if nxt == "inline":
                ctx.durable_execute(crash_if, rec["crash"])
            elif nxt == "durable_async":
                await ctx.durable_execute_async(crash_if, rec["crash"])
            else:
                await ctx.execute_async(crash_if, rec["crash"])
            out(ctx, rec, v=v)
        elif op == "hold_ready":
            # Keeps a task ready (a yield at a time) until the file exists:
            # the loop then commits only when something asks for a commit,
            # or after --commit-interval-ms.
            HOLDING.set()
            deadline = time.monotonic() + rec.get("seconds", 60)
            while not os.path.exists(rec["until"]) and time.monotonic() < deadline:
                await ctx.sleep(0)
            out(ctx, rec)
        elif op == "durable_typed":
            kind = rec["kind"]
            sync = ctx.durable_execute(typed_value, rec["counter"], kind)
            v = await ctx.durable_execute_async(typed_value, rec["counter"], kind)
            crash_if(rec.get("crash"))
            out(ctx, rec, sync=describe_typed(kind, sync), v=describe_typed(kind, v))
        elif op == "durable_surrogate_fn":
            r = {}
            try:
                ctx.durable_execute(surrogate_named, 1)
            except ValueError as e:
                r["sync"] = str(e)
            try:
                await ctx.durable_execute_async(surrogate_named, 1)
            except ValueError as e:
                r["async"] = str(e)
            out(ctx, rec, **r)
        elif op == "durable_unpicklable":
            # A result that can be journaled neither as JSON nor with pickle.
            r = {}
            try:
                r["sync"] = type(ctx.durable_execute(threading.Lock)).__name__
            except TypeError as e:
                r["sync"] = str(e)
            try:
                r["async"] = type(await ctx.durable_execute_async(threading.Lock)).__name__
            except TypeError as e:
                r["async"] = str(e)
            out(ctx, rec, **r)
        elif op == "durable_error":
            try:
                if rec.get("sync"):
                    try:
                        ctx.durable_execute(count_and_raise, rec["counter"], rec["kind"])
                    finally:
                        await ctx.execute_async(sleep_call, 0, 0)  # lets the journal commit
                else:
                    await ctx.durable_execute_async(count_and_raise, rec["counter"],
                                                    rec["kind"])
                out(ctx, rec, error=None)
            except TwoArg as e:
                crash_if(rec.get("crash"))
                out(ctx, rec, caught="TwoArg", message=str(e), args=list(e.args), code=e.code)
            except Exception as e:  # noqa: BLE001
                if rec.get("raise"):
                    raise
                crash_if(rec.get("crash"))
                if rec.get("raise_after_crash"):
                    raise  # the re-run's, replayed from the journal
                out(ctx, rec, error=type(e).__module__ + "." + type(e).__qualname__,
                    message=str(e).encode("utf-8", "backslashreplace").decode("utf-8"),
                    **({"surrogates": sum(0xD800 <= ord(c) <= 0xDFFF for c in str(e))}
                       if rec["kind"].startswith("surrogate") else {}),
                    code=getattr(e, "code", None),
                    type_name=getattr(e, "type_name", None),
                    **({"detail": describe_error(e)} if rec.get("detail") else {}))
        elif op == "nondet_caught":
            # Catches what its durable calls raise and goes on: under
            # --strict-determinism a divergence fails it all the same.
            got = []
            for x in (os.environ.get("EDDY_TEST_VARIANT", "a"), 2, 3):
                try:
                    got.append(await ctx.durable_execute_async(count, rec["counter"], x))
                except NonDeterminismError as e:
                    got.append("caught: %s" % e)
            crash_if(rec.get("crash"))
            out(ctx, rec, got=got)
        elif op == "reconciled":
            # A call that dies half-way the first time (crash flag); after
            # the crash its reconciler runs in its place, once.
            def reconcile():
                with open(rec["counter"] + ".reconciled", "a") as f:
                    f.write("called\n")
                if rec.get("reconcile_fails"):
                    raise CustomError("reconcile unavailable", code=9)
                return {"reconciled": True}
            try:
                v = await ctx.durable_execute_async(call_then_crash, rec["counter"],
                                                    rec.get("crash"), {"v": 1},
                                                    reconciler=reconcile)
                crash_if(rec.get("crash2"))
                out(ctx, rec, v=v)
            except CustomError as e:
                crash_if(rec.get("crash2"))
                out(ctx, rec, error=str(e), code=e.code)
        elif op == "reconciler_kw":
            errors = []
            for how in ("one_arg", "not_callable", "sync", "none_async", "none_sync"):
                try:
                    if how == "one_arg":
                        await ctx.durable_execute_async(count, "/dev/null", 1,
                                                        reconciler=lambda x: x)
                    elif how == "not_callable":
                        await ctx.durable_execute_async(count, "/dev/null", 1, reconciler=5)
                    elif how == "sync":
                        ctx.durable_execute(count, "/dev/null", 1, reconciler=lambda: 1)
                    elif how == "none_async":  # None: no reconciler, not passed on
                        await ctx.durable_execute_async(count, "/dev/null", 1, reconciler=None)
                    else:
                        ctx.durable_execute(count, "/dev/null", 1, reconciler=None)
                    errors.append(None)
                except TypeError as e:
                    errors.append(str(e))
            out(ctx, rec, errors=errors)
        elif op == "async_fn":
            # Each is refused where it is made, with or without --state.
            errors = {}
            calls = {
                "execute_async": lambda: ctx.execute_async(fetch_async, 1),
                "durable_execute_async": lambda: ctx.durable_execute_async(fetch_async, 1),
                "durable_execute": lambda: ctx.durable_execute(fetch_async, 1),
                "partial": lambda: ctx.execute_async(functools.partial(fetch_async, 1)),
                "method": lambda: ctx.durable_execute_async(AsyncCallable().method, 1),
                "callable": lambda: ctx.execute_async(AsyncCallable(), 1),
                "async_generator": lambda: ctx.durable_execute_async(stream_async, 1),
                "reconciler": lambda: ctx.durable_execute_async(count, "/dev/null", 1,
                                                                reconciler=fetch_async),
            }
            for name, make in calls.items():
                try:
                    make()
                    errors[name] = None
                except TypeError as e:
                    errors[name] = str(e)
            # A partial of a plain function is still a plain function.
            ok = await ctx.durable_execute_async(functools.partial(len, "abc"))
            out(ctx, rec, errors=errors, ok=ok)
        elif op == "iterate":
            # Iterating a call (list(call)) gave the call itself endlessly;
            # islice keeps this from running away when it does.
            errors = []
            for make in (lambda: ctx.execute_async(len, "x"),
                         lambda: ctx.durable_execute_async(len, "x"),
                         lambda: ctx.gather(ctx.execute_async(len, "y"))):
                try:
                    errors.append(repr(list(itertools.islice(make(), 3))))
                except TypeError as e:
                    errors.append(str(e))
            out(ctx, rec, errors=errors, v=await ctx.execute_async(len, "abc"))
        elif op == "unawaited":
            # Two calls made and never awaited: one dropped at once, one kept
            # to the end. They never run: one warning at the action's end.
            ctx.durable_execute_async(count, rec["counter"], 2)
            kept = ctx.execute_async(count, rec["counter"], 3)  # noqa: F841
            v = await ctx.execute_async(len, "abc")
            if rec.get("raise"):
                raise ValueError("failed after making a call")
            out(ctx, rec, v=v)
        elif op == "all_awaited":
            # Calls awaited one way or another: no warning.
            a = ctx.durable_execute_async(count, rec["counter"], 1)
            b = ctx.execute_async(len, "ab")
            g = ctx.gather(ctx.durable_execute_async(len, "abc"), b)
            rs = [await a] + await g + await ctx.gather(ctx.execute_async(len, "abcd"))
            crash_if(rec.get("crash"))
            out(ctx, rec, rs=rs)
        elif op == "dict_twice":
            stm = ctx.short_term_memory
            stm.set("profile", {"n": rec["seq"], "tag": "t%d" % rec["seq"]})
            p = stm.get("profile")
            out(ctx, rec, n=p.get("n"), fields=sorted(p.get_field_names()))
        elif op == "durable_reenter":
            # The body of a sync durable call runs on the mailbox thread: the
            # context must refuse it, as it would on a worker.
            def body():
                try:
                    ctx.send_event(OutputEvent(output="from the body"))
                    return "accepted"
                except RuntimeError as e:
                    return str(e)
            out(ctx, rec, body=ctx.durable_execute(body))
        elif op == "durable_nul":
            # NUL characters (JSON's \u0000) in memory and in an event that
            # the journal holds when the next action crashes.
            ctx.short_term_memory.set("nul", "c\x00d")
            ctx.send_event(NulStep(rec=rec, nul="x\x00y"))
        elif op == "raise":
            raise ValueError("bad input %s" % rec.get("seq"))
        elif op == "raise_bare":
            raise ValueError()
        elif op == "raise_memory":
            raise MemoryError()
        elif op == "raise_async":
            await ctx.durable_execute_async(count_and_raise, rec["counter"], "value")
        elif op == "memory":
            memory_ops(ctx, rec)
        elif op == "sensory":
            sm = ctx.sensory_memory
            stm = ctx.short_term_memory
            out(ctx, rec, sensory_before=sm.get("seen"), stm_before=stm.get("seen"))
            sm.set("seen", rec["seq"])
            stm.set("seen", rec["seq"])
            ctx.send_event(Step(rec=rec))
        elif op == "send_input":
            # An InputEvent is refused: it would run dispatch again, here.
            errors = []
            for ev in (InputEvent(input={"key": rec["key"], "op": "quick", "seq": 99}), event,
                       Event(_eddy_type="InputEvent", input=rec)):
                try:
                    ctx.send_event(ev)
                    errors.append(None)
                except TypeError as e:
                    errors.append(str(e))
            out(ctx, rec, errors=errors)
        elif op == "output_missing":
            # An OutputEvent without an output is refused; output=None is one.
            errors = []
            for ev in (OutputEvent(), OutputEvent(note=1), Event(_eddy_type="OutputEvent")):
                try:
                    ctx.send_event(ev)
                    errors.append(None)
                except TypeError as e:
                    errors.append(str(e))
            ctx.send_event(OutputEvent(output=None))
            late = OutputEvent()
            late.output = "set later"
            ctx.send_event(late)
            out(ctx, rec, errors=errors)
        elif op == "bad_attr":
            ctx.send_event(Step(rec=rec, bad={"inner": [1, {2, 3}]}))
        elif op == "bad_attr_caught":
            try:
                ctx.send_event(Step(rec=rec, when=time))
            except TypeError as e:
                out(ctx, rec, error=str(e))
        elif op == "asyncio_sleep0":
            await asyncio.sleep(0)
        elif op == "asyncio_sleep":
            await asyncio.sleep(0.01)
        elif op == "asyncio_gather":
            await asyncio.gather(asyncio.sleep(0))
        elif op == "asyncio_future":
            await asyncio.Future()
        elif op == "asyncio_create_task":
            await asyncio.create_task(asyncio.sleep(0))
        elif op == "wrong_thread":
            r = await ctx.execute_async(use_ctx, ctx)
            out(ctx, rec, errors=r)
        elif op == "spin":
            r = await ctx.execute_async(spin, rec["seconds"])
            out(ctx, rec, start=r["start"], end=r["end"], n=r["n"])
        elif op == "quick":
            r = await ctx.execute_async(sleep_call, 0, 0)
            out(ctx, rec, start=r["start"], end=r["end"], stepped=now_us())
        elif op == "fan":
            ctx.send_event(Fanned(rec=rec))
        elif op == "print":
            # What agents print: eddy keeps it out of an output on stdout.
            print("print from a Python action, seq", rec["seq"])
            sys.stdout.write("sys.stdout.write from a Python action\n")
            os.write(1, b"os.write(1) from a Python action\n")
            os.system("echo from a child of a Python action")
            if rec.get("fds"):  # what a child inherits: the targets of its descriptors
                os.system("readlink /proc/$$/fd/* > %s" % rec["fds"])
            out(ctx, rec)
        elif op == "reals":
            out(ctx, rec, ts=rec["ts"], sum=0.1 + 0.2, third=1 / 3)
        elif op == "key":
            out(ctx, rec, ctx_key=ctx.key, thread=threading.current_thread().name)
        elif op == "drop_in_finally":
            # Suspended when another key's failure stops eddy: the coroutine
            # is closed, and its finally block reports what the context did.
            stm = ctx.short_term_memory
            try:
                await ctx.execute_async(time.sleep, rec["seconds"])
            finally:
                uses = (("send_event", lambda: ctx.send_event(Step(rec=rec))),
                        ("memory_set", lambda: stm.set("dropped", 1)),
                        ("durable_execute", lambda: ctx.durable_execute(len, "ab")))
                r = {}
                for name, use in uses:
                    try:
                        use()
                        r[name] = None
                    except RuntimeError as e:
                        r[name] = str(e)
                with open(rec["report"], "w") as f:
                    json.dump(r, f)
        elif op == "keep_ctx":
            # Keeps its context where another key's action finds it, and
            # waits (suspended, alive) until that one tried it.
            KEPT["stm"] = ctx.short_term_memory
            KEPT["ctx"] = ctx
            await ctx.execute_async(KEPT_TRIED.wait, 60)
            v = await ctx.durable_execute_async(count, rec["counter"], "mine")
            out(ctx, rec, v=v)
        elif op == "use_kept":
            await ctx.execute_async(wait_kept)
            other, stm = KEPT["ctx"], KEPT["stm"]
            uses = {
                "durable_execute": lambda: other.durable_execute(count, rec["counter"], "b"),
                "durable_execute_async":
                    lambda: other.durable_execute_async(count, rec["counter"], "b"),
                "execute_async": lambda: other.execute_async(len, "b"),
                "gather": lambda: other.gather(),
                "sleep": lambda: other.sleep(0),
                "send_event": lambda: other.send_event(OutputEvent(output="from b")),
                "key": lambda: other.key,
                "short_term_memory": lambda: other.short_term_memory,
                "sensory_memory": lambda: other.sensory_memory,
                "memory_get": lambda: stm.get("x"),
                "memory_set": lambda: stm.set("x", 1),
            }
            errors = {}
            try:
                for name, use in uses.items():
                    try:
                        use()
                        errors[name] = None
                    except Exception as e:  # noqa: BLE001
                        errors[name] = "%s: %s" % (type(e).__name__, e)
            finally:
                KEPT_TRIED.set()
            out(ctx, rec, errors=errors)
        elif op == "raise_later":
            await ctx.execute_async(time.sleep, rec["seconds"])
            raise ValueError("stopping eddy")
        elif op == "finished_ctx":
            TestAgent.saved = ctx
        elif op == "use_saved":
            try:
                TestAgent.saved.short_term_memory
                out(ctx, rec, error=None)
            except RuntimeError as e:
                out(ctx, rec, error=str(e))
        else:
            raise KeyError("unknown op %r" % op)

    @action(Step)
    @staticmethod
    def after_step(event: Step, ctx: RunnerContext):
        rec = event.rec
        if rec["op"] == "chain":
            out(ctx, rec, x=ctx.short_term_memory.get("chain.x") * 2)
        elif rec["op"] == "sensory":
            out(ctx, rec, sensory_same_run=ctx.sensory_memory.get("seen"))


    @action(NulStep)
    @staticmethod
    async def after_nul_step(event: NulStep, ctx: RunnerContext):
        rec = event.rec
        v = await ctx.durable_execute_async(count, rec["counter"], "a\x00b")
        crash_if(rec.get("crash"))
        out(ctx, rec, v=v, event=event.nul, memory=ctx.short_term_memory.get("nul"))


@action(Fanned)
def fanned_module_level(event, ctx):
    rec = event.rec
    out(ctx, rec, by="module-level action", type=type(event).__name__)


def use_ctx(ctx):
    errors = []
    for f in (lambda: ctx.send_event(Step(rec={})), lambda: ctx.short_term_memory,
              lambda: ctx.key):
        try:
            f()
            errors.append(None)
        except RuntimeError as e:
            errors.append(str(e))
    return errors


def memory_ops(ctx, rec):
    stm = ctx.short_term_memory
    r = {}
    stm.set("a.b.c", 1)
    stm.set("a.b.d", [1, "two", None, True, 2.5])
    r["get_c"] = stm.get("a.b.c")
    r["get_d"] = stm.get("a.b.d")
    nested = stm.get("a.b")
    r["nested_type"] = type(nested).__name__
    r["nested_c"] = nested.get("c")
    if not nested.is_exist("e"):
        nested.set("e", {"f": "g"})
    r["via_root"] = stm.get("a.b.e.f")
    obj = stm.new_object("o.p")
    obj.set("q", 5)
    r["new_object"] = stm.get("o.p.q")
    r["is_exist"] = [stm.is_exist("a.b.c"), stm.is_exist("a.x"), stm.is_exist("o.p")]
    r["field_names"] = stm.get("a.b").get_field_names()
    fields = stm.get("a.b").get_fields()
    r["fields"] = {k: (type(v).__name__ if not isinstance(v, (int, list)) else v)
                   for k, v in fields.items()}
    r["root_names"] = stm.get_field_names()
    # Keys with a dot, or empty, in a stored dict: fields of their own, which
    # get_fields looks up by name (a dotted path cannot reach them).
    stm.set("dots", {"a.b": 1, "": 2, "ok": 3, "x.y": {"z": 4}, "sub": {"w": 5}})
    dots = stm.get("dots")
    r["dots_names"] = dots.get_field_names()
    fields = dots.get_fields()
    r["dots_fields"] = {k: (v if not hasattr(v, "get_fields") else
                            {"MemoryObject": v.get_fields()}) for k, v in fields.items()}
    r["dots_path"] = [stm.get("dots.a.b"), stm.is_exist("dots.x.y")]
    r["absent"] = stm.get("nothing.here")
    try:
        stm.set("bad", {"k": {1, 2}})
        r["set_bad"] = None
    except TypeError as e:
        r["set_bad"] = str(e)
    try:
        stm.set("a.b.c.d", 1)
        r["set_below_value"] = None
    except ValueError as e:
        r["set_below_value"] = str(e)
    try:
        stm.set("a.b.e", 1)
        r["set_value_over_object"] = None
    except ValueError as e:
        r["set_value_over_object"] = str(e)
    stm.set("o", {"z": 1})  # a dict replaces the object
    r["dict_over_object"] = stm.get("o").get_field_names()
    # new_object(path, overwrite=False), as Flink Agents': a value at the
    # path is refused, or replaced with overwrite; an object there is kept.
    stm.set("nv", {"v": 1})
    try:
        stm.new_object("nv.v")
        r["new_object_over_value"] = None
    except ValueError as e:
        r["new_object_over_value"] = str(e)
    stm.new_object("nv.v", overwrite=True).set("w", 2)
    r["overwritten"] = stm.get("nv.v").get_fields()
    stm.new_object("nv.v", True)  # positional: kept, with its field
    r["kept"] = stm.get("nv").new_object("v", overwrite=True).get_fields()
    try:
        stm.new_object("nv.v.w.x", overwrite=True)
        r["new_object_under_value"] = None
    except ValueError as e:
        r["new_object_under_value"] = str(e)
    try:
        stm.get("a..b")
        r["bad_path"] = None
    except ValueError as e:
        r["bad_path"] = str(e)
    r["runs"] = (stm.get("runs") or 0) + 1
    stm.set("runs", r["runs"])
    out(ctx, rec, **r)
