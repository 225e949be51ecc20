"""The Python agent of tests/e2e/test_signals.py that installs signal
handlers of its own, as any agent may: at its import for SIGTERM, SIGHUP and
SIGPIPE (SIG_DFL, the idiom of command-line scripts), in its action for
SIGINT. eddy keeps its own (a warning says so); were the agent's installed,
a SIGTERM or SIGINT would not stop eddy, and each would print "agent handler
SIG...". Each input record names an "op":

    wait   create the file $EDDY_TEST_STARTED, then await ctx.sleep(30) and
           output the record: a run that a signal must stop
    block  create the file $EDDY_TEST_STARTED, then await a 30 s call on the
           worker pool (a stop waits for it) and output the record
    echo   output the record at once
"""
import os
import signal
import time

from eddy import Agent, InputEvent, OutputEvent, action


def handler(signo, frame):
    print("agent handler %s" % signal.Signals(signo).name, flush=True)


signal.signal(signal.SIGTERM, handler)
signal.signal(signal.SIGHUP, handler)
signal.signal(signal.SIGPIPE, signal.SIG_DFL)


class OwnSignals(Agent):
    @action(InputEvent)
    @staticmethod
    async def run(event, ctx):
        rec = event.input
        signal.signal(signal.SIGINT, handler)
        if rec.get("op") == "wait":
            open(os.environ["EDDY_TEST_STARTED"], "w").close()
            await ctx.sleep(30)
        elif rec.get("op") == "block":
            open(os.environ["EDDY_TEST_STARTED"], "w").close()
            await ctx.execute_async(time.sleep, 30)
        ctx.send_event(OutputEvent(output=rec))
