"""End-to-end tests of sleeps (eddy_ctx_sleep in C, await ctx.sleep in
Python) through the eddy binary, with tests/agents/sleep_agent.c and its
Python twin: sleeping keys hold no worker, so another key's call is not
delayed; SIGTERM during an hour's sleep stops at once, and the rerun with
--state completes; a retry with exponential back-off, killed with SIGKILL
during a back-off, does not call again the attempts already journaled
(the rerun sleeps again: sleeps are not journaled); a def action's sleep is
refused with a message that says why."""
import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from eddytest import (AGENTS, EDDY, SANITIZED, SOURCE, EddyTest, needs_python, read_jsonl,  # noqa: E402
                      write_jsonl)

C_AGENT = os.path.join(AGENTS, "sleep_agent.so")
PY_AGENT = os.path.join(SOURCE, "tests", "agents", "sleep_agent.py")

# Sanitizers slow every step, as does a busy machine: the bounds below are
# loose, and still well under what the same runs take when sleeps hold a
# worker (4 s and more) or a stop waits for a sleep (an hour).
SLACK = 2 if SANITIZED else 1


def wait_for(cond, what, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError("eddy ended (%d) before %s: %s"
                                 % (proc.returncode, what, proc.stderr.read().decode()))
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.005)


def read_lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().splitlines()


class SleepCases:
    """The tests both agents pass; a subclass sets agent."""

    agent = None

    def cmd(self, *args):
        return [EDDY, "run", self.agent, "--input", self.path("in.jsonl"), "--output",
                self.path("out.jsonl"), "--state", self.path("state"), "--no-progress"] + list(args)

    def test_sleeping_keys_hold_no_worker(self):
        # Eight keys sleep 0.5 s on one worker thread: together, in about
        # 0.5 s, and a ninth key's call finds the worker free. Slept on the
        # worker (execute_async of a sleep), they took 4 s, and the call
        # waited for all of them.
        n = 8
        recs = [{"key": "s%d" % i, "op": "sleep", "ms": 500, "seq": i} for i in range(n)]
        recs.append({"key": "quick", "op": "instant", "seq": n})
        t0 = time.monotonic()
        res = self.run_eddy(recs, "--async-threads", "1", agent=self.agent, timeout=60)
        took = time.monotonic() - t0
        self.assertOk(res)
        outs = {o["seq"]: o for o in res.outputs()}
        self.assertEqual(sorted(outs), list(range(n + 1)))
        for i in range(n):
            self.assertGreaterEqual(outs[i]["slept_ms"], 490, outs[i])
            self.assertLess(outs[i]["slept_ms"], 1500 * SLACK, outs[i])
        self.assertLess(outs[n]["call_ms"], 300 * SLACK, "the call waited for the sleepers")
        self.assertLess(took, 2.5 * SLACK, "the sleeps did not overlap")
        self.assertIn(b" 9 actions, 1 async call,", res.stderr)  # the sleeps took no worker

    def test_sigterm_during_a_long_sleep_stops_at_once_and_resumes(self):
        # One key sleeps an hour while five others finish; SIGTERM stops
        # eddy at once (the sleep is canceled, the action unwinds), and the
        # rerun, whose sleeps are cut short here, runs the long key's input
        # again and writes each output once.
        recs = [{"key": "long", "op": "sleep", "ms": 3600 * 1000, "seq": 0}]
        recs += [{"key": "q%d" % i, "op": "sleep", "ms": 1, "seq": i} for i in range(1, 6)]
        write_jsonl(self.path("in.jsonl"), recs)
        p = subprocess.Popen(self.cmd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: len(read_lines(self.path("out.jsonl"))) == 5,
                     "the five short sleeps' outputs", p)
            time.sleep(0.1)
            self.assertIsNone(p.poll(), "eddy ended while a key slept")
            t0 = time.monotonic()
            p.send_signal(signal.SIGTERM)
            try:
                _, err = p.communicate(timeout=5 * SLACK)
            except subprocess.TimeoutExpired:
                self.fail("eddy did not stop within %d s of SIGTERM" % (5 * SLACK))
            took = time.monotonic() - t0
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
        self.assertEqual(p.returncode, 143, err)
        self.assertLess(took, 2.0 * SLACK, "the stop waited for the sleep")
        self.assertIn(b"eddy: interrupted; run the same command again to resume\n", err)
        self.assertIn(self.dropped_line, err)
        again = subprocess.run(self.cmd(), capture_output=True, timeout=60,
                               env=dict(os.environ, EDDY_TEST_MAX_SLEEP_MS="20"))
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertIn(b"1 run resumed, 1 pending input taken up from the state", again.stderr)
        outs = read_jsonl(self.path("out.jsonl"))
        self.assertEqual(sorted(o["seq"] for o in outs), list(range(6)))
        self.assertEqual([o["key"] for o in outs if o["seq"] == 0], ["long"])

    def test_retry_with_backoff_replayed_after_kill(self):
        # Attempts 0, 1 and 2 fail, 3 succeeds; back-off 150, 300, 600 ms.
        # SIGKILL during the back-off after attempt 1: both failures are
        # journaled (the action sleeps only once its call's outcome is
        # written), so the rerun replays them without calling, sleeps again
        # (sleeps are not journaled), and calls attempts 2 and 3 once each.
        write_jsonl(self.path("in.jsonl"),
                    [{"key": "r", "op": "retry", "ok_at": 3, "backoff_ms": 150, "seq": 0}])
        log = self.path("calls.log")
        env = dict(os.environ, EDDY_TEST_CALL_LOG=log)
        p = subprocess.Popen(self.cmd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            wait_for(lambda: "sleep 0 1" in read_lines(log), "the back-off after attempt 1", p)
            p.kill()
            p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
        self.assertEqual(p.returncode, -signal.SIGKILL)
        self.assertEqual(read_lines(log), ["call 0 0", "sleep 0 0", "call 0 1", "sleep 0 1"],
                         "the kill did not land in the back-off after attempt 1")
        t0 = time.monotonic()
        again = subprocess.run(self.cmd(), capture_output=True, timeout=60, env=env)
        took = time.monotonic() - t0
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertIn(b"2 durable calls replayed", again.stderr)
        self.assertEqual(read_lines(log)[4:],
                         ["sleep 0 0", "sleep 0 1", "call 0 2", "sleep 0 2", "call 0 3"])
        self.assertGreaterEqual(took, 1.0)  # 150 + 300 + 600 ms of back-off again
        self.assertEqual(read_jsonl(self.path("out.jsonl")),
                         [{"seq": 0, "key": "r", "attempts": 4}])


class CSleepTest(SleepCases, EddyTest):
    agent = C_AGENT
    dropped_line = b'eddy-test: the sleep of key "long" returned EDDY_ECANCELED\n'


@needs_python
class PythonSleepTest(SleepCases, EddyTest):
    agent = PY_AGENT
    dropped_line = b"eddy-test: the sleep of key long was dropped\n"

    def test_sleep_in_a_def_action_is_refused(self):
        res = self.run_eddy([{"key": "d", "op": "def_sleep", "seq": 0}], agent=self.agent)
        self.assertEqual(res.rc, 1, res.stderr)
        err = res.stderr.decode()
        self.assertIn("action 'def_sleep' failed", err)
        self.assertIn("TypeError: ctx.sleep() suspends the action, and action 'def_sleep' is a "
                      "def action, which runs in one step and cannot suspend: make it an async "
                      "def action and write `await ctx.sleep(seconds)`", err)

    def test_sleep_in_gather_with_a_call(self):
        res = self.run_eddy([{"key": "g", "op": "gather", "ms": 200, "seq": 0}],
                            "--async-threads", "1", agent=self.agent)
        self.assertOk(res)
        (o,) = res.outputs()
        self.assertIsNone(o["nap"])
        self.assertEqual(o["result"], "nothing")
        self.assertGreaterEqual(o["waited_ms"], 195)
        self.assertIn(b" 1 async call,", res.stderr)

    def test_zero_and_negative_sleeps_yield(self):
        # asyncio.sleep's rule: 0 or less yields once and goes on.
        recs = [{"key": "z%d" % i, "op": "sleep", "ms": ms, "seq": i}
                for i, ms in enumerate((0, -5, 0, 1))]
        res = self.run_eddy(recs, agent=self.agent)
        self.assertOk(res)
        outs = sorted(res.outputs(), key=lambda o: o["seq"])
        self.assertEqual([o["seq"] for o in outs], [0, 1, 2, 3])
        self.assertLess(max(o["slept_ms"] for o in outs[:3]), 1000 * SLACK)


if __name__ == "__main__":
    unittest.main()
