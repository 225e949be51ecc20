"""An agent whose run fails in one action while others of the run have
finished, are in flight or are ready to start: what --on-error skip keeps of
such a run (tests/e2e/test_python.py). Each input record names a log file
that the actions and their calls append to."""
import os
import time

from eddy import Agent, Event, InputEvent, OutputEvent, action


class Work(Event):
    pass


class Later(Event):
    pass


def log(path, line):
    with open(path, "a") as f:
        f.write(line + "\n")
    return line


def wait_for(path, marker, line):
    """A call that lasts until the failing action has failed (it makes the
    marker just before it raises), then logs."""
    end = time.monotonic() + 30
    while not os.path.exists(marker) and time.monotonic() < end:
        time.sleep(0.005)
    return log(path, line)


def memory(ctx):
    stm = ctx.short_term_memory
    return {"first": stm.get("first"), "slow": stm.get("slow"), "fails": stm.get("fails"),
            "sensory": ctx.sensory_memory.get("s")}


class SkippedRun(Agent):
    @action(InputEvent)
    @staticmethod
    def first(event: InputEvent, ctx):
        """Finishes before the failure: its output and memory write."""
        rec = event.input
        log(rec["log"], "first %d" % rec["n"])
        ctx.send_event(OutputEvent(output={"n": rec["n"], "by": "first", "before": memory(ctx)}))
        ctx.short_term_memory.set("first", rec["n"])
        ctx.sensory_memory.set("s", rec["n"])
        ctx.send_event(Work(rec=rec))

    @action(Work)
    @staticmethod
    async def slow(event: Work, ctx):
        """In flight when the failure comes; goes on past it."""
        rec = event.rec
        ctx.short_term_memory.set("slow", rec["n"])
        await ctx.durable_execute_async(wait_for, rec["log"], rec["log"] + ".failed.%d" % rec["n"],
                                        "slow %d call" % rec["n"])
        crash = rec.get("crash")
        if crash and os.path.exists(crash):
            os._exit(3)
        await ctx.execute_async(log, rec["log"], "slow %d next call" % rec["n"])
        ctx.send_event(Later(rec=rec))
        ctx.send_event(OutputEvent(output={"n": rec["n"], "by": "slow", "memory": memory(ctx)}))

    @action(Work)
    @staticmethod
    def fails(event: Work, ctx):
        rec = event.rec
        ctx.short_term_memory.set("fails", rec["n"])
        ctx.send_event(OutputEvent(output={"n": rec["n"], "by": "fails"}))
        open(rec["log"] + ".failed.%d" % rec["n"], "w").close()
        if rec.get("fail"):
            raise ValueError("run %d fails" % rec["n"])

    @action(Work)
    @staticmethod
    def never(event: Work, ctx):
        """Ready to start when the failure comes: it never runs."""
        log(event.rec["log"], "never %d" % event.rec["n"])

    @action(Later)
    @staticmethod
    def later(event: Later, ctx):
        log(event.rec["log"], "later %d" % event.rec["n"])
