"""The Python agent of tests/e2e/test_signals.py that leaves threads behind:
threads that are not daemon threads, which Python waits for at its exit.
Each input record names an "op":

    thread  start n (default 1) threads named "uploader" (n = 1) or
            "uploader-0", "uploader-1", ...: each waits until the file
            $EDDY_TEST_RELEASE exists (30 s at most), then appends its name
            to $EDDY_TEST_DONE; output the record
    wait    create the file $EDDY_TEST_STARTED, then await ctx.sleep(30) and
            output the record: a run that a signal must stop
    pool    submit a function to a ThreadPoolExecutor that is never shut
            down (its idle workers end when Python's exit asks them to);
            output the record
    child   start a multiprocessing.Process (fork, not a daemon: Python's
            exit joins it) that waits for $EDDY_TEST_RELEASE as a thread
            does, appending "child" to $EDDY_TEST_DONE; output the record
    terminate  start a multiprocessing.Process (fork) that sleeps 30 s,
            terminate() it, join it (5 s at most) and output the record
            with "exitcode": the child's (-15 when SIGTERM ended it)

With $EDDY_TEST_LOG set, the agent opens that file at import and writes
each record's op to it, a line each, never flushing it: Python's exit must.

With $EDDY_TEST_EXIT set, the agent registers an atexit handler that creates
$EDDY_TEST_EXIT.started, waits until the file $EDDY_TEST_EXIT exists (at
once if it does; 30 s at most), then creates $EDDY_TEST_EXIT.ran.
"""
import atexit
import concurrent.futures
import multiprocessing
import os
import threading
import time

from eddy import Agent, InputEvent, OutputEvent, action


def wait_for_release(name):
    deadline = time.monotonic() + 30
    while not os.path.exists(os.environ["EDDY_TEST_RELEASE"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    with open(os.environ["EDDY_TEST_DONE"], "a") as f:
        f.write(name + "\n")


POOL = concurrent.futures.ThreadPoolExecutor(2)

EXIT = os.environ.get("EDDY_TEST_EXIT")

LOG = open(os.environ["EDDY_TEST_LOG"], "w") if os.environ.get("EDDY_TEST_LOG") else None


def register_exit():
    def at_exit():
        open(EXIT + ".started", "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists(EXIT) and time.monotonic() < deadline:
            time.sleep(0.01)
        open(EXIT + ".ran", "w").close()

    atexit.register(at_exit)


if EXIT:
    register_exit()


class ThreadsLeft(Agent):
    @action(InputEvent)
    @staticmethod
    async def run(event, ctx):
        rec = event.input
        if LOG is not None:
            LOG.write("%s\n" % rec.get("op"))
        if rec.get("op") == "thread":
            n = rec.get("n", 1)
            for i in range(n):
                name = "uploader" if n == 1 else "uploader-%d" % i
                threading.Thread(target=wait_for_release, args=(name,), name=name).start()
        elif rec.get("op") == "child":
            multiprocessing.get_context("fork").Process(target=wait_for_release,
                                                        args=("child",)).start()
        elif rec.get("op") == "terminate":
            p = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,))
            p.start()
            p.terminate()
            p.join(5)
            rec = dict(rec, exitcode=p.exitcode)
        elif rec.get("op") == "pool":
            POOL.submit(len, "x").result()
        elif rec.get("op") == "wait":
            open(os.environ["EDDY_TEST_STARTED"], "w").close()
            await ctx.sleep(30)
        ctx.send_event(OutputEvent(output=rec))
