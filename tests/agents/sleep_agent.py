"""The Python agent of tests/e2e/test_sleep.py, twin of sleep_agent.c. Each
input record names an "op":

    sleep      await ctx.sleep(ms / 1000), at most $EDDY_TEST_MAX_SLEEP_MS
               when set; outputs {seq, slept_ms}. A sleep that eddy drops
               (a stop) says so on stderr from its finally block.
    instant    one ctx.execute_async of a function that returns at once;
               outputs {seq, call_ms}, how long the action waited for it.
    retry      a call that fails until attempt ok_at, retried with
               exponential back-off: each attempt a durable call of its
               own, backoff_ms * 2 ** attempt between attempts. The call
               appends "call SEQ ATTEMPT" to $EDDY_TEST_CALL_LOG, the action
               "sleep SEQ ATTEMPT" before each back-off. Outputs {seq,
               attempts}.
    gather     ctx.gather(ctx.sleep(ms / 1000), ctx.execute_async(...));
               outputs {seq, waited_ms, result}.
    def_sleep  sends DefSleep, whose action is a def that calls ctx.sleep:
               refused with a TypeError, which fails the run.
"""
import os
import sys
import time

from eddy import Agent, Event, InputEvent, OutputEvent, action


class DefSleep(Event):
    pass


def now_ms():
    return time.monotonic() * 1000


def log_line(what, seq, attempt):
    path = os.environ.get("EDDY_TEST_CALL_LOG")
    if path:
        with open(path, "a") as f:
            f.write("%s %d %d\n" % (what, seq, attempt))


def nothing():
    return "nothing"


def flaky(seq, attempt, ok_at):
    log_line("call", seq, attempt)
    if attempt < ok_at:
        raise ValueError("attempt %d failed" % attempt)
    return {"attempt": attempt}


async def retry_with_backoff(ctx, seq, ok_at, backoff_ms):
    # Each attempt is a durable call at its own position: a re-run after a
    # crash takes the journaled failures (and the success) without calling.
    attempt = 0
    while True:
        try:
            return await ctx.durable_execute_async(flaky, seq, attempt, ok_at)
        except ValueError:
            if attempt >= 10:
                raise
        log_line("sleep", seq, attempt)
        await ctx.sleep(backoff_ms * 2 ** attempt / 1000)
        attempt += 1


class SleepAgent(Agent):
    @action(InputEvent)
    @staticmethod
    async def dispatch(event, ctx):
        rec = event.input
        op, seq = rec.get("op"), rec.get("seq", 0)
        if op == "sleep":
            ms = rec["ms"]
            if os.environ.get("EDDY_TEST_MAX_SLEEP_MS"):
                ms = min(ms, int(os.environ["EDDY_TEST_MAX_SLEEP_MS"]))
            t0, woke = now_ms(), False
            try:
                await ctx.sleep(ms / 1000)
                woke = True
            finally:
                if not woke:
                    print("eddy-test: the sleep of key %s was dropped" % rec["key"],
                          file=sys.stderr)
            ctx.send_event(OutputEvent(output={"seq": seq, "key": rec["key"],
                                               "slept_ms": now_ms() - t0}))
        elif op == "instant":
            t0 = now_ms()
            await ctx.execute_async(nothing)
            ctx.send_event(OutputEvent(output={"seq": seq, "key": rec["key"],
                                               "call_ms": now_ms() - t0}))
        elif op == "retry":
            r = await retry_with_backoff(ctx, seq, rec["ok_at"], rec["backoff_ms"])
            ctx.send_event(OutputEvent(output={"seq": seq, "key": rec["key"],
                                               "attempts": r["attempt"] + 1}))
        elif op == "gather":
            t0 = now_ms()
            nap, result = await ctx.gather(ctx.sleep(rec["ms"] / 1000),
                                           ctx.execute_async(nothing))
            ctx.send_event(OutputEvent(output={"seq": seq, "key": rec["key"], "nap": nap,
                                               "result": result, "waited_ms": now_ms() - t0}))
        elif op == "def_sleep":
            ctx.send_event(DefSleep(seq=seq))
        else:
            raise ValueError("unknown op %r" % op)

    @action(DefSleep)
    @staticmethod
    def def_sleep(event, ctx):
        ctx.sleep(1)  # refused: a def action cannot suspend
