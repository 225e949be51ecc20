"""contextvars in actions (tests/e2e/test_python.py): each action execution
runs in a context of its own, as each asyncio Task does, and a function run on
a worker in a copy of its action's context made at the call.

PREC and localprec stand for decimal's context and decimal.localcontext(),
which keep the current context in a ContextVar the same way: importing
decimal itself leaks at interpreter finalisation (CPython 3.11's _decimal),
which fails the LeakSanitizer build of this test."""
import contextlib
import contextvars
import time

from eddy import Agent, Event, InputEvent, OutputEvent, action

VAR = contextvars.ContextVar("var", default="unset")
PREC = contextvars.ContextVar("prec", default=28)


@contextlib.contextmanager
def localprec(prec):
    token = PREC.set(prec)
    try:
        yield
    finally:
        PREC.reset(token)


def fetch_rate(ms):
    time.sleep(ms / 1000)
    return "1.23456789123"


def seen_on_worker(ms):
    """What a worker sees of the action's context; what it sets stays in
    its copy."""
    time.sleep(ms / 1000)
    seen = {"var": VAR.get(), "prec": PREC.get()}
    VAR.set("set by the worker")
    return seen


class DefStep(Event):
    pass


class ContextAgent(Agent):
    @action(InputEvent)
    @staticmethod
    async def convert(event, ctx):
        rec = event.input
        if rec.get("def"):
            ctx.send_event(DefStep(rec=rec))
            return
        before = VAR.get()
        VAR.set(rec["key"])
        with localprec(rec["prec"]):
            worker = await ctx.execute_async(seen_on_worker, rec["ms"])
            after_call = VAR.get()
            durable = await ctx.durable_execute_async(seen_on_worker, rec["ms"])
            await ctx.sleep(rec["ms"] / 1000)
            rate = await ctx.execute_async(fetch_rate, rec["ms"])
            prec = PREC.get()
            amount = "%.*g" % (prec, float(rate))
        ctx.send_event(OutputEvent(output={
            "key": rec["key"], "before": before, "after_call": after_call, "var": VAR.get(),
            "prec": prec, "amount": amount, "worker": worker, "durable": durable,
            "prec_after": PREC.get()}))

    @action(DefStep)
    @staticmethod
    def step(event, ctx):
        rec = event.rec
        before = VAR.get()
        VAR.set("def " + rec["key"])
        ctx.send_event(OutputEvent(output={"key": rec["key"], "before": before}))
