"""Hostile environment: SIGTERM, SIGINT and SIGHUP mid-run stop cleanly (exit
143, 130 and 129, a line saying how to resume, the rerun completes exactly); a
reader of stdout that goes away (SIGPIPE/EPIPE) is an I/O error (exit 1) and
leaves the state consistent."""
import array
import collections
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import termios
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from eddytest import (AGENTS, EDDY, SANITIZED, SOURCE, TEST_AGENT, EddyTest, lines_written,  # noqa: E402
                      needs_python, read_jsonl, write_jsonl)

DURABLE = os.path.join(AGENTS, "durable_agent.so")
HOOKS = os.environ.get("EDDY_HOOKS", "ON").upper() in ("ON", "1", "TRUE", "YES")


def wait_for_file(test, p, path, what):
    """Wait (60 s at most) until path exists, failing if eddy (p) ended first."""
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        test.assertIsNone(p.poll(), p.stderr.read() if p.poll() is not None else "")
        test.assertLess(time.monotonic(), deadline, what)
        time.sleep(0.005)


class Signals(EddyTest):
    def setUp(self):
        super().setUp()
        self.inp = self.path("in.jsonl")
        self.out = self.path("out.jsonl")
        self.state = self.path("state")
        self.recs = [{"key": "k%d" % (i % 40), "seq": i, "v": i % 17, "ms": 10}
                     for i in range(600)]
        write_jsonl(self.inp, self.recs)

    def cmd(self, output=None):
        return [EDDY, "run", DURABLE, "--input", self.inp, "--output", output or self.out,
                "--state", self.state, "--no-progress", "--async-threads", "4",
                "--max-in-flight", "16"]

    def check_exact(self, outs):
        acc = collections.defaultdict(lambda: [0, 0])
        expect = {}
        for r in self.recs:
            a = acc[r["key"]]
            a[0] += 1
            a[1] += r["v"]
            expect[r["seq"]] = (a[0], a[1])
        self.assertEqual(sorted(o["seq"] for o in outs), sorted(expect))
        for o in outs:
            self.assertEqual((o["count"], o["sum"]), expect[o["seq"]])

    def interrupt(self, signo, code):
        p = subprocess.Popen(self.cmd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.6)
        self.assertIsNone(p.poll(), "finished before the signal: make the run longer")
        p.send_signal(signo)
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, code, err)
        self.assertIn(b"eddy: interrupted; run the same command again to resume\n", err)
        partial = read_jsonl(self.out)
        self.assertLess(len(partial), len(self.recs))
        again = subprocess.run(self.cmd(), capture_output=True, timeout=120)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.check_exact(read_jsonl(self.out))

    def test_sigterm_stops_cleanly_and_resumes(self):
        self.interrupt(signal.SIGTERM, 143)

    def test_sigint_stops_cleanly_and_resumes(self):
        self.interrupt(signal.SIGINT, 130)

    def test_sigterm_in_a_stream_of_bad_lines(self):
        # Invalid UTF-8 lines (a file in Latin-1), dead-lettered slower than
        # the reader reads them, kept the mailbox from its loop as long as
        # the reader stayed ahead: no commit (no dead letter written), and a
        # SIGTERM acted on only at the input's end. Bad lines are now
        # dead-lettered a bounded number per loop turn, like other work. The
        # input is a pipe the test keeps ahead of eddy, and does not close.
        line = ('{"key":"k","n":"Ren\u00e9 %s"}\n' % ("x" * 150)).encode("latin-1")
        block = line * 1000
        dead = self.path("dead.jsonl")
        cmd = [EDDY, "run", TEST_AGENT, "--input", "-", "--output", self.out,
               "--dead-letter", dead, "--state", self.state, "--no-progress"]
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)

        def end():
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdin.close()
            p.stderr.close()
        self.addCleanup(end)
        blocks = 0
        while not os.path.exists(dead) or os.path.getsize(dead) == 0:
            self.assertLess(blocks, 500, "no dead letter written while the input streamed in")
            p.stdin.write(block)
            p.stdin.flush()
            blocks += 1
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
        err = p.stderr.read()
        self.assertEqual(p.returncode, 143, err)
        self.assertIn(b"eddy: interrupted; run the same command again to resume\n", err)
        n = (blocks + 2) * 1000
        again = subprocess.run(cmd, input=block * (blocks + 2), capture_output=True, timeout=120)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual([d["line"] for d in read_jsonl(dead)], list(range(1, n + 1)))

    def spin_then_stop(self, n, ms):
        """n inputs whose action computes ms on the mailbox thread, --state:
        SIGTERM once the first output is out. Returns (seconds to the first
        output, lines then, lines at the end); the stop must be clean."""
        write_jsonl(self.inp, [{"key": "k%d" % i, "op": "spin", "ms": ms, "seq": i}
                               for i in range(n)])
        cmd = [EDDY, "run", TEST_AGENT, "--input", self.inp, "--output", self.out,
               "--state", self.state, "--no-progress"]
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.addCleanup(lambda: (p.poll() is None and p.kill(), p.wait(), p.stderr.close()))
        while not os.path.exists(self.out) or os.path.getsize(self.out) == 0:
            self.assertIsNone(p.poll(), "eddy ended before its first output")
            self.assertLess(time.monotonic() - t0, 60, "no output")
            time.sleep(0.01)
        first = time.monotonic() - t0
        at_signal = lines_written(self.out)  # eddy may be writing one
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
        self.assertEqual(p.returncode, 143, p.stderr.read())
        return first, at_signal, len(read_jsonl(self.out))

    def test_actions_that_compute_do_not_hold_the_loop(self):
        # A loop turn ran up to 4,096 steps whatever they took: with actions
        # computing 3 ms each, 12 s passed with nothing committed, no output
        # and a SIGTERM seen only at the end (having run every queued step).
        # A turn now stops at --commit-interval-ms. Here 500 inputs of 20 ms:
        # the first output came after the 10 s of the whole batch, and the
        # stop ran the rest of it.
        first, at_signal, end = self.spin_then_stop(500, 20)
        self.assertLess(first, 5.0, "no output for 5 s: one turn held them")
        self.assertLessEqual(end - at_signal, 10, "the stop ran the turn's queued steps")

    def test_a_slow_action_holds_the_loop_one_step(self):
        # Slow steps are timed one by one (a turn ran 8 of them before the
        # clock was read): the stop waits for the step under way, and the
        # one before it whose output was not out yet.
        first, at_signal, end = self.spin_then_stop(20, 300)
        self.assertLessEqual(end - at_signal, 3)

    def test_sighup_stops_cleanly_and_resumes(self):
        # Closing the terminal (an ssh session) sent SIGHUP, whose default
        # action ended eddy with no message and nothing committed.
        self.interrupt(signal.SIGHUP, 129)

    def test_sighup_twice_is_still_one_clean_stop(self):
        # A hangup comes twice: the kernel sends SIGHUP to the terminal's
        # foreground process group, and the shell to its jobs as it exits.
        # The second must not end the stop at once as a second SIGINT does.
        p = subprocess.Popen(self.cmd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.6)
        self.assertIsNone(p.poll(), "finished before the signal: make the run longer")
        p.send_signal(signal.SIGHUP)
        p.send_signal(signal.SIGHUP)
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 129, err)
        self.assertTrue(err.endswith(b"eddy: interrupted; run the same command again to "
                                     b"resume\n"), err)
        again = subprocess.run(self.cmd(), capture_output=True, timeout=120)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.check_exact(read_jsonl(self.out))

    def test_sighup_ignored_under_nohup(self):
        # Started ignoring SIGHUP (nohup), eddy keeps ignoring it.
        p = subprocess.Popen(self.cmd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
        time.sleep(0.3)
        self.assertIsNone(p.poll(), "finished before the signal: make the run longer")
        p.send_signal(signal.SIGHUP)
        _, err = p.communicate(timeout=120)
        self.assertEqual(p.returncode, 0, err)
        self.assertNotIn(b"interrupted", err)
        self.check_exact(read_jsonl(self.out))

    @unittest.skipUnless(HOOKS, "built without EDDY_TEST_HOOKS")
    def test_sigterm_while_opening_the_state(self):
        # Opening and recovering a large state takes a while (a test hook
        # stands for it here): a SIGTERM then is a request to stop like any
        # other, not the default action's silent end.
        first = subprocess.run(self.cmd(), capture_output=True, timeout=120)
        self.assertEqual(first.returncode, 0, first.stderr)
        with open(self.inp, "a") as f:
            f.write(json.dumps({"key": "k0", "seq": 600, "v": 1, "ms": 0}) + "\n")
        env = dict(os.environ, EDDY_TEST_OPEN_PAUSE_MS="1500")
        p = subprocess.Popen(self.cmd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        time.sleep(0.5)
        self.assertIsNone(p.poll())
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 143, err)
        self.assertIn(b"eddy: interrupted; run the same command again to resume\n", err)
        again = subprocess.run(self.cmd(), capture_output=True, timeout=120)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual(sorted(o["seq"] for o in read_jsonl(self.out)), list(range(601)))

    # The handlers were installed once the agent had loaded: a signal during
    # a Python agent's imports ended eddy silently (-15). Now it is a stop
    # like any other, taken once loading returns: the usual line and exit
    # code, and nothing started (no state, no output). The same for a C
    # agent's eddy_agent_init().
    def test_signal_while_a_c_agent_loads(self):
        self.signal_while_loading(TEST_AGENT)

    @needs_python
    def test_signal_while_a_python_agent_loads(self):
        agent = self.path("slow_import.py")
        with open(agent, "w") as f:
            f.write("import os\n"
                    "import time\n"
                    "from eddy import Agent, InputEvent, OutputEvent, action\n"
                    "open(os.environ['EDDY_TEST_LOADING'], 'w').close()\n"
                    "deadline = time.monotonic() + 60\n"
                    "while not os.path.exists(os.environ['EDDY_TEST_GO']):\n"
                    "    assert time.monotonic() < deadline\n"
                    "    time.sleep(0.005)\n"
                    "class Echo(Agent):\n"
                    "    @action(InputEvent)\n"
                    "    @staticmethod\n"
                    "    def echo(event, ctx):\n"
                    "        ctx.send_event(OutputEvent(output=event.input))\n")
        self.signal_while_loading(agent)

    def signal_while_loading(self, agent):
        # The agent creates $EDDY_TEST_LOADING as it loads, then waits for
        # $EDDY_TEST_GO; it echoes each input.
        loading, go = self.path("loading"), self.path("go")
        env = dict(os.environ, EDDY_TEST_LOADING=loading, EDDY_TEST_GO=go)
        cmd = self.cmd()
        cmd[cmd.index(DURABLE)] = agent
        for signo, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
            for flag in (loading, go):
                if os.path.exists(flag):
                    os.remove(flag)
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            # loading: the handlers are in place
            wait_for_file(self, p, loading, "the agent never loaded")
            p.send_signal(signo)
            open(go, "w").close()
            _, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, code, err)
            self.assertEqual(err, b"eddy: interrupted; run the same command again to resume\n")
            self.assertFalse(os.path.exists(self.state))
            self.assertFalse(os.path.exists(self.out))
        res = subprocess.run(cmd, capture_output=True, timeout=120, env=env)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(sorted(o["seq"] for o in read_jsonl(self.out)), list(range(600)))

    @unittest.skipUnless(HOOKS, "built without EDDY_TEST_HOOKS")
    def test_signal_after_the_run_ended(self):
        # The handlers were removed before the summary and the closing of
        # the state (a test hook makes that wait for a file here): a signal
        # then turned a completed run into a kill (-15). It interrupts
        # nothing: exit 0, with a note, and the output is complete.
        for r in self.recs:
            r["ms"] = 0
        write_jsonl(self.inp, self.recs)
        go = self.path("go")
        env = dict(os.environ, EDDY_TEST_CLOSE_WAIT_FOR=go)
        for signo, name in ((signal.SIGTERM, b"SIGTERM"), (signal.SIGINT, b"SIGINT"),
                            (signal.SIGHUP, b"SIGHUP")):
            if os.path.exists(go):
                os.remove(go)
            p = subprocess.Popen(self.cmd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=env)
            summary = p.stderr.readline()  # printed once the run has ended
            self.assertTrue(summary.startswith(b"eddy: "), summary)
            self.assertNotIn(b"interrupted", summary)
            p.send_signal(signo)
            open(go, "w").close()
            _, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 0, summary + err)
            self.assertEqual(err, b"eddy: note: " + name + b" came after the run had ended; it "
                             b"interrupted nothing, and the exit code is the run's\n")
            self.check_exact(read_jsonl(self.out))

    def test_stop_skips_calls_not_started(self):
        # Ten slow durable calls queued for one worker: after SIGTERM only
        # the one running finishes; the others are canceled, not run one
        # after another before eddy exits (they run on the resume).
        recs = [{"key": "s%d" % i, "seq": i, "v": 1, "ms": 400} for i in range(10)]
        write_jsonl(self.inp, recs)
        effects = self.path("effects")
        env = dict(os.environ, EDDY_TEST_EFFECTS=effects)
        cmd = self.cmd()
        cmd[cmd.index("--async-threads") + 1] = "1"
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for _ in range(600):  # the first call has started
            if os.path.exists(effects) and os.path.getsize(effects) > 0:
                break
            time.sleep(0.01)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 143, err)
        with open(effects) as f:
            ran = sum(1 for line in f if line.startswith("effect"))
        self.assertLessEqual(ran, 2, "calls queued behind the stop still ran")
        # The summary counts the calls that ran, not those canceled.
        m = re.search(rb"(\d+) async calls?\b", err)
        self.assertIsNotNone(m, err)
        self.assertEqual(int(m.group(1)), ran, err)
        again = subprocess.run(cmd, capture_output=True, timeout=120, env=env)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual(sorted(o["seq"] for o in read_jsonl(self.out)), list(range(10)))

    def stop_before_reconciled_calls_start(self, agent):
        # Ten reconciled calls queued behind one worker: SIGTERM while the
        # first runs. Those that never started had their PENDING start
        # journaled; the resume handed them to the reconciler although
        # their function never ran. Now the stop's last commit drops those
        # records, and the resume runs the function (the one running when
        # the stop came keeps its outcome: neither runs again).
        recs = [{"key": "r%d" % i, "seq": i, "op": "reconciled", "ms": 300} for i in range(10)]
        write_jsonl(self.inp, recs)
        effects = self.path("effects")
        env = dict(os.environ, EDDY_TEST_EFFECTS=effects)
        cmd = self.cmd()
        cmd[2] = agent
        cmd[cmd.index("--async-threads") + 1] = "1"
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for _ in range(1000):  # the first call has started
            if os.path.exists(effects) and os.path.getsize(effects) > 0:
                break
            time.sleep(0.01)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 143, err)
        with open(effects) as f:
            ran = sum(1 for line in f if line.startswith("dying"))
        self.assertLess(ran, 10, "every call ran before the stop: make them slower")
        again = subprocess.run(cmd, capture_output=True, timeout=120, env=env)
        self.assertEqual(again.returncode, 0, again.stderr)
        with open(effects) as f:
            kinds = collections.Counter(
                (line.split(" ", 1)[0], json.loads(line.split(" ", 1)[1])["seq"]) for line in f)
        self.assertEqual(sorted(s for (k, s) in kinds if k == "reconcile"), [])
        self.assertEqual(kinds, {("dying", i): 1 for i in range(10)})
        self.assertEqual(sorted(o["seq"] for o in read_jsonl(self.out)), list(range(10)))

    def test_stop_drops_pending_starts_of_calls_never_started(self):
        self.stop_before_reconciled_calls_start(DURABLE)

    @needs_python
    def test_stop_drops_pending_starts_of_calls_never_started_python(self):
        self.stop_before_reconciled_calls_start(
            os.path.join(SOURCE, "tests", "agents", "durable_agent.py"))

    def test_stop_in_a_durable_batch(self):
        # eddy_ctx_durable_execute_async_all on one worker: call 1 (no
        # reconciler) runs at once and stops eddy (SIGTERM to itself), call
        # 0 (reconciled) waits for its PENDING start's sync, then for the
        # worker, and is canceled. Call 1 finishes and is journaled first;
        # dropping call 0's PENDING record must keep it. The resume runs
        # call 0 (not its reconciler) and replays call 1.
        write_jsonl(self.inp, [{"key": "b", "op": "batch", "seq": 1,
                                "calls": [{"reconcile": True}, {"sigterm": True, "ms": 300}]}])
        effects = self.path("effects")
        env = dict(os.environ, EDDY_TEST_EFFECTS=effects)
        cmd = self.cmd()
        cmd[cmd.index("--async-threads") + 1] = "1"
        first = subprocess.run(cmd, capture_output=True, timeout=60, env=env)
        self.assertEqual(first.returncode, 143, first.stderr)

        def ran():
            with open(effects) as f:
                return collections.Counter(
                    (line.split(" ", 1)[0], json.loads(line.split(" ", 1)[1])["i"]) for line in f)
        self.assertEqual(ran(), {("batch", 1): 1})
        again = subprocess.run(cmd, capture_output=True, timeout=60, env=env)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertIn(b"1 durable call replayed", again.stderr)
        self.assertEqual(ran(), {("batch", 0): 1, ("batch", 1): 1})
        (out,) = read_jsonl(self.out)
        self.assertEqual([c["rc"] for c in out["calls"]], [0, 0])

    def stop_during_calls(self, agent):
        # Three slow durable calls running when SIGTERM comes: eddy waits
        # for them, and their results are committed with the stop, so the
        # resume replays them instead of running them again.
        recs = [{"key": "t%d" % i, "seq": i, "v": 1, "ms": 700} for i in range(3)]
        write_jsonl(self.inp, recs)
        effects = self.path("effects")
        env = dict(os.environ, EDDY_TEST_EFFECTS=effects)
        cmd = self.cmd()
        cmd[2] = agent
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for _ in range(1000):  # all three calls have started
            if os.path.exists(effects):
                with open(effects) as f:
                    if sum(1 for line in f if line.startswith("effect")) == 3:
                        break
            time.sleep(0.01)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 143, err)
        again = subprocess.run(cmd, capture_output=True, timeout=120, env=env)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertIn(b"3 durable calls replayed", again.stderr)
        with open(effects) as f:
            ran = collections.Counter(json.loads(line.split(" ", 1)[1])["key"]
                                      for line in f if line.startswith("effect"))
        self.assertEqual(ran, {"t0": 1, "t1": 1, "t2": 1})
        self.assertEqual(sorted(o["seq"] for o in read_jsonl(self.out)), [0, 1, 2])

    def test_stop_keeps_results_of_running_calls(self):
        self.stop_during_calls(DURABLE)

    @needs_python
    def test_stop_keeps_results_of_running_calls_python(self):
        self.stop_during_calls(os.path.join(SOURCE, "tests", "agents", "durable_agent.py"))

    def test_closed_standard_streams(self):
        # A closed fd 0, 1 or 2 was taken by the next descriptor opened
        # (libuv's epoll): prints went there, and libuv aborted on closing
        # it (exit 134). The streams get /dev/null, and an input or output
        # that names a closed one is refused.
        write_jsonl(self.inp, [{"key": "k", "seq": 0, "v": 1, "ms": 0}])
        agent = os.path.join(AGENTS, "testagent.so")

        def sh(redirs, *args):
            cmd = " ".join("'%s'" % a for a in (EDDY, "run", agent) + args)
            return subprocess.run(["sh", "-c", "exec %s %s" % (cmd, redirs)],
                                  capture_output=True, timeout=60)

        res = sh(">&-", "--input", self.inp)
        self.assertEqual(res.returncode, 2, res.stderr)
        self.assertIn(b"eddy: the output is standard output, which is closed; give --output "
                      b"FILE\n", res.stderr)
        res = sh("<&-")
        self.assertEqual(res.returncode, 2, res.stderr)
        self.assertIn(b"the input is standard input, which is closed", res.stderr)
        res = sh("2>&-", "--input", self.inp)  # the dead letters would be lost
        self.assertEqual(res.returncode, 2)
        for redirs in ("<&- 2>&-", "<&-", "2>&-"):
            out = self.path("closed.jsonl")
            res = sh(redirs, "--input", self.inp, "--output", out, "--state",
                     self.path("st-%d" % len(redirs)), "--dead-letter", self.path("dl.jsonl"))
            self.assertEqual(res.returncode, 0, (redirs, res.stderr))
            self.assertEqual([o["seq"] for o in read_jsonl(out)], [0])

    @unittest.skipIf(SANITIZED, "sanitizers handle SIGSEGV themselves")
    def test_sigsegv_sent_still_kills(self):
        # The stack-overflow handler returns to let a fault happen again; a
        # SIGSEGV sent with kill(2) must still end eddy as it did.
        p = subprocess.Popen([EDDY, "run", os.path.join(AGENTS, "testagent.so"), "--quiet"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        p.stdin.write(b'{"key": "a", "op": "echo", "seq": 1}\n')
        p.stdin.flush()
        p.stdout.readline()  # running: the first output is out
        p.send_signal(signal.SIGSEGV)
        p.communicate(timeout=60)
        self.assertEqual(p.returncode, -signal.SIGSEGV)

    def test_sigpipe_on_stdout(self):
        """eddy ... --output - | head -1: eddy stops with EPIPE (exit 1), the
        state stays consistent: the rerun produces exactly the outputs that
        were not yet delivered, each once, with the right memory."""
        for r in self.recs:
            r["ms"] = 0
        write_jsonl(self.inp, self.recs)
        sh = "%s | head -1" % " ".join("'%s'" % a for a in self.cmd("-"))
        p = subprocess.run(["bash", "-c", sh + "; exit ${PIPESTATUS[0]}"], capture_output=True,
                           timeout=120)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(b"eddy: cannot write to standard output: Broken pipe\n", p.stderr)
        self.assertEqual(len(p.stdout.splitlines()), 1)
        insp = subprocess.run([EDDY, "inspect", "--state", self.state, "--json"],
                              capture_output=True, timeout=60)
        self.assertEqual(insp.returncode, 0, insp.stderr)
        info = json.loads(insp.stdout)
        counts, unread = info["counts"], len(self.recs) - info["source"]["line"]
        # The rest, to stdout again (the output destination stays the same
        # across restarts: its committed position is kept in the state).
        rest = self.path("rest.jsonl")
        with open(rest, "wb") as f:
            again = subprocess.run(self.cmd("-"), stdout=f, stderr=subprocess.PIPE, timeout=120)
        self.assertEqual(again.returncode, 0, again.stderr)
        outs = read_jsonl(rest)
        # Inputs in flight, outputs committed but not written, inputs not read.
        self.assertEqual(len(outs), counts["pending"] + counts["outbox"] + unread)
        self.assertEqual(len({o["seq"] for o in outs}), len(outs))
        # Whatever was delivered before plus the rest is every input, once.
        delivered = [r for r in self.recs if r["seq"] not in {o["seq"] for o in outs}]
        self.assertEqual(len(delivered) + len(outs), len(self.recs))
        for o in outs:
            key_recs = [r for r in self.recs if r["key"] == o["key"] and r["seq"] <= o["seq"]]
            self.assertEqual((o["count"], o["sum"]),
                             (len(key_recs), sum(r["v"] for r in key_recs)))


class SlowStop:
    """A stop waits for the actions running and the calls in flight: when it
    has waited a second, a note says so and that a second signal ends eddy
    now; the second says what it did. A subclass sets AGENT, whose action
    does not return while the test holds it (a record with "stuck": true for
    the Python agent, with the op "stuck" for the C one)."""

    AGENT = None
    NOTE = (b"eddy: note: SIGTERM: the stop has waited 1 s for the actions running and the "
            b"calls in flight to finish (an action that never returns holds it for good); a "
            b"second SIGINT or SIGTERM ends eddy now\n")

    def start(self, state):
        self.inp, self.out = self.path("in.jsonl"), self.path("out.jsonl")
        self.started, self.release = self.path("started"), self.path("release")
        for f in (self.started, self.release):
            if os.path.exists(f):
                os.remove(f)
        write_jsonl(self.inp, [{"key": "a", "stuck": True, "op": "stuck"}, {"key": "b"}])
        self.cmd = [EDDY, "run", self.AGENT, "--input", self.inp, "--output", self.out,
                    "--no-progress"] + (["--state", self.path("state")] if state else [])
        self.env = dict(os.environ, EDDY_TEST_STARTED=self.started,
                        EDDY_TEST_RELEASE=self.release)
        p = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=self.env)
        wait_for_file(self, p, self.started, "the action never started")
        return p

    def test_a_second_signal_ends_a_stuck_stop_and_says_so(self):
        for state, lost in ((False, b"in-memory state was lost"),
                            (True, b"the state is safe: run the same command again to resume")):
            p = self.start(state)
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.stderr.readline(), self.NOTE)
            p.send_signal(signal.SIGINT)
            _, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, -signal.SIGINT, err)
            self.assertEqual(err, b"eddy: SIGINT again: ended before the stop finished (" + lost +
                             b")\n")
            shutil.rmtree(self.path("state"), ignore_errors=True)

    def test_a_stop_that_ends_after_the_note_is_a_clean_stop(self):
        p = self.start(True)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.stderr.readline(), self.NOTE)
        open(self.release, "w").close()
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 143, err)
        self.assertTrue(err.endswith(b"eddy: interrupted; run the same command again to "
                                     b"resume\n"), err)
        again = subprocess.run(self.cmd, capture_output=True, timeout=60, env=self.env)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual(sorted(r["key"] for r in read_jsonl(self.out)), ["a", "b"])


class CSlowStop(SlowStop, EddyTest):
    AGENT = TEST_AGENT


@needs_python
class PythonSlowStop(SlowStop, EddyTest):
    AGENT = os.path.join(SOURCE, "tests", "agents", "stuck.py")


class FifoWaits(EddyTest):
    """Waits that last as long as another process chooses. Opening a FIFO
    waits for its other end before anything has run: one signal ends eddy at
    once, with a line that says what it waited for (it was ignored, and only
    a second one ended eddy). A write to an output whose reader does not read
    holds a stop: the note says so."""

    def setUp(self):
        super().setUp()
        self.inp = self.path("in.jsonl")
        write_jsonl(self.inp, [{"key": "k%d" % (i % 50), "v": i, "pad": "x" * 100}
                               for i in range(20000)])
        self.fifo = self.path("fifo")
        os.mkfifo(self.fifo)

    def popen(self, *args):
        p = subprocess.Popen([EDDY, "run", TEST_AGENT, "--no-progress"] + list(args),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(lambda: p.poll() is None and (p.kill(), p.communicate()))
        return p

    def stop_while_opening(self, p, signo):
        time.sleep(0.5)  # the handlers are in place, the open waits
        self.assertIsNone(p.poll(), p.stderr.read() if p.poll() is not None else "")
        p.send_signal(signo)
        try:
            _, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.fail("one %s did not end eddy waiting to open the FIFO" % signo.name)
        return err

    def test_sigterm_while_the_output_fifo_has_no_reader(self):
        for option in ("--output", "--dead-letter"):
            p = self.popen("--input", self.inp, option, self.fifo)
            err = self.stop_while_opening(p, signal.SIGTERM)
            self.assertEqual(p.returncode, 143, err)
            self.assertEqual(err, ("eddy: interrupted while waiting to open the FIFO %s for "
                                   "writing (no process had opened it for reading); nothing "
                                   "had run\n" % self.fifo).encode())

    def test_sigint_while_the_input_fifo_has_no_writer(self):
        state = self.path("state")
        with open(self.path("out.jsonl"), "w") as f:
            f.write("kept\n")
        p = self.popen("--input", self.fifo, "--output", self.path("out.jsonl"), "--state", state)
        err = self.stop_while_opening(p, signal.SIGINT)
        self.assertEqual(p.returncode, 130, err)
        self.assertEqual(err, ("eddy: interrupted while waiting to open the FIFO %s for reading "
                               "(no process had opened it for writing); nothing had run, the "
                               "state is safe: run the same command again to resume\n"
                               % self.fifo).encode())
        # Nothing had run: the output was cut before the wait; the input is
        # now opened before that (after the state is opened and checked).
        with open(self.path("out.jsonl")) as f:
            self.assertEqual(f.read(), "kept\n")
        # A second eddy on the state, while the first waits for its input's
        # writer (holding the state), is refused at once, not after a wait
        # of its own for a writer, whose lines it would have dropped.
        first = self.popen("--input", self.fifo, "--output", self.path("out.jsonl"), "--state",
                           state)
        time.sleep(0.5)
        second = subprocess.run([EDDY, "run", TEST_AGENT, "--no-progress", "--input", self.fifo,
                                 "--output", self.path("out2.jsonl"), "--state", state],
                                capture_output=True, timeout=30)
        self.assertEqual(second.returncode, 3, second.stderr)
        self.assertIn(b"another eddy uses state directory", second.stderr)
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=10)
        # The same command, with a writer this time, reads it all.
        p = self.popen("--input", self.fifo, "--output", self.path("out.jsonl"), "--state", state)
        with open(self.fifo, "w") as f:
            f.write('{"key": "a"}\n{"key": "b"}\n')
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, err)
        self.assertEqual(len(read_jsonl(self.path("out.jsonl"))), 2)

    def test_sighup_while_the_output_fifo_has_no_reader(self):
        p = self.popen("--input", self.inp, "--output", self.fifo)
        err = self.stop_while_opening(p, signal.SIGHUP)
        self.assertEqual(p.returncode, 129, err)

    def test_the_note_of_a_stop_held_by_an_output_nobody_reads(self):
        # A reader that opens the FIFO and never reads: the pipe fills, and
        # the write of the outputs waits, holding the stop.
        reader = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, reader)
        p = self.popen("--input", self.inp, "--output", self.fifo)
        # Until the pipe holds what it takes (a fixed pause was too short
        # under load: the stop came before the write blocked, and was clean):
        # the bytes queued in it, unchanged for 0.5 s (a full pipe holds
        # less than its size: here 44,732 of 65,536 bytes).
        deadline = time.monotonic() + 60
        queued, seen, same = array.array("i", [0]), -1, 0
        while same < 10:
            time.sleep(0.05)
            fcntl.ioctl(reader, termios.FIONREAD, queued)
            same = same + 1 if queued[0] == seen and seen > 0 else 0
            seen = queued[0]
            self.assertIsNone(p.poll(), "finished before the signal: make the output longer")
            self.assertLess(time.monotonic(), deadline, "the pipe never filled")
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.stderr.readline(), (
            "eddy: note: SIGTERM: the stop has waited 1 s for a write to the output %s, "
            "blocked: a reader that does not read (a pipe, FIFO or terminal whose reader never "
            "reads holds it for good); a second SIGINT or SIGTERM ends eddy now\n"
            % self.fifo).encode())
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, -signal.SIGTERM, err)
        self.assertEqual(err, b"eddy: SIGTERM again: ended before the stop finished (in-memory "
                              b"state was lost)\n")


class AgentSignals(EddyTest):
    """An agent that installs handlers of its own for the signals eddy
    handles: eddy keeps its own, with a warning, and stops cleanly."""

    PY = os.path.join(SOURCE, "tests", "agents", "own_signals.py")
    SO = os.path.join(AGENTS, "own_signals.so")

    def start(self, agent, records, preexec_fn=None):
        self.inp, self.out = self.path("in.jsonl"), self.path("out.jsonl")
        self.state, self.started = self.path("state"), self.path("started")
        write_jsonl(self.inp, records)
        self.cmd = [EDDY, "run", agent, "--input", self.inp, "--output", self.out, "--state",
                    self.state, "--no-progress"]
        env = dict(os.environ, EDDY_TEST_STARTED=self.started)
        return subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env, preexec_fn=preexec_fn)

    def wait_started(self, p):
        wait_for_file(self, p, self.started, "the action never started")

    def warning(self, agent, name, tail=b"eddy's own handles it (stops cleanly)"):
        return (b"eddy: warning: " + agent.encode() + b" installed a handler for " + name +
                b"; " + tail + b"\n")

    def stop(self, agent, signo, code, preexec_fn=None, before=()):
        # The agent's handler replaced eddy's (Python's signal.signal()
        # through sigaction(2)): SIGTERM and SIGINT went to the agent's,
        # eddy ran on to the end and exited 0, and the agent's handler ran
        # last. Now eddy keeps its own, says so, and stops as documented.
        p = self.start(agent, [{"key": "a", "op": "wait"}], preexec_fn)
        self.wait_started(p)
        for other in before:
            p.send_signal(other)
        p.send_signal(signo)
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, code, err)
        self.assertTrue(err.endswith(b"eddy: interrupted; run the same command again to "
                                     b"resume\n"), err)
        self.assertNotIn(b"agent handler", out + err)
        self.assertEqual(read_jsonl(self.out) if os.path.exists(self.out) else [], [])
        return err

    @needs_python
    def test_python_handler_for_sigterm(self):
        err = self.stop(self.PY, signal.SIGTERM, 143)
        for name in (b"SIGTERM", b"SIGHUP", b"SIGINT"):
            self.assertIn(self.warning(self.PY, name), err)
        self.assertIn(b"eddy: warning: " + self.PY.encode() + b" set SIGPIPE to its default "
                      b"action; eddy ignores it (a reader of the output that goes away is an "
                      b"I/O error)\n", err)
        self.assertEqual(err.count(b"eddy: warning:"), 4, err)

    @needs_python
    def test_python_handler_for_sigint_made_in_an_action(self):
        err = self.stop(self.PY, signal.SIGINT, 130)
        self.assertIn(self.warning(self.PY, b"SIGINT"), err)

    @needs_python
    def test_python_handler_for_sighup_under_nohup(self):
        # Started ignoring SIGHUP, eddy keeps ignoring it: the agent's
        # handler is not installed, and the hangup does nothing.
        err = self.stop(self.PY, signal.SIGTERM, 143,
                              lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
                              before=(signal.SIGHUP,))
        self.assertIn(self.warning(self.PY, b"SIGHUP", b"eddy ignores it, as it was started "
                                   b"doing (nohup)"), err)

    @needs_python
    def test_python_handlers_second_signal_ends_at_once(self):
        # The first signal asks for a stop, which waits for the call in
        # flight (30 s); the second ends eddy at once, by its default action.
        # (Both pending at once, the lower-numbered one, SIGINT, comes first.)
        p = self.start(self.PY, [{"key": "a", "op": "block"}])
        self.wait_started(p)
        p.send_signal(signal.SIGTERM)
        p.send_signal(signal.SIGINT)
        try:
            out, err = p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            self.fail("the second signal did not end eddy")
        self.assertIn(p.returncode, (-signal.SIGINT, -signal.SIGTERM), err)
        self.assertNotIn(b"agent handler", out + err)

    @needs_python
    def test_python_sig_dfl_for_sigpipe(self):
        # signal.signal(SIGPIPE, SIG_DFL) at the agent's import: a reader of
        # stdout that goes away killed eddy (141) instead of the I/O error.
        inp = self.path("in.jsonl")
        write_jsonl(inp, [{"key": "k%d" % i, "op": "echo"} for i in range(5000)])
        cmd = " ".join("'%s'" % a for a in (EDDY, "run", self.PY, "--input", inp, "--output",
                                            "-", "--no-progress"))
        p = subprocess.run(["bash", "-c", cmd + " | head -1; exit ${PIPESTATUS[0]}"],
                           capture_output=True, timeout=120)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(b"eddy: cannot write to standard output: Broken pipe\n", p.stderr)

    SAME = os.path.join(SOURCE, "tests", "agents", "same_signals.py")

    @needs_python
    def test_python_asks_for_what_eddy_does(self):
        # signal.signal(SIGPIPE, SIG_IGN) (and SIGHUP's under nohup) is what
        # eddy does already: no word about it. SIG_DFL for SIGINT is said as
        # such, not as a handler installed.
        for nohup in (False, True):
            p = self.start(self.SAME, [{"key": "a"}],
                           (lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if nohup
                           else None)
            _, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 0, err)
            warnings = [w for w in err.splitlines() if w.startswith(b"eddy: warning:")]
            expect = [b"eddy: warning: " + self.SAME.encode() + b" set SIGINT to its default "
                      b"action; eddy's own handles it (stops cleanly)"]
            if not nohup:
                expect.insert(0, b"eddy: warning: " + self.SAME.encode() + b" set SIGHUP to be "
                              b"ignored; eddy's own handles it (stops cleanly)")
            self.assertEqual(warnings, expect, err)

    @needs_python
    def test_handler_found_after_a_failed_load(self):
        # The agent set SIGTERM to be ignored, then failed to load: found as
        # Python ended, the run never came ("while it ran" was said).
        inp = self.path("in.jsonl")
        write_jsonl(inp, [{"key": "a"}])
        p = subprocess.run([EDDY, "run", self.SAME, "--input", inp, "--output",
                            self.path("out.jsonl"), "--no-progress"], capture_output=True,
                           timeout=60, env=dict(os.environ, EDDY_TEST_FAIL_LOAD="1"))
        self.assertNotEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"failing as asked", p.stderr)
        self.assertNotIn(b"while it ran", p.stderr)
        self.assertIn(b"eddy: warning: " + self.SAME.encode() + b" set SIGTERM to be ignored, "
                      b"in place of eddy's; eddy's own handles it again (stops cleanly)\n",
                      p.stderr)

    @needs_python
    def test_python_blocks_sigterm(self):
        # signal.pthread_sigmask(SIG_BLOCK, {SIGTERM}) at the agent's import:
        # the threads of the run inherited the mask, and a SIGTERM stayed
        # pending for ever. eddy unblocks it, says so, and stops.
        p = subprocess.Popen(
            [EDDY, "run", self.SAME, "--input", self.write_in([{"key": "a", "wait": 1}]),
             "--output", self.path("out.jsonl"), "--no-progress"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(os.environ, EDDY_TEST_BLOCK="1", EDDY_TEST_STARTED=self.path("started")))
        self.started = self.path("started")
        self.wait_started(p)
        p.send_signal(signal.SIGTERM)
        try:
            _, err = p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            self.fail("SIGTERM did not stop eddy")
        self.assertEqual(p.returncode, 143, err)
        self.assertIn(b"eddy: warning: " + self.SAME.encode() + b" blocked SIGTERM; eddy "
                      b"unblocks it (a stop must reach eddy)\n", err)

    def test_signals_blocked_before_eddy_are_not_the_agents(self):
        # A SIGTERM blocked by the program that started eddy (an inherited
        # mask) was blamed on the agent ("testagent.so blocked SIGTERM")
        # and unblocked. The mask is eddy's to keep: no warning, and the
        # run goes on with it.
        agent = os.path.join(AGENTS, "testagent.so")
        p = subprocess.run(
            [EDDY, "run", agent, "--input", self.write_in([{"key": "a", "op": "echo"}]),
             "--output", self.path("out.jsonl"), "--no-progress"],
            capture_output=True, timeout=60,
            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn(b"blocked SIGTERM", p.stderr)

    def write_in(self, records):
        inp = self.path("in.jsonl")
        write_jsonl(inp, records)
        return inp

    def test_c_handler_installed_by_init(self):
        # eddy_agent_init() calling sigaction(2): found once the agent has
        # loaded, and eddy's own put back.
        err = self.stop(self.SO, signal.SIGTERM, 143)
        self.assertIn(self.warning(self.SO, b"SIGTERM"), err)

    def test_c_handler_installed_by_an_action(self):
        # sigaction(2) in an action is found when the run ends (nothing
        # polls for it), and said.
        p = self.start(self.SO, [{"key": "a", "op": "install"}])
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, err)
        self.assertIn(b"eddy: warning: " + self.SO.encode() + b" installed a handler for "
                      b"SIGINT while it ran, in place of eddy's (until now a SIGINT went to the "
                      b"agent's); eddy's own handles it again (stops cleanly)\n", err)
        self.assertEqual(read_jsonl(self.out), [{"key": "a", "op": "install"}])


SLOW_EXIT = (b"eddy: note: Python has not finished the agent's exit after 1 s (its atexit "
             b"handlers, the child processes it waits for); SIGINT or SIGTERM ends eddy now\n")


def ended_by(name):
    return (b"eddy: note: " + name + b" ended eddy before Python finished the agent's exit "
            b"(what had not run of it is lost; the exit code is the run's)\n")


@needs_python
class AgentThreads(EddyTest):
    """A Python agent that leaves threads that are not daemon threads (or
    child processes, or a slow atexit handler): eddy waits for them as
    Python does at exit, says so when it takes more than a second, and a
    signal then ends eddy at once with the run's exit code. Before, eddy
    hung after the summary without a word, and the first SIGTERM did
    nothing."""

    AGENT = os.path.join(SOURCE, "tests", "agents", "threads_left.py")

    def start(self, records, env=None, leaves_thread=False):
        self.inp, self.out = self.path("in.jsonl"), self.path("out.jsonl")
        self.state = self.path("state")
        self.release, self.done = self.path("release"), self.path("done")
        self.started = self.path("started")
        write_jsonl(self.inp, records)
        self.cmd = [EDDY, "run", self.AGENT, "--input", self.inp, "--output", self.out,
                    "--state", self.state, "--no-progress"]
        self.env = dict(os.environ, EDDY_TEST_RELEASE=self.release, EDDY_TEST_DONE=self.done,
                        EDDY_TEST_STARTED=self.started, **(env or {}))
        if leaves_thread:
            # The thread runs on past Python's end (its join skipped): what it
            # holds is never freed, as for any thread left so, which a leak
            # checker at exit (the ASan build) would report.
            self.env["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
        return subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=self.env)

    def done_threads(self):
        if not os.path.exists(self.done):
            return []
        with open(self.done) as f:
            return sorted(f.read().split())

    def test_waits_for_the_threads_and_says_so(self):
        p = self.start([{"key": "nd", "op": "thread", "n": 2}])
        summary = p.stderr.readline()
        self.assertTrue(summary.startswith(b"eddy: 1 input, 1 output"), summary)
        note = p.stderr.readline()  # the threads wait for the release: eddy, for them
        self.assertEqual(note, b"eddy: note: Python has not finished the agent's exit after 1 s: "
                         b"it waits for 2 threads the agent started (uploader-0, uploader-1) to "
                         b"end; SIGINT or SIGTERM ends eddy now\n")
        open(self.release, "w").close()
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, err)
        self.assertEqual(err, b"")
        self.assertEqual(self.done_threads(), ["uploader-0", "uploader-1"])

    def test_the_note_counts_every_thread(self):
        # It named at most 8 (those it keeps the names of) and said "8
        # threads" for 10: the count is every thread the exit waits for.
        p = self.start([{"key": "nd", "op": "thread", "n": 10}])
        summary = p.stderr.readline()
        self.assertTrue(summary.startswith(b"eddy: 1 input, 1 output"), summary)
        note = p.stderr.readline()
        self.assertEqual(note, b"eddy: note: Python has not finished the agent's exit after 1 s: "
                         b"it waits for 10 threads the agent started (uploader-0, uploader-1, "
                         b"uploader-2, ...) to end; SIGINT or SIGTERM ends eddy now\n")
        open(self.release, "w").close()
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, err)
        self.assertEqual(len(self.done_threads()), 10)

    def test_a_short_wait_goes_unsaid(self):
        # The idle workers of an executor left running end as Python's exit
        # asks them to: no note for them on every run. A loaded machine (or a
        # sanitizer build) may take more than the second for the exit, and
        # says so truthfully then: a note on three runs in a row is no chance.
        errs = []
        for _ in range(3):
            shutil.rmtree(self.path("state"), ignore_errors=True)
            p = self.start([{"key": "p", "op": "pool"}])
            _, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 0, err)
            self.assertTrue(err.startswith(b"eddy: 1 input, 1 output"), err)
            if err.count(b"\n") == 1:
                return
            errs.append(err)
        self.fail(errs)

    def test_a_signal_ends_the_wait_with_the_runs_exit_code(self):
        for signo, name in ((signal.SIGTERM, b"SIGTERM"), (signal.SIGINT, b"SIGINT")):
            for f in (self.path("out.jsonl"), self.path("done")):
                if os.path.exists(f):
                    os.remove(f)
            shutil.rmtree(self.path("state"), ignore_errors=True)
            p = self.start([{"key": "nd", "op": "thread"}])
            summary = p.stderr.readline()
            self.assertTrue(summary.startswith(b"eddy: 1 input, 1 output"), summary)
            note = p.stderr.readline()
            self.assertEqual(note, b"eddy: note: Python has not finished the agent's exit after "
                             b"1 s: it waits for 1 thread the agent started (uploader) to end; "
                             b"SIGINT or SIGTERM ends eddy now\n")
            p.send_signal(signo)
            _, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 0, err)  # the run completed
            self.assertEqual(err, ended_by(name))
            self.assertEqual(self.done_threads(), [])
            self.assertEqual(read_jsonl(self.out), [{"key": "nd", "op": "thread"}])
            # The state was closed: the same command has nothing left to do.
            again = subprocess.run(self.cmd, capture_output=True, timeout=60, env=self.env)
            self.assertEqual(again.returncode, 0, again.stderr)
            self.assertTrue(again.stderr.startswith(b"eddy: 0 inputs, 0 outputs"), again.stderr)

    def test_no_wait_after_an_interrupted_run(self):
        # SIGTERM stopped the run: eddy does not then wait for the threads,
        # but Python's exit still runs (its atexit handlers): it was skipped
        # with the wait. (The join is skipped through a
        # private part of Python 3.11's threading: a Python whose threading
        # changed fails here, by a wait or by the atexit handler not run.)
        # What the agent wrote to a file it never flushed is written: the
        # thread left holds its module's globals, which Python's exit then
        # clears all the same.
        exit_file, log = self.path("exit"), self.path("log")
        open(exit_file, "w").close()  # the atexit handler need not wait
        p = self.start([{"key": "nd", "op": "thread"}, {"key": "w", "op": "wait"}],
                       {"EDDY_TEST_EXIT": exit_file, "EDDY_TEST_LOG": log}, leaves_thread=True)
        wait_for_file(self, p, self.started, "the action never started")
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 143, err)
        self.assertTrue(err.endswith(b"eddy: interrupted; run the same command again to resume\n"
                                     b"eddy: note: not waiting for 1 thread the agent started "
                                     b"(uploader) to end: SIGTERM came\n"), err)
        self.assertEqual(self.done_threads(), [])
        self.assertTrue(os.path.exists(exit_file + ".ran"), "the atexit handler did not run")
        with open(log) as f:
            self.assertEqual(f.read(), "thread\nwait\n")

    def read_until_note(self, p):
        summary = p.stderr.readline()
        self.assertTrue(summary.startswith(b"eddy: 1 input, 1 output"), summary)
        return p.stderr.readline()

    def test_a_slow_atexit_handler_is_said_not_a_thread_ended(self):
        # The thread ends at once (released after the summary); then the
        # agent's atexit handler waits. The note says that Python has not
        # finished, naming no thread (it named the thread, ended long ago),
        # and a SIGTERM then ends eddy (the handler's end is lost).
        exit_file = self.path("exit")
        p = self.start([{"key": "nd", "op": "thread"}], {"EDDY_TEST_EXIT": exit_file})
        summary = p.stderr.readline()
        self.assertTrue(summary.startswith(b"eddy: 1 input, 1 output"), summary)
        open(self.release, "w").close()
        self.assertEqual(p.stderr.readline(), SLOW_EXIT)
        self.assertTrue(os.path.exists(exit_file + ".started"))
        self.assertEqual(self.done_threads(), ["uploader"])
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, err)
        self.assertEqual(err, ended_by(b"SIGTERM"))
        self.assertFalse(os.path.exists(exit_file + ".ran"))

    def test_a_signal_in_the_first_second_lets_a_short_exit_end(self):
        # A SIGTERM as Python's exit begins (the atexit handler has started)
        # stops nothing: the exit goes on and eddy ends normally when it ends
        # within the second.
        exit_file = self.path("exit")
        p = self.start([{"key": "nd", "op": "echo"}], {"EDDY_TEST_EXIT": exit_file})
        wait_for_file(self, p, exit_file + ".started", "the atexit handler never started")
        p.send_signal(signal.SIGTERM)
        open(exit_file, "w").close()
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, err)
        self.assertTrue(os.path.exists(exit_file + ".ran"))
        self.assertTrue(err.endswith(b"eddy: note: SIGTERM came after the run had ended; it "
                                     b"interrupted nothing, and the exit code is the run's\n")
                        or err.endswith(ended_by(b"SIGTERM")), err)  # a slow machine

    def test_a_child_process_joined_at_exit_is_said(self):
        # multiprocessing's atexit handler joins a non-daemon child: eddy hung
        # silently after the summary and the first SIGTERM did nothing.
        p = self.start([{"key": "c", "op": "child"}])
        try:
            self.assertEqual(self.read_until_note(p), SLOW_EXIT)
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)
            open(self.release, "w").close()  # the child, which holds the pipes, ends
            _, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 0, err)
            self.assertEqual(err, ended_by(b"SIGTERM"))
        finally:
            open(self.release, "w").close()  # the child ends
            if p.poll() is None:
                p.kill()
                p.communicate()

    def test_a_child_process_is_terminated_by_its_first_sigterm(self):
        # A forked child had eddy's handler for SIGTERM: Process.terminate()
        # only set a flag in it, and the child ran on.
        p = self.start([{"key": "t", "op": "terminate"}])
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, err)
        self.assertEqual(read_jsonl(self.out),
                         [{"key": "t", "op": "terminate", "exitcode": -signal.SIGTERM}])

    @unittest.skipUnless(HOOKS, "built without EDDY_TEST_HOOKS")
    def test_no_wait_after_a_signal_while_the_state_closes(self):
        go = self.path("go")
        p = self.start([{"key": "nd", "op": "thread"}], {"EDDY_TEST_CLOSE_WAIT_FOR": go},
                       leaves_thread=True)
        summary = p.stderr.readline()  # printed once the run has ended
        self.assertTrue(summary.startswith(b"eddy: 1 input, 1 output"), summary)
        p.send_signal(signal.SIGTERM)
        open(go, "w").close()
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, err)
        self.assertEqual(err, b"eddy: note: not waiting for 1 thread the agent started "
                         b"(uploader) to end: SIGTERM came\n"
                         b"eddy: note: SIGTERM came after the run had ended; it interrupted "
                         b"nothing, and the exit code is the run's\n")
        self.assertEqual(self.done_threads(), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
