"""The Python twin of durable_agent.c, for the crash harness: every durable
call appends one line to the file named by EDDY_TEST_EFFECTS, so that a test
can count how often each call really ran across crashes.

    step1 (InputEvent)  durable async call "effect" (sleeps input["ms"]), then
                        short-term memory count += 1, sum += input["v"], a new
                        object "last"; sends Mid
    step2 (Mid)         durable call "local", then the output

With "op" in the input, step1 runs a scenario instead:
    chain               two durable async calls "step" in a row (the first
                        sleeps input["ms"]), then the output
    chain_local         the same with the second call a durable_execute on
                        the mailbox thread
    reconciled          a durable async call "paid" (sleeps input["ms"]) with
                        a reconciler, then the output
"""
import functools
import json
import os
import time

from eddy import Agent, Event, InputEvent, OutputEvent, RunnerContext, action


class Mid(Event):
    pass


def record_effect(what, args):
    path = os.environ.get("EDDY_TEST_EFFECTS")
    if path:
        line = "%s %s\n" % (what, json.dumps(args, sort_keys=True, separators=(",", ":")))
        with open(path, "a") as f:
            f.write(line)


def effect(key, seq, v, ms):
    record_effect("effect", {"key": key, "seq": seq, "v": v, "ms": ms})
    if ms:
        time.sleep(ms / 1000)
    return {"v": v * 10}


def step(key, seq, n, ms):
    record_effect("step", {"key": key, "seq": seq, "step": n})
    if ms:
        time.sleep(ms / 1000)
    return n


def paid(key, seq, ms):
    record_effect("dying", {"key": key, "seq": seq})
    if ms:
        time.sleep(ms / 1000)
    return "ran"


def check_paid(key, seq):
    record_effect("reconcile", {"key": key, "seq": seq})
    return "reconciled"


def local(key, seq):
    record_effect("local", {"key": key, "seq": seq})
    return seq + 1


class DurableAgent(Agent):
    @action(InputEvent)
    @staticmethod
    async def step1(event: InputEvent, ctx: RunnerContext):
        rec = event.input
        op = rec.get("op")
        if op in ("chain", "chain_local"):
            # The second call may run only once the first one's result is on
            # disk, although the action goes on once it is written.
            await ctx.durable_execute_async(step, rec["key"], rec["seq"], 1, rec.get("ms", 0))
            if op == "chain":
                await ctx.durable_execute_async(step, rec["key"], rec["seq"], 2, 0)
            else:
                ctx.durable_execute(step, rec["key"], rec["seq"], 2, 0)
            ctx.send_event(OutputEvent(output={"seq": rec["seq"], "op": op}))
            return
        if op == "reconciled":
            r = await ctx.durable_execute_async(
                paid, rec["key"], rec["seq"], rec.get("ms", 0),
                reconciler=functools.partial(check_paid, rec["key"], rec["seq"]))
            ctx.send_event(OutputEvent(output={"seq": rec["seq"], "op": op, "result": r}))
            return
        r = await ctx.durable_execute_async(effect, rec["key"], rec["seq"], rec["v"],
                                            rec.get("ms", 0))
        stm = ctx.short_term_memory
        count = (stm.get("count") or 0) + 1
        total = (stm.get("sum") or 0) + rec["v"]
        stm.set("count", count)
        stm.set("sum", total)
        stm.new_object("last")
        stm.set("last.seq", rec["seq"])
        ctx.send_event(Mid(seq=rec["seq"], count=count, sum=total, r=r["v"]))

    @action(Mid)
    @staticmethod
    def step2(event: Mid, ctx: RunnerContext):
        key = ctx.key
        res = ctx.durable_execute(local, key, event.seq)
        ctx.send_event(OutputEvent(output={"seq": event.seq, "count": event.count,
                                           "sum": event.sum, "r": event.r, "local": res,
                                           "key": key}))
