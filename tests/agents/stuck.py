"""The Python agent of tests/e2e/test_signals.py whose action does not return
while a test holds it: a record with "stuck" creates the file
$EDDY_TEST_STARTED, then waits (on the mailbox thread, as an action stuck in a
loop or a blocking call would) until the file $EDDY_TEST_RELEASE exists, 60 s
at most. Each record is output as it is.
"""
import os
import time

from eddy import InputEvent, OutputEvent, action


@action(InputEvent)
def run(event, ctx):
    if event.input.get("stuck"):
        open(os.environ["EDDY_TEST_STARTED"], "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(os.environ["EDDY_TEST_RELEASE"]) and time.monotonic() < deadline:
            time.sleep(0.01)
    ctx.send_event(OutputEvent(output=event.input))
