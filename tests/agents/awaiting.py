"""The awaitable protocol of eddy's calls, for tests/e2e/test_python.py.
Each input record names an "op":

    wrapped    awaits calls, gathers and sleeps through custom awaitables
               whose __await__ is a plain generator that delegates with
               `yield from aw.__await__()` (nested, by hand with send(),
               in a @types.coroutine too), and an exception through one.
               Its one durable call counts itself in rec["counter"]; with
               rec["crash"] (a file that exists) the action dies after it,
               and with rec["hold"] it waits in a call for rec["release"]
               to exist, having written rec["hold"] (the test kills eddy
               then). Outputs what each await gave.
    misuse     iterates calls, a gather and a sleep in ways that are
               refused, catching each TypeError; outputs their messages.
    swallow    awaits a coroutine that catches the TypeError eddy raises
               for what it yields and yields again, for ever.
    recovers   awaits a coroutine that yields something eddy cannot await
               once, catches the TypeError, and goes on with a call.
    yields_itself  awaits a durable call (counted in rec["counter"]) and a
               gather through an __await__ that yields them itself, which
               eddy refuses; with rec["proper"] (a file that exists) the
               call is awaited properly instead, and with rec["hold"] the
               action then waits as "wrapped" does.
    leave_call makes a call and leaves it in a global, for "forward".
    forward    throws into and closes the iterators of calls' __await__(),
               and awaits through a delegator that forwards throw(): the
               call "leave_call" left, which eddy refuses, and one of its
               own. The calls it throws into count in rec["counter"].
    other_refusal  catches eddy's refusal of asyncio.sleep(0), then awaits
               the call "leave_call" left, catching that refusal too.
    refusals_alternate  does the same for ever.
    bad_repr   yields, gathers and calls an object whose repr() raises,
               catching eddy's errors; outputs their messages.
    bad_repr_twice  yields such an object, catches the refusal, and yields
               another.
    instant    outputs its record at once (another key, not starved).
"""
import asyncio
import itertools
import os
import time
import types

from eddy import Agent, InputEvent, OutputEvent, action


def count(path, value):
    """A side effect the tests count: one line per real call."""
    with open(path, "a") as f:
        f.write("called\n")
    return value


def fail(msg):
    raise ValueError(msg)


def hold(reached, release):
    """Says it runs, then waits for the test (which kills eddy meanwhile)."""
    with open(reached, "w") as f:
        f.write("reached\n")
    deadline = time.monotonic() + 60
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "released"


class Wrapped:
    """An awaitable that delegates to another one and tags its result."""

    def __init__(self, aw):
        self.aw = aw

    def __await__(self):
        r = yield from self.aw.__await__()
        return ["wrapped", r]


class Catching:
    """Delegates, catching the exception of the awaitable it wraps."""

    def __init__(self, aw):
        self.aw = aw

    def __await__(self):
        try:
            return (yield from self.aw.__await__())
        except ValueError as e:
            return "caught in __await__: %s" % e


class ByHand:
    """Delegates with send(), without yield from."""

    def __init__(self, aw):
        self.aw = aw

    def __await__(self):
        it = self.aw.__await__()
        v = None
        while True:
            try:
                y = it.send(v)
            except StopIteration as e:
                return ["by hand", e.value]
            v = yield y


class Forwarding:
    """Delegates by hand as `yield from` does (PEP 380): send(), and throw()
    and close() forwarded to the iterator."""

    def __init__(self, aw):
        self.aw = aw

    def __await__(self):
        it = self.aw.__await__()
        try:
            y = next(it)
        except StopIteration as e:
            return ["forwarded", e.value]
        while True:
            try:
                v = yield y
            except GeneratorExit:
                it.close()
                raise
            except BaseException as e:  # noqa: BLE001
                try:
                    y = it.throw(e)
                except StopIteration as s:
                    return ["forwarded", s.value]
            else:
                try:
                    y = it.send(v)
                except StopIteration as s:
                    return ["forwarded", s.value]


# A call that another action execution made and left here, for "forward".
LEFT = {}


class YieldsCall:
    """`yield from aw` (not aw.__await__()) in a plain generator: refused."""

    def __init__(self, aw):
        self.aw = aw

    def __await__(self):
        return (yield from self.aw)


class YieldsItself:
    """Yields the call itself, not through its __await__(): refused."""

    def __init__(self, aw):
        self.aw = aw

    def __await__(self):
        r = yield self.aw
        return r


@types.coroutine
def gen_coroutine(aw):
    return (yield from aw.__await__())


@types.coroutine
def swallowing():
    while True:
        try:
            yield 42
        except TypeError:
            pass


@types.coroutine
def yields_once(v):
    yield v


class BadRepr:
    """An object whose repr() raises: eddy's messages name it all the same."""

    def __repr__(self):
        raise RuntimeError("no repr")

    def __call__(self):
        return "called"


@types.coroutine
def yields_bad_repr_twice():
    try:
        yield BadRepr()
    except TypeError:
        pass
    yield BadRepr()


def out(ctx, rec, **fields):
    o = {"key": rec["key"], "seq": rec.get("seq")}
    o.update(fields)
    ctx.send_event(OutputEvent(output=o))


class AwaitingAgent(Agent):
    @action(InputEvent)
    @staticmethod
    async def dispatch(event, ctx):
        rec = event.input
        op = rec["op"]
        if op == "wrapped":
            got = {}
            got["durable"] = await Wrapped(ctx.durable_execute_async(count, rec["counter"],
                                                                     rec["x"]))
            if rec.get("crash") and os.path.exists(rec["crash"]):
                os._exit(3)
            if rec.get("hold"):
                got["held"] = await Wrapped(ctx.execute_async(hold, rec["hold"],
                                                              rec["release"]))
            got["call"] = await Wrapped(ctx.execute_async(len, "abcd"))
            got["nested"] = await Wrapped(Wrapped(ctx.execute_async(len, "ab")))
            got["gather"] = await Wrapped(ctx.gather(ctx.execute_async(len, "a"),
                                                     ctx.sleep(0.01),
                                                     ctx.execute_async(fail, "in gather"),
                                                     return_exceptions=True))
            got["sleep"] = await Wrapped(ctx.sleep(0.01))
            got["sleep0"] = await Wrapped(ctx.sleep(0))
            got["by_hand"] = await ByHand(ctx.execute_async(len, "abc"))
            got["gen_coroutine"] = await gen_coroutine(ctx.execute_async(len, "abcde"))
            got["caught_inside"] = await Catching(ctx.execute_async(fail, "inner"))
            try:
                await Wrapped(ctx.execute_async(fail, "through"))
            except ValueError as e:
                got["raised"] = "ValueError: %s" % e
            try:
                await Wrapped(ctx.gather(ctx.execute_async(fail, "gathered")))
            except ValueError as e:
                got["gather_raised"] = "ValueError: %s" % e
            got["gather"][1][2] = repr(got["gather"][1][2])
            out(ctx, rec, got=got)
        elif op == "misuse":
            errors = {}
            tries = {
                "list": lambda: list(itertools.islice(ctx.execute_async(len, "x"), 3)),
                "for": lambda: [x for x in ctx.gather(ctx.execute_async(len, "y"))],
                "list_await": lambda: list(itertools.islice(
                    ctx.execute_async(len, "x").__await__(), 3)),
                "list_await_gather": lambda: list(itertools.islice(
                    ctx.gather(ctx.execute_async(len, "y")).__await__(), 3)),
                "list_await_sleep": lambda: list(itertools.islice(
                    ctx.sleep(0).__await__(), 3)),
            }
            for name, make in tries.items():
                try:
                    errors[name] = repr(make())
                except TypeError as e:
                    errors[name] = str(e)
            try:
                errors["yield_from_call"] = repr(await YieldsCall(ctx.execute_async(len, "z")))
            except TypeError as e:
                errors["yield_from_call"] = str(e)
            out(ctx, rec, errors=errors, v=await ctx.execute_async(len, "abc"))
        elif op == "swallow":
            await swallowing()
            out(ctx, rec, swallowed=True)
        elif op == "recovers":
            try:
                await yields_once(42)
                first = None
            except TypeError as e:
                first = str(e)
            out(ctx, rec, first=first, v=await ctx.execute_async(len, "abc"))
        elif op == "yields_itself":
            # Refused whether the call is new (a first run) or done (a
            # replay): it ran, gave None and was warned about as never
            # awaited, and its replay raised "already running". With
            # rec["proper"] (a file that exists) it is awaited properly.
            aw = ctx.durable_execute_async(count, rec["counter"], rec["x"])
            got = {}
            try:
                if rec.get("proper") and os.path.exists(rec["proper"]):
                    got["call"] = await aw
                else:
                    got["call"] = await YieldsItself(aw)
            except (TypeError, RuntimeError) as e:
                got["call"] = "%s: %s" % (type(e).__name__, e)
            await ctx.sleep(0)  # refused twice in a step, for one reason, it fails
            try:
                got["gather"] = await YieldsItself(ctx.gather(ctx.execute_async(len, "a")))
            except (TypeError, RuntimeError) as e:
                got["gather"] = "%s: %s" % (type(e).__name__, e)
            if rec.get("hold"):
                await ctx.execute_async(hold, rec["hold"], rec["release"])
            out(ctx, rec, got=got, v=await ctx.execute_async(len, "abc"))
        elif op == "leave_call":
            LEFT["call"] = ctx.execute_async(len, "left")
        elif op == "forward":
            got = {}
            # throw() raises what it is given and ends the iterator; the
            # call never runs (counted in rec["counter"]), nor after close().
            it = ctx.execute_async(count, rec["counter"], "thrown").__await__()
            try:
                it.throw(ValueError("thrown in"))
            except ValueError as e:
                got["throw"] = "ValueError: %s" % e
            try:
                it.send(None)
            except RuntimeError as e:
                got["after_throw"] = str(e)
            it = ctx.sleep(0).__await__()
            try:
                it.throw(KeyError, "k")
            except KeyError as e:
                got["throw_class"] = repr(e)
            it = ctx.execute_async(count, rec["counter"], "closed").__await__()
            next(it)  # yields the call, which goes nowhere
            got["close"] = it.close()
            # eddy's refusal, thrown into the action, forwarded by throw():
            # it was an AttributeError ('eddy.Awaiter' object has no
            # attribute 'throw').
            try:
                await Forwarding(LEFT["call"])
            except RuntimeError as e:
                got["forwarded"] = "RuntimeError: %s" % e
            got["call"] = await Forwarding(ctx.execute_async(len, "abcd"))
            out(ctx, rec, got=got)
        elif op == "other_refusal":
            # Catches eddy's TypeError for what asyncio.sleep(0) yields, then
            # awaits the call "leave_call" left: eddy's RuntimeError for that
            # is thrown too (the action failed, said to have caught the
            # TypeError and yielded the call).
            got = {}
            try:
                await asyncio.sleep(0)
            except TypeError:
                got["first"] = "TypeError"
            try:
                await LEFT["call"]
            except RuntimeError as e:
                got["second"] = "RuntimeError: %s" % e
            out(ctx, rec, got=got, v=await ctx.execute_async(len, "abc"))
        elif op == "refusals_alternate":
            # Each refusal caught, for ever: the second of one reason fails it.
            while True:
                try:
                    await asyncio.sleep(0)
                except TypeError:
                    pass
                try:
                    await LEFT["call"]
                except RuntimeError:
                    pass
        elif op == "bad_repr":
            # What repr() cannot show is named by its type: the messages
            # were lost ("TypeError (no message)", or repr()'s own error).
            got = {}
            try:
                await yields_once(BadRepr())
            except TypeError as e:
                got["yielded"] = str(e)
            try:
                ctx.gather(BadRepr())
            except TypeError as e:
                got["gather"] = str(e)
            call = ctx.execute_async(BadRepr())
            got["call"] = repr(call)
            got["v"] = await call
            out(ctx, rec, got=got)
        elif op == "bad_repr_twice":
            await yields_bad_repr_twice()
        elif op == "instant":
            out(ctx, rec)
