"""The Python agent of tests/e2e/test_signals.py that asks, at its import,
for what eddy does already with SIGPIPE (ignored) and SIGHUP (ignored, as
eddy does when started under nohup), and for SIGINT's default action. With
$EDDY_TEST_FAIL_LOAD set, it sets SIGTERM to be ignored with sigaction(2)
(through ctypes, as an extension module might), then fails to load. With
$EDDY_TEST_BLOCK set, it blocks SIGTERM (signal.pthread_sigmask) at its
import. Each input record is output as it is; one with "wait" first creates
the file $EDDY_TEST_STARTED and awaits ctx.sleep(30): a run that a signal
must stop.
"""
import os
import signal

from eddy import Agent, InputEvent, OutputEvent, action

signal.signal(signal.SIGPIPE, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_DFL)

if os.environ.get("EDDY_TEST_BLOCK"):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

if os.environ.get("EDDY_TEST_FAIL_LOAD"):
    import ctypes

    libc = ctypes.CDLL(None)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = (ctypes.c_int, ctypes.c_void_p)
    libc.signal(signal.SIGTERM, 1)  # SIG_IGN
    raise RuntimeError("failing as asked")


class SameSignals(Agent):
    @action(InputEvent)
    @staticmethod
    async def run(event, ctx):
        if event.input.get("wait"):
            open(os.environ["EDDY_TEST_STARTED"], "w").close()
            await ctx.sleep(30)
        ctx.send_event(OutputEvent(output=event.input))
