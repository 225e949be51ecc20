# W5: W3 with a Python `async def` action: a durable call that returns at
# once, then one that sleeps 10 ms (issue 4's API).
import time

from eddy import Agent, action, InputEvent, OutputEvent


def fast(i):
    return {"ok": i}


def slow(i):
    time.sleep(0.010)
    return True


class FlowAgent(Agent):
    @action(InputEvent)
    @staticmethod
    async def flow(event, ctx):
        t0 = time.monotonic_ns()  # CLOCK_MONOTONIC, as the C agent's t0
        i = event.input.get("id")
        await ctx.durable_execute_async(fast, i)
        await ctx.durable_execute_async(slow, i)
        ctx.send_event(OutputEvent(output={"id": i, "t0": t0}))
