"""End-to-end tests of durable execution and crash recovery with --state."""
import collections
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from eddytest import (AGENTS, EDDY, SANITIZED, SOURCE, TEST_AGENT, EddyTest, lines_written,  # noqa: E402
                      needs_python, read_jsonl, write_jsonl)

DURABLE = os.path.join(AGENTS, "durable_agent.so")


class DurableTest(EddyTest):
    def setUp(self):
        super().setUp()
        self.effects = self.path("effects.txt")
        self.state = self.path("state")
        self.inp = self.path("in.jsonl")
        self.out = self.path("out.jsonl")

    def cmd(self, *extra, agent=DURABLE, state=None):
        return [EDDY, "run", agent, "--input", self.inp, "--output", self.out, "--state",
                state or self.state, "--no-progress"] + list(extra)

    def run_cmd(self, *extra, env=None, **kw):
        e = dict(os.environ, EDDY_TEST_EFFECTS=self.effects)
        if env:
            e.update(env)
        return subprocess.run(self.cmd(*extra, **kw), capture_output=True, timeout=300, env=e)

    def effect_lines(self):
        if not os.path.exists(self.effects):
            return []
        with open(self.effects) as f:
            return [line.rstrip("\n") for line in f]

    def count_effects(self, what, **match):
        n = 0
        for line in self.effect_lines():
            kind, _, args = line.partition(" ")
            if kind != what:
                continue
            a = json.loads(args)
            if all(a.get(k) == v for k, v in match.items()):
                n += 1
        return n

    def flag(self, name):
        p = self.path(name)
        open(p, "w").close()
        return p

    # ------------------------------------------------------------ deep values

    @staticmethod
    def deep_line(d, **fields):
        """An input record nested d levels deep (the record is 1), as JSON text."""
        head = json.dumps(fields)[:-1] + ', "deep": '
        return head + '{"a": ' * (d - 1) + "1" + "}" * (d - 1) + "}"

    def test_readme_agent_on_deep_input(self):
        # The README's agent passes its input record to a durable call: the
        # digest of a record nested ~554 levels deep overflowed the action's
        # 256 KiB stack (SIGSEGV, on every rerun).
        with open(os.path.join(SOURCE, "README.md")) as f:
            code = re.findall(r"```c\n(.*?)```", f.read(), re.S)[0]
        src, so = self.path("greet.c"), self.path("greet.so")
        with open(src, "w") as f:
            f.write(code)
        cflags = subprocess.run(["pkg-config", "--cflags", "jansson"], capture_output=True,
                                text=True, timeout=30).stdout.split()
        cc = subprocess.run(["cc", "-shared", "-fPIC", "-fstack-clash-protection", src, "-o", so,
                             "-I" + os.path.join(SOURCE, "include"),
                             "-I" + os.path.join(os.path.dirname(EDDY), "include")] + cflags,
                            capture_output=True, timeout=120)
        self.assertEqual(cc.returncode, 0, cc.stderr)
        with open(self.inp, "w") as f:
            f.write(self.deep_line(600, key="u1", name="ada") + "\n")
            f.write(self.deep_line(2047, key="u1", name="grace") + "\n")
        res = self.run_cmd("--max-depth", "2047", agent=so)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(read_jsonl(self.out), [{"name": "ada", "length": 3, "visits": 1},
                                                {"name": "grace", "length": 5, "visits": 2}])

    def test_deep_arguments_and_results_on_the_action_stack(self):
        # On the default stack: arguments 2047 levels deep digested, a
        # result 1000 deep journaled, replayed after a crash (same digest,
        # so not run again) and copied through memory; a result far deeper
        # than the limit is the call's failure, and is freed there, as are
        # an output and a memory value that eddy refuses for their depth.
        flag = self.flag("crash")
        with open(self.inp, "w") as f:
            f.write(self.deep_line(2047, key="a", op="deep", seq=1, result_depth=1000,
                                   crash_flag=flag) + "\n")
            f.write(self.deep_line(3, key="b", op="deep", seq=2, result_depth=50000,
                                   refuse_depth=50000) + "\n")
        first = self.run_cmd("--max-depth", "2047")
        self.assertEqual(first.returncode, 137, first.stderr)
        second = self.run_cmd("--max-depth", "2047")
        self.assertEqual(second.returncode, 0, second.stderr)
        self.assertNotIn(b"non-deterministic", second.stderr)
        self.assertRegex(second.stderr, rb"[1-9][0-9]* durable calls? replayed")
        outs = {o.pop("seq"): o for o in read_jsonl(self.out)}
        self.assertEqual(outs[1], {"key": "a", "rc": 0, "depth": 1000, "memory_set": 0,
                                   "memory_depth": 999})
        self.assertEqual(outs[2], {"key": "b", "rc": -6, "error": "limit",
                                   "refused_output": -18, "refused_memory": -18})
        self.assertEqual(self.count_effects("nest", seq=1), 1)

    # ------------------------------------------------------------ several durable calls at once

    def batch_calls(self, **match):
        return self.count_effects("batch", op="batch", **match)

    def test_durable_batch_runs_its_calls_at_once(self):
        # eddy_ctx_durable_execute_async_all: four calls of 400 ms on four
        # workers take about one of them, and each result is in its place.
        write_jsonl(self.inp, [{"key": "k", "op": "batch", "seq": 1,
                                "calls": [{"ms": 400}] * 4}])
        res = self.run_cmd("--async-threads", "4")
        self.assertEqual(res.returncode, 0, res.stderr)
        (out,) = read_jsonl(self.out)
        self.assertEqual(out["rc"], 0)
        self.assertEqual(out["calls"], [{"rc": 0, "result": {"i": i, "sq": i * i}, "error": None}
                                        for i in range(4)])
        self.assertGreaterEqual(out["ms"], 400)
        self.assertLess(out["ms"], 1200, "the calls ran one after another")
        self.assertIn(b" 4 async calls", res.stderr)
        self.assertEqual(self.batch_calls(), 4)

    def test_durable_batch_resumes_after_a_kill(self):
        # Killed while two calls of four are journaled and two still run:
        # the rerun answers the first two from the journal and runs the
        # other two again.
        write_jsonl(self.inp, [{"key": "k", "op": "batch", "seq": 1,
                                "calls": [{"ms": 0}, {"ms": 0}, {"ms": 2000}, {"ms": 2000}]}])
        env = dict(os.environ, EDDY_TEST_EFFECTS=self.effects)
        p = subprocess.Popen(self.cmd("--async-threads", "4"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env)
        ok = []
        for _ in range(500):
            insp = subprocess.run([EDDY, "inspect", "--state", self.state, "--json"],
                                  capture_output=True, timeout=30)
            if insp.returncode == 0:
                ok = sorted(e["idx"] for e in json.loads(insp.stdout)["journal"]
                            if e["status"] == "ok")
                if len(ok) >= 2:
                    break
            time.sleep(0.01)
        p.kill()
        p.wait()
        self.assertEqual(ok, [0, 1], "the two quick calls were not journaled before the kill")
        self.assertEqual(self.batch_calls(), 4)  # all four had started
        res = self.run_cmd("--async-threads", "4")
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn(b"2 durable calls replayed", res.stderr)
        self.assertNotIn(b"non-deterministic", res.stderr)
        self.assertEqual([self.batch_calls(i=i) for i in range(4)], [1, 1, 2, 2])
        (out,) = read_jsonl(self.out)
        self.assertEqual([c["result"]["sq"] for c in out["calls"]], [0, 1, 4, 9])

    def batch_then_variant(self, *extra):
        # A batch of three journaled whole (the action dies after it), then
        # rerun with the arguments of call 1 changed.
        flag = self.flag("crash")
        write_jsonl(self.inp, [{"key": "k", "op": "batch", "seq": 1, "crash_flag": flag,
                                "calls": [{"ms": 0}] * 3}])
        first = self.run_cmd(env={"EDDY_TEST_VARIANT": "a"})
        self.assertEqual(first.returncode, 137, first.stderr)
        self.assertEqual(self.batch_calls(), 3)
        return self.run_cmd(*extra, env={"EDDY_TEST_VARIANT": "b"})

    def test_durable_batch_nondeterminism_of_one_position(self):
        # By default the journal is cut at the position that differs: the
        # call before it is replayed, it and the one after run.
        second = self.batch_then_variant()
        self.assertEqual(second.returncode, 0, second.stderr)
        self.assertIn(b"non-deterministic durable call 1 of action 'probe'", second.stderr)
        self.assertEqual([self.batch_calls(i=i) for i in range(3)], [1, 2, 2])
        self.assertEqual(self.batch_calls(i=1, variant="b"), 1)
        (out,) = read_jsonl(self.out)
        self.assertEqual([c["rc"] for c in out["calls"]], [0, 0, 0])

    def test_durable_batch_nondeterminism_strict(self):
        second = self.batch_then_variant("--strict-determinism")
        self.assertEqual(second.returncode, 1, second.stderr)
        err = second.stderr.decode()
        self.assertIn("NonDeterminism", err)
        self.assertIn("durable call 1 of action 'probe'", err)
        self.assertIn("batch(args", err)
        self.assertEqual(self.batch_calls(), 3, "a call of the batch ran")

    def test_durable_batch_error_keeps_its_type(self):
        # One call of three fails: the batch says so, the others succeed,
        # and a replay gives the same error type and message.
        flag = self.flag("crash")
        write_jsonl(self.inp, [{"key": "k", "op": "batch", "seq": 1, "crash_flag": flag,
                                "calls": [{"ms": 0}, {"fail": True}, {"ms": 0}]}])
        first = self.run_cmd()
        self.assertEqual(first.returncode, 137, first.stderr)
        second = self.run_cmd()
        self.assertEqual(second.returncode, 0, second.stderr)
        self.assertIn(b"3 durable calls replayed", second.stderr)
        (out,) = read_jsonl(self.out)
        self.assertEqual(out["rc"], -6)  # EDDY_ECALL
        self.assertEqual(out["calls"], [
            {"rc": 0, "result": {"i": 0, "sq": 0}, "error": None},
            {"rc": -6, "result": None, "error": "QuotaExceeded"},
            {"rc": 0, "result": {"i": 2, "sq": 4}, "error": None}])
        self.assertEqual(self.batch_calls(), 3)
        insp = json.loads(subprocess.run([EDDY, "inspect", "--state", self.state, "--json"],
                                         capture_output=True, timeout=30).stdout)
        self.assertEqual(insp["journal"], [])  # pruned with its run

    # ------------------------------------------------------------ recovery

    def test_finished_action_is_replayed_not_rerun(self):
        flag = self.flag("crash")
        write_jsonl(self.inp, [{"key": "k", "op": "finished_then_crash", "seq": 1,
                                "crash_flag": flag}])
        first = self.run_cmd()
        self.assertEqual(first.returncode, 137, first.stderr)
        second = self.run_cmd()
        self.assertEqual(second.returncode, 0, second.stderr)
        (out,) = read_jsonl(self.out)
        # The finished action ran once; its memory write (a new object) came
        # back as an object, so a child can be set below it.
        self.assertEqual(self.count_effects("effect", op="finished_then_crash"), 1)
        self.assertTrue(out["obj_is_object"])
        self.assertEqual(out["set_child"], 0)
        self.assertRegex(second.stderr, rb"[1-9][0-9]* actions? replayed")
        # The unfinished one re-ran, replaying its journaled call.
        self.assertEqual(self.count_effects("effect", op="later"), 1)

    def test_summary_names_the_runs_resumed_from_the_state(self):
        # A resume with nothing new to read said "0 inputs, 1 outputs, ...,
        # 0 inputs/s": the output came from a run the state held.
        for more in (False, True):
            state = self.path("state-%d" % more)
            flag = self.flag("crash")
            write_jsonl(self.inp, [{"key": "k", "op": "finished_then_crash", "seq": 1,
                                    "crash_flag": flag}])
            first = self.run_cmd(state=state)
            self.assertEqual(first.returncode, 137, first.stderr)
            if more:
                with open(self.inp, "a") as f:
                    f.write(json.dumps({"key": "j", "op": "chain", "seq": 2}) + "\n")
            second = self.run_cmd(state=state)
            self.assertEqual(second.returncode, 0, second.stderr)
            summary = second.stderr.splitlines()[-1]
            if more:  # what it read, with its rate, and what it took up
                self.assertTrue(summary.startswith(
                    b"eddy: 1 input, 1 run resumed, 1 pending input taken up from the state, "
                    b"2 outputs, 0 dead-lettered, "),
                    summary)
                self.assertIn(b" inputs/s, ", summary)
            else:
                self.assertTrue(summary.startswith(
                    b"eddy: 0 inputs, 1 run resumed, 1 pending input taken up from the state, "
                    b"1 output, 0 dead-lettered, "),
                    summary)
                self.assertNotIn(b"inputs/s", summary)
        # Nothing to do: no rate either.
        third = self.run_cmd(state=state)
        self.assertEqual(third.returncode, 0, third.stderr)
        self.assertTrue(third.stderr.startswith(b"eddy: 0 inputs, 0 outputs, 0 dead-lettered, "),
                        third.stderr)
        self.assertNotIn(b"inputs/s", third.stderr)

    @unittest.skipUnless(os.environ.get("EDDY_HOOKS", "ON").upper() in ("ON", "1", "TRUE", "YES"),
                         "built without EDDY_TEST_HOOKS")
    def test_no_summary_when_the_run_does_not_start(self):
        # A rerun that cannot write out the lines the state holds (the
        # output's disk still full) stops as the state opens, before the run
        # starts: no summary, although the README said the reason comes
        # after it. The README now says when there is none; this is one.
        write_jsonl(self.inp, [{"key": "k%d" % (i % 3), "seq": i, "v": i} for i in range(30)])
        full = {"EDDY_FAULT": "sink_write.write:1:ENOSPC"}
        reason = b"eddy: cannot write to %s: No space left on device\n" % self.out.encode()
        first = self.run_cmd(env=full)  # the run started: summary, then the reason
        self.assertEqual(first.returncode, 1, first.stderr)
        self.assertTrue(first.stderr.startswith(b"eddy: 30 inputs, "), first.stderr)
        self.assertTrue(first.stderr.endswith(reason), first.stderr)
        effects = len(self.effect_lines())
        second = self.run_cmd(env=full)
        self.assertEqual(second.returncode, 1, second.stderr)
        self.assertEqual(second.stderr, reason)  # the reason alone
        self.assertEqual(len(self.effect_lines()), effects)  # nothing ran
        third = self.run_cmd()
        self.assertEqual(third.returncode, 0, third.stderr)
        self.assertIn(b" written from the state)", third.stderr)
        self.assertEqual(sorted(o["seq"] for o in read_jsonl(self.out)), list(range(30)))
        with open(os.path.join(SOURCE, "README.md")) as f:
            readme = " ".join(f.read().split())
        for said in ("When eddy stops before the run starts there is no summary, and the "
                     "reason is all it prints",
                     "on a rerun with `--state`, lines the previous run left in the state that "
                     "cannot be written out as the state opens"):
            self.assertTrue(said in readme, "the README no longer says: " + said)

    def test_summary_counts_what_it_took_up_as_inspect_does(self):
        # "N runs resumed from the state" counted every pending input taken
        # up, where eddy inspect shows the runs in flight and the pending
        # inputs apart: 5 runs in flight with 181 inputs behind them read
        # "186 runs resumed". The summary now uses inspect's two counts.
        write_jsonl(self.inp, [{"key": "k%d" % (i % 3), "seq": i, "v": i, "ms": 100}
                               for i in range(30)])
        p = subprocess.Popen(self.cmd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=dict(os.environ, EDDY_TEST_EFFECTS=self.effects))
        time.sleep(0.5)
        self.assertIsNone(p.poll(), "finished before the signal: make the run longer")
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 143, err)
        insp = subprocess.run([EDDY, "inspect", "--state", self.state, "--json"],
                              capture_output=True, timeout=60)
        report = json.loads(insp.stdout)
        runs, pending = len(report["in_flight"]), report["counts"]["pending"]
        self.assertEqual(runs, 3)
        self.assertGreater(pending, runs)
        again = self.run_cmd()
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertIn(b", %d runs resumed, %d pending inputs taken up from the state, "
                      % (runs, pending), again.stderr)
        self.assertEqual(sorted(o["seq"] for o in read_jsonl(self.out)), list(range(30)))

    @unittest.skipUnless(os.environ.get("EDDY_HOOKS", "ON").upper() in ("ON", "1", "TRUE", "YES"),
                         "built without EDDY_TEST_HOOKS")
    def test_runs_resumed_counted_when_they_run(self):
        # A stop while the state opened (its runs loaded, none started)
        # said "1 runs resumed from the state": they are counted as they run.
        state = self.path("state")
        flag = self.flag("crash")
        write_jsonl(self.inp, [{"key": "k", "op": "finished_then_crash", "seq": 1,
                                "crash_flag": flag}])
        first = self.run_cmd(state=state)
        self.assertEqual(first.returncode, 137, first.stderr)
        e = dict(os.environ, EDDY_TEST_EFFECTS=self.effects, EDDY_TEST_OPEN_PAUSE_MS="1500")
        p = subprocess.Popen(self.cmd(state=state), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=e)
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 143, err)
        self.assertIn(b"eddy: 0 inputs, 0 outputs", err)
        self.assertNotIn(b"resumed", err)
        again = self.run_cmd(state=state)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertIn(b"1 run resumed, 1 pending input taken up from the state", again.stderr)

    def test_long_chain_resumes_from_its_finished_actions(self):
        # One run of 200,000 Pings dies at Ping 150,000: the resumed run finds
        # each of the 100,000 and more finished action executions in its
        # journal. Found by a scan (quadratic) this took over a minute; with
        # the journal's index about a second, so the resume's timeout is a
        # complexity check with a wide margin (sanitizer builds, several
        # times slower, check a shorter chain).
        n, die_at = (200000, 150000) if not SANITIZED else (8000, 6000)
        flag = self.flag("crash")
        write_jsonl(self.inp, [{"key": "a", "op": "bounce", "n": n, "die_at": die_at,
                                "crash_flag": flag, "seq": 1}])
        first = self.run_cmd("--max-run-actions", "0", agent=TEST_AGENT)
        self.assertEqual(first.returncode, 137, first.stderr)
        second = subprocess.run(self.cmd("--max-run-actions", "0", agent=TEST_AGENT),
                                capture_output=True, timeout=30 if not SANITIZED else 300)
        self.assertEqual(second.returncode, 0, second.stderr)
        self.assertEqual(read_jsonl(self.out), [{"seq": 1, "pings": n, "key": "a"}])
        # Ping k + 1 is sent by Ping k: the finished ones form a prefix of
        # the chain (those of the transaction the crash cut are not in it).
        replayed = int(re.search(rb", (\d+) actions? replayed", second.stderr).group(1))
        self.assertGreater(replayed, die_at * 2 // 3)
        self.assertLessEqual(replayed, die_at + 1)
        self.assertIn(b" %d actions, " % (n + 2 - replayed), second.stderr)

    def test_wal_left_by_a_crash_is_synced_before_resuming(self):
        # The killed process's last commits may not have reached the disk;
        # the restart syncs the WAL before runs resume from them (a failed
        # sync there is an error, and nothing resumes).
        flag = self.flag("crash")
        write_jsonl(self.inp, [{"key": "k", "op": "finished_then_crash", "seq": 1,
                                "crash_flag": flag}])
        self.assertEqual(self.run_cmd().returncode, 137)
        before = self.effect_lines()
        failed = self.run_cmd(env={"EDDY_FAULT": "wal_open_sync:1"})
        self.assertEqual(failed.returncode, 3, failed.stderr)
        self.assertIn(b"eddy.db-wal to disk when opening the state: Input/output error",
                      failed.stderr)
        self.assertEqual(self.effect_lines(), before)  # nothing ran
        again = self.run_cmd()
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual(len(read_jsonl(self.out)), 1)
        self.assertEqual(self.count_effects("effect", op="finished_then_crash"), 1)

    def test_durable_error_replayed_with_its_type(self):
        flag = self.flag("crash")
        write_jsonl(self.inp, [{"key": "k", "op": "durable_error", "seq": 1, "crash_flag": flag}])
        first = self.run_cmd()
        self.assertEqual(first.returncode, 137, first.stderr)
        second = self.run_cmd()
        self.assertEqual(second.returncode, 0, second.stderr)
        (out,) = read_jsonl(self.out)
        self.assertEqual(out["rc"], -6)  # EDDY_ECALL
        self.assertEqual(out["type"], "QuotaExceeded")
        self.assertIn("quota", out["message"])
        self.assertEqual(self.count_effects("effect", op="durable_error"), 1)

    def test_nondeterminism_cuts_and_reexecutes_by_default(self):
        flag = self.flag("crash")
        write_jsonl(self.inp, [{"key": "k", "op": "variant", "seq": 1, "crash_flag": flag}])
        first = self.run_cmd(env={"EDDY_TEST_VARIANT": "a"})
        self.assertEqual(first.returncode, 137, first.stderr)
        second = self.run_cmd(env={"EDDY_TEST_VARIANT": "b"})
        self.assertEqual(second.returncode, 0, second.stderr)
        self.assertIn(b"non-deterministic", second.stderr)
        (out,) = read_jsonl(self.out)
        self.assertEqual(out["variant"], "b")
        self.assertEqual(self.count_effects("effect", op="variant", variant="a"), 1)
        self.assertEqual(self.count_effects("effect", op="variant", variant="b"), 1)

    def test_nondeterminism_strict_fails_naming_both_calls(self):
        flag = self.flag("crash")
        write_jsonl(self.inp, [{"key": "k", "op": "variant", "seq": 1, "crash_flag": flag}])
        first = self.run_cmd(env={"EDDY_TEST_VARIANT": "a"})
        self.assertEqual(first.returncode, 137, first.stderr)
        second = self.run_cmd("--strict-determinism", env={"EDDY_TEST_VARIANT": "b"})
        self.assertEqual(second.returncode, 1)
        err = second.stderr.decode()
        self.assertIn("NonDeterminism", err)
        self.assertIn("effect(args", err)
        self.assertEqual(self.count_effects("effect", op="variant", variant="b"), 0)

    def test_nondeterminism_strict_fails_an_action_that_goes_on(self):
        # The action ignores the EDDY_ENONDET of its first call and goes on:
        # its later calls were answered from the journal recorded after the
        # divergence, and it finished with its output (exit 0). Now they are
        # refused, and the action execution fails all the same.
        flag = self.flag("crash")
        write_jsonl(self.inp, [{"key": "k", "op": "variant_ignored", "seq": 1,
                                "crash_flag": flag}])
        first = self.run_cmd(env={"EDDY_TEST_VARIANT": "a"})
        self.assertEqual(first.returncode, 137, first.stderr)
        second = self.run_cmd("--strict-determinism", env={"EDDY_TEST_VARIANT": "b"})
        self.assertEqual(second.returncode, 1, second.stderr)
        err = second.stderr.decode()
        self.assertIn("action 'probe' failed for key \"k\"", err)
        self.assertIn("NonDeterminism: durable call 0 of action 'probe'", err)
        self.assertNotRegex(err, "durable calls? replayed")
        self.assertEqual(read_jsonl(self.out) if os.path.exists(self.out) else [], [])
        # No call ran again, nor the new first one.
        self.assertEqual(self.count_effects("effect", op="variant_ignored"), 3)
        self.assertEqual(self.count_effects("effect", variant="b"), 0)
        # --on-error skip: the run is dead-lettered with that error.
        skipped = self.run_cmd("--strict-determinism", "--on-error", "skip",
                               env={"EDDY_TEST_VARIANT": "b"})
        self.assertEqual(skipped.returncode, 0, skipped.stderr)
        self.assertEqual(read_jsonl(self.out) if os.path.exists(self.out) else [], [])
        (dead,) = read_jsonl(self.out + ".dead.jsonl")
        self.assertEqual(dead["action"], "probe")
        self.assertEqual(dead["error"]["type"], "NonDeterminism")
        self.assertIn("in the journal but is now effect(args", dead["error"]["message"])
        self.assertEqual(self.count_effects("effect", op="variant_ignored"), 3)

    def test_reconciler_on_pending(self):
        flag = self.flag("crash")
        write_jsonl(self.inp, [{"key": "k", "op": "reconciled", "seq": 1, "crash_flag": flag}])
        first = self.run_cmd()
        self.assertEqual(first.returncode, 137, first.stderr)
        self.assertEqual(self.count_effects("dying"), 1)
        second = self.run_cmd()
        self.assertEqual(second.returncode, 0, second.stderr)
        (out,) = read_jsonl(self.out)
        self.assertEqual(out["result"], "reconciled")
        self.assertEqual(self.count_effects("dying"), 1)  # not run again
        self.assertEqual(self.count_effects("reconcile"), 1)

    def test_reconciler_error_is_persisted(self):
        flag = self.flag("crash")
        flag2 = self.flag("crash2")
        write_jsonl(self.inp, [{"key": "k", "op": "reconciled", "seq": 1, "crash_flag": flag,
                                "crash_flag2": flag2, "reconcile_fails": True}])
        self.assertEqual(self.run_cmd().returncode, 137)  # dies inside the call
        second = self.run_cmd()  # reconciler fails, journaled; dies after
        self.assertEqual(second.returncode, 137, second.stderr)
        third = self.run_cmd()
        self.assertEqual(third.returncode, 0, third.stderr)
        (out,) = read_jsonl(self.out)
        self.assertEqual(out["error"], "Unknown")
        self.assertEqual(out["rc"], -6)
        self.assertEqual(self.count_effects("reconcile"), 1)
        self.assertEqual(self.count_effects("dying"), 1)

    # ------------------------------------------------------------ --on-error skip

    def test_failed_run_is_not_run_again_after_a_crash(self):
        # With --on-error skip the input of a failed run is dead-lettered when
        # its action fails, but the run ends only once its last action in
        # flight has ended. A crash in between (here: slow's call, in flight,
        # kills the process once the dead letter is in the file, so
        # committed) left the run in the state, and the rerun took it up:
        # fails ran again, failed again and dead-lettered the input a second
        # time, slow's PENDING call went to its reconciler and slow made its
        # next call, and never ran. The failure is now committed with its
        # dead letter: the rerun ends the run as it stood, running none of
        # its actions, and the key's next input goes on.
        agent = os.path.join(AGENTS, "failed_run.so")
        flag, dead = self.flag("crash"), self.out + ".dead.jsonl"
        write_jsonl(self.inp, [
            {"key": "k", "n": 1, "fail": True, "marker": self.path("m1"), "dead": dead,
             "crash_flag": flag},
            {"key": "k", "n": 2, "marker": self.path("m2")},
            {"key": "j", "n": 3, "marker": self.path("m3")}])
        first = self.run_cmd("--on-error", "skip", agent=agent)
        self.assertEqual(first.returncode, 137, first.stderr)
        (letter,) = read_jsonl(dead)
        self.assertEqual((letter["key"], letter["action"], letter["event_type"]),
                         ("k", "fails", "Work"))
        self.assertEqual(letter["error"], {"type": "ValueError", "message": "run 1 fails"})
        self.assertEqual(letter["input"]["n"], 1)
        # eddy inspect says that the run in flight failed, and where.
        insp = subprocess.run([EDDY, "inspect", "--state", self.state, "--json"],
                              capture_output=True, timeout=60)
        self.assertEqual(insp.returncode, 0, insp.stderr)
        info = json.loads(insp.stdout)
        run = [r for r in info["in_flight"] if r["key"] == "k"][0]
        self.assertEqual((run["line"], run["pending"], run["failed"]), (1, 2, True))
        (rec,) = [j for j in info["journal"] if j["status"] == "failed"]
        self.assertEqual((rec["key"], rec["seq"], rec["action"]), ("k", run["seq"], "fails"))
        self.assertEqual(rec["error"], {"type": "ValueError", "message": "run 1 fails"})
        text = subprocess.run([EDDY, "inspect", "--state", self.state], capture_output=True,
                              timeout=60)
        self.assertEqual(text.returncode, 0, text.stderr)
        self.assertIn(b'key "k": run %d (input line 1), 2 input(s) pending, failed '
                      b"(its input dead-lettered): the next run ends it without running "
                      b"its actions\n" % run["seq"], text.stdout)
        self.assertIn(b"action fails failed (ValueError: run 1 fails)\n", text.stdout)
        # The keys counted are those whose memory is stored, not those in flight.
        self.assertIn(b"keys with short-term memory stored: %d, pending inputs: "
                      % info["counts"]["keys"], text.stdout)

        second = self.run_cmd("--on-error", "skip", agent=agent)
        self.assertEqual(second.returncode, 0, second.stderr)
        # (j's run may have been in flight too)
        self.assertRegex(second.stderr, rb"eddy: 0 inputs, [12] runs? resumed \(1 of them failed: "
                         rb"ended with no action run again\), [23] pending inputs taken up from "
                         rb"the state, ")
        self.assertEqual(read_jsonl(dead), [letter])  # once
        outs = sorted((o["key"], o["n"], o["by"]) for o in read_jsonl(self.out))
        self.assertEqual(outs, [("j", 3, "fails"), ("j", 3, "first"), ("j", 3, "slow"),
                                ("k", 1, "first"), ("k", 2, "fails"), ("k", 2, "first"),
                                ("k", 2, "slow")])
        by = {(o["n"], o["by"]): o for o in read_jsonl(self.out)}
        # Run 1's first finished before the failure: its memory write stays
        # (applied as recovery applies it); what slow and fails wrote does not.
        self.assertEqual(by[(1, "first")]["count"], 1)
        self.assertEqual(by[(2, "first")]["count"], 2)
        self.assertEqual(by[(2, "slow")]["memory"],
                         {"count": 2, "first": 2, "slow": 2, "fails": 2, "s": 2})
        # Nothing of run 1 ran again: no reconciler for slow's PENDING call,
        # not its next call, not fails, not never.
        self.assertEqual([self.count_effects(c, key="k", n=1)
                          for c in ("first", "wait", "reconcile", "after", "never")],
                         [1, 1, 0, 0, 0])
        self.assertEqual([self.count_effects(c, key="k", n=2)
                          for c in ("first", "wait", "reconcile", "after", "never")],
                         [1, 1, 0, 1, 1])
        info = json.loads(subprocess.run(
            [EDDY, "inspect", "--state", self.state, "--key", '"k"', "--json"],
            capture_output=True, timeout=60, check=True).stdout)
        self.assertEqual((info["in_flight"], info["journal"], info["counts"]["pending"]),
                         ([], [], 0))
        self.assertEqual(info["key"]["short_term_memory"],
                         {"count": 2, "first": 2, "slow": 2, "fails": 2})
        # And a third run takes nothing up.
        third = self.run_cmd("--on-error", "skip", agent=agent)
        self.assertEqual(third.returncode, 0, third.stderr)
        self.assertIn(b"eddy: 0 inputs, 0 outputs, 0 dead-lettered", third.stderr)
        self.assertEqual(len(read_jsonl(dead)), 1)
        self.assertEqual(len(read_jsonl(self.out)), 7)

    def test_rerun_of_finished_state_does_nothing(self):
        write_jsonl(self.inp, [{"key": "k%d" % (i % 3), "seq": i, "v": i} for i in range(30)])
        first = self.run_cmd()
        self.assertEqual(first.returncode, 0, first.stderr)
        outs = read_jsonl(self.out)
        self.assertEqual(len(outs), 30)
        again = self.run_cmd()
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual(read_jsonl(self.out), outs)
        self.assertEqual(len(self.effect_lines()), 60)
        # Appending input resumes from the committed source position.
        with open(self.inp, "a") as f:
            f.write(json.dumps({"key": "k0", "seq": 30, "v": 30}) + "\n")
        third = self.run_cmd()
        self.assertEqual(third.returncode, 0, third.stderr)
        outs3 = read_jsonl(self.out)
        self.assertEqual(len(outs3), 31)
        self.assertEqual(outs3[-1]["count"], 11)
        self.assertEqual(outs3[-1]["sum"], sum(range(0, 31, 3)))

    def test_output_named_by_a_relative_path(self):
        # "./out.jsonl", not there before the first run: the file it made
        # is the same file for the run after a crash, which cuts it back to
        # what was committed (it took it for another file and appended the
        # lines written but not yet acknowledged a second time).
        flag = self.flag("crash")
        recs = [{"key": "k%d" % (i % 7), "seq": i, "v": 1} for i in range(300)]
        recs.append({"key": "z", "op": "durable_error", "seq": 300, "crash_flag": flag})
        write_jsonl(self.inp, recs)
        cmd = [os.path.abspath(EDDY), "run", os.path.abspath(DURABLE), "--input", "in.jsonl",
               "--output", "./out.jsonl", "--state", "state", "--no-progress"]
        env = dict(os.environ, EDDY_TEST_EFFECTS=self.effects)
        first = subprocess.run(cmd, capture_output=True, timeout=120, env=env, cwd=self.dir)
        self.assertEqual(first.returncode, 137, first.stderr)
        second = subprocess.run(cmd, capture_output=True, timeout=120, env=env, cwd=self.dir)
        self.assertEqual(second.returncode, 0, second.stderr)
        self.assertNotIn(b"not the file the previous run wrote to", second.stderr)
        self.assertEqual(sorted(o["seq"] for o in read_jsonl(self.out)), list(range(301)))

    def test_output_moved_with_its_state(self):
        # Killed mid-run, the job directory (input, state, output) copied
        # and the same relative command run in the copy: the output there is
        # another path, and was taken for another file and appended to
        # without being cut back to the committed length, so the lines
        # written after that length came out twice. Its content before the
        # length matches what the state recorded with it: it is taken for
        # the same output and cut back. A file of other content at the new
        # path is still appended to, never cut.
        n = 3000
        w1, w2, w3 = self.path("w1"), self.path("w2"), self.path("w3")
        os.mkdir(w1)
        write_jsonl(os.path.join(w1, "in.jsonl"),
                    [{"key": "k%d" % (i % 50), "seq": i, "v": 1, "ms": 2} for i in range(n)])
        cmd = [os.path.abspath(EDDY), "run", os.path.abspath(DURABLE), "--input", "in.jsonl",
               "--output", "out.jsonl", "--state", "state", "--no-progress", "--async-threads",
               "2"]
        env = dict(os.environ, EDDY_TEST_EFFECTS=self.effects)
        out1 = os.path.join(w1, "out.jsonl")

        def lines(path):
            if not os.path.exists(path):
                return 0
            with open(path, "rb") as f:
                return f.read().count(b"\n")

        def committed(state):
            insp = subprocess.run([EDDY, "inspect", "--state", state, "--json"],
                                  capture_output=True, timeout=60)
            self.assertEqual(insp.returncode, 0, insp.stderr)
            return json.loads(insp.stdout)["output_offset"]

        # Killed while lines are written every turn and synced every 50 ms,
        # the file nearly always holds lines past its committed length.
        for attempt in range(1, 6):
            p = subprocess.Popen(cmd, cwd=w1, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 120
            while lines(out1) < 300 * attempt and p.poll() is None:
                self.assertLess(time.monotonic(), deadline, "no outputs")
                time.sleep(0.005)
            p.kill()
            p.wait()
            self.assertLess(lines(out1), n, "finished before the kill: make the run longer")
            length = committed(os.path.join(w1, "state"))
            if 0 < length < os.path.getsize(out1):
                break
        self.assertLess(length, os.path.getsize(out1), "no lines past the committed length")
        with open(out1, "rb") as f:
            killed = f.read()
        shutil.copytree(w1, w2, symlinks=True)
        shutil.copytree(w1, w3, symlinks=True)

        res = subprocess.run(cmd, cwd=w2, env=env, capture_output=True, timeout=300)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn(b"eddy: note: out.jsonl is not the file the previous run wrote to, but its "
                      b"first %d bytes end as that file's committed lines did (moved or copied "
                      b"with the state?): taking it for that file, cut back to them\n" % length,
                      res.stderr)
        self.assertNotIn(b"appends", res.stderr)
        seqs = [o["seq"] for o in read_jsonl(os.path.join(w2, "out.jsonl"))]
        self.assertEqual(sorted(seqs), list(range(n)))
        with open(out1, "rb") as f:
            self.assertEqual(f.read(), killed)  # the original is left alone

        # Another file in the copy, as long but with other bytes: appended to.
        out3 = os.path.join(w3, "out.jsonl")
        other = b"".join(b'{"other": %d}\n' % i for i in range(len(killed) // 10))
        # Its last line cut short (a copy taken while a writer was at it):
        # refused, or the first line appended would join it.
        with open(out3, "wb") as f:
            f.write(other + b'{"other": "cu')
        res = subprocess.run(cmd, cwd=w3, env=env, capture_output=True, timeout=300)
        self.assertEqual(res.returncode, 2, res.stderr)
        self.assertIn(b"eddy: out.jsonl ends in a partial line (its last byte, at %d, is not a "
                      b"newline): eddy appends its lines to it and its first would join that one; "
                      b"end the file with a newline (echo >> out.jsonl) or cut the partial line "
                      b"off, or give another --output\n" % (len(other) + 12), res.stderr)
        with open(out3, "rb") as f:
            self.assertEqual(f.read(), other + b'{"other": "cu')
        # Refused before anything: no note that it appends, and the file
        # the state's lines went to is not cut back either.
        self.assertNotIn(b"note:", res.stderr)
        with open(out1, "rb") as f:
            self.assertEqual(f.read(), killed)
        with open(out3, "wb") as f:
            f.write(other)
        res = subprocess.run(cmd, cwd=w3, env=env, capture_output=True, timeout=300)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn(b"eddy: note: out.jsonl is not the file the previous run wrote to; earlier "
                      b"lines stay where they were written and this run appends to out.jsonl\n",
                      res.stderr)
        with open(out3, "rb") as f:
            data = f.read()
        self.assertTrue(data.startswith(other))
        seqs = [json.loads(line)["seq"] for line in data[len(other):].splitlines()]
        self.assertEqual(len(seqs), len(set(seqs)))
        self.assertEqual(set(seqs) | {json.loads(line)["seq"] for line in killed[:length]
                                      .splitlines()}, set(range(n)))

        # The committed lines, then a line of another job's: the end before
        # the committed length matches, but what follows is not a line this
        # state may have written, so nothing is cut (it was, in review).
        w4 = self.path("w4")
        shutil.copytree(w1, w4, symlinks=True)
        out4 = os.path.join(w4, "out.jsonl")
        foreign = killed[:length] + b'{"from": "another job"}\n'
        with open(out4, "wb") as f:
            f.write(foreign)
        res = subprocess.run(cmd, cwd=w4, env=env, capture_output=True, timeout=300)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn(b"this run appends to out.jsonl", res.stderr)
        with open(out4, "rb") as f:
            self.assertTrue(f.read().startswith(foreign))

        # A FIFO there: not opened to be read (that open would wait for a
        # writer, and the rerun hung), written to as before.
        w5 = self.path("w5")
        shutil.copytree(w1, w5, symlinks=True)
        out5 = os.path.join(w5, "out.jsonl")
        os.unlink(out5)
        os.mkfifo(out5)
        got = []
        reader = threading.Thread(target=lambda: got.append(open(out5, "rb").read()))
        reader.start()
        try:
            res = subprocess.run(cmd, cwd=w5, env=env, capture_output=True, timeout=120)
        finally:
            if reader.is_alive():  # eddy never opened it: let the reader go
                with open(out5, "wb"):
                    pass
            reader.join(60)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn(b"this run appends to out.jsonl", res.stderr)
        self.assertGreater(len(got[0]), 0)

    def test_relative_output_recorded_by_an_older_eddy(self):
        # Older eddies recorded a file not there yet by its unresolved path
        # ("DIR/./out.jsonl"), and the file it then was by its real path:
        # a state holding the first still resumes into the same file.
        write_jsonl(self.inp, [{"key": "k", "seq": i, "v": 1} for i in range(5)])
        cmd = [os.path.abspath(EDDY), "run", os.path.abspath(DURABLE), "--input", "in.jsonl",
               "--output", "./out.jsonl", "--state", "state", "--no-progress"]
        env = dict(os.environ, EDDY_TEST_EFFECTS=self.effects)
        first = subprocess.run(cmd, capture_output=True, timeout=120, env=env, cwd=self.dir)
        self.assertEqual(first.returncode, 0, first.stderr)

        def identity(text):  # eddy__hash_bytes, as file_identity keeps it
            h = 0xcbf29ce484222325
            for b in text.encode():
                h = ((h ^ b) * 0x100000001b3) & (2 ** 64 - 1)
            for shift, mul in ((30, 0xbf58476d1ce4e5b9), (27, 0x94d049bb133111eb)):
                h = ((h ^ (h >> shift)) * mul) & (2 ** 64 - 1)
            h ^= h >> 31
            h = h if h > 1 else h + 2
            return h - 2 ** 64 if h >= 2 ** 63 else h

        db = sqlite3.connect(os.path.join(self.state, "eddy.db"))
        db.execute("UPDATE meta SET v = ? WHERE k = 'output_id'",
                   (identity(os.path.realpath(self.dir) + "/./out.jsonl"),))
        db.commit()
        db.close()
        with open(self.inp, "a") as f:
            f.write(json.dumps({"key": "k", "seq": 5, "v": 1}) + "\n")
        second = subprocess.run(cmd, capture_output=True, timeout=120, env=env, cwd=self.dir)
        self.assertEqual(second.returncode, 0, second.stderr)
        self.assertNotIn(b"not the file the previous run wrote to", second.stderr)
        self.assertEqual([o["seq"] for o in read_jsonl(self.out)], list(range(6)))

    def test_dead_letter_file_is_made_by_the_first_dead_letter(self):
        # No dead letters, no file; the first one makes it, and a crash
        # after its line was written but before it was committed leaves a
        # file that the rerun cuts back to the recorded length of 0.
        dead = self.out + ".dead.jsonl"
        write_jsonl(self.inp, [{"key": "k", "seq": i, "v": i} for i in range(3)])
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertFalse(os.path.exists(dead))
        with open(self.inp, "a") as f:
            f.write('{"no key": 1}\n')
        # A failed sync of the new file: its line is written, not committed
        # (the first sync is the output's).
        res = self.run_cmd(env={"EDDY_FAULT": "sink_write.sync:2"})
        self.assertEqual(res.returncode, 1, res.stderr)
        self.assertIn(b"cannot sync " + dead.encode(), res.stderr)
        self.assertEqual(len(read_jsonl(dead)), 1)
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual([d["reason"] for d in read_jsonl(dead)], ["no key field"])
        insp = subprocess.run([EDDY, "inspect", "--state", self.state, "--json"],
                              capture_output=True, timeout=60)
        self.assertEqual(json.loads(insp.stdout)["dead_letter_offset"], os.path.getsize(dead))
        # Gone once the state counts lines in it: refused, as a cut file is.
        os.remove(dead)
        with open(self.inp, "a") as f:
            f.write(json.dumps({"key": "k", "seq": 3, "v": 3}) + "\n")
        res = self.run_cmd()
        self.assertEqual(res.returncode, 3, res.stderr)
        self.assertIn(dead.encode() + b" is gone but the state says", res.stderr)
        self.assertEqual([o["seq"] for o in read_jsonl(self.out)], [0, 1, 2])

    def test_output_gone_is_refused_and_not_made(self):
        # The state says the output holds lines and the file is gone: the
        # refusal says so (it said "holds 0 bytes") and leaves no empty
        # file behind (it made one).
        write_jsonl(self.inp, [{"key": "k", "seq": i, "v": i} for i in range(3)])
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        with open(self.out, "rb") as f:
            saved = f.read()
        size = len(saved)
        os.remove(self.out)
        res = self.run_cmd()
        self.assertEqual(res.returncode, 3, res.stderr)
        self.assertIn(b"eddy: %s is gone but the state says %d bytes were committed to it: the "
                      b"file was removed or moved outside eddy; put it back (restore it) or start "
                      b"with a new --state directory\n" % (self.out.encode(), size), res.stderr)
        self.assertFalse(os.path.exists(self.out))
        # Restored, it goes on.
        with open(self.out, "wb") as f:
            f.write(saved)
        with open(self.inp, "a") as f:
            f.write(json.dumps({"key": "k", "seq": 3, "v": 3}) + "\n")
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual([o["seq"] for o in read_jsonl(self.out)], [0, 1, 2, 3])

    def test_output_removed_while_written_is_an_error(self):
        # The output file removed during the run: eddy would write and sync
        # lines into a file no one can read and commit them as delivered.
        # Its sync notices, and the run fails naming it.
        cmd = [EDDY, "run", DURABLE, "--input", "-", "--output", self.out, "--state",
               self.state, "--no-progress", "--quiet"]
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=dict(os.environ, EDDY_TEST_EFFECTS=self.effects))
        try:
            for i in range(3):
                p.stdin.write((json.dumps({"key": "k", "seq": i, "v": i}) + "\n").encode())
            p.stdin.flush()
            deadline = time.monotonic() + 60
            while lines_written(self.out) != 3:
                self.assertLess(time.monotonic(), deadline, "no outputs")
                time.sleep(0.01)
            os.remove(self.out)
            for i in range(3, 5):
                p.stdin.write((json.dumps({"key": "k", "seq": i, "v": i}) + "\n").encode())
            p.stdin.close()
            err = p.stderr.read()
            self.assertEqual(p.wait(timeout=60), 1, err)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stderr.close()
        self.assertIn(self.out.encode() + b" was removed while eddy wrote it", err)
        # A file that had no name from the start (/dev/stdout on an
        # O_TMPFILE) is no removal.
        write_jsonl(self.inp, [{"key": "k", "seq": i, "v": i} for i in range(3)])
        with tempfile.TemporaryFile() as f:
            res = subprocess.run([EDDY, "run", DURABLE, "--input", self.inp, "--output",
                                  "/dev/stdout", "--dead-letter", self.path("dl.jsonl"),
                                  "--state", self.path("st2"), "--quiet"], stdout=f,
                                 stderr=subprocess.PIPE, timeout=60,
                                 env=dict(os.environ, EDDY_TEST_EFFECTS=self.effects))
            self.assertEqual(res.returncode, 0, res.stderr)
            f.seek(0)
            self.assertEqual(len(f.read().splitlines()), 3)

    def piped(self, *extra, state=None):
        """eddy reading stdin (fed with feed()), writing self.out."""
        cmd = [EDDY, "run", DURABLE, "--input", "-", "--output", self.out, "--state",
               state or self.state, "--no-progress", "--quiet"] + list(extra)
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=dict(os.environ, EDDY_TEST_EFFECTS=self.effects))

    @staticmethod
    def feed(p, seqs):
        for i in seqs:
            p.stdin.write((json.dumps({"key": "k", "seq": i, "v": i}) + "\n").encode())
        p.stdin.flush()

    def wait_lines(self, path, n, committed_in=None):
        """Until path holds n lines (and, with committed_in, the state
        there has committed a length of the output)."""
        deadline = time.monotonic() + 60
        while True:
            done = lines_written(path) >= n
            if done and committed_in is not None:
                insp = subprocess.run([EDDY, "inspect", "--state", committed_in, "--json"],
                                      capture_output=True, timeout=60)
                done = insp.returncode == 0 and json.loads(insp.stdout)["output_offset"] > 0
            if done:
                return
            self.assertLess(time.monotonic(), deadline, "no outputs")
            time.sleep(0.01)

    def test_second_eddy_on_the_same_output_is_refused(self):
        # A second eddy with a new state on the output (or dead-letter
        # file) of a running one emptied it under the first, which went
        # on writing at its offset: lines lost, a torn line, a run of NUL
        # bytes, and exit 0 for both. The file is locked while written:
        # the second is refused (exit 2) before it cuts anything.
        dead = self.path("dl.jsonl")
        open(dead, "w").close()
        p = self.piped("--dead-letter", dead)
        try:
            self.feed(p, range(3))
            self.wait_lines(self.out, 3)
            write_jsonl(self.inp, [{"key": "x", "seq": i, "v": i} for i in range(3)])
            for extra, opt, what in ((["--output", self.out], "--output", b"outputs"),
                                     (["--output", self.path("o2.jsonl"), "--dead-letter", dead],
                                      "--dead-letter", b"dead letters")):
                res = subprocess.run([EDDY, "run", DURABLE, "--input", self.inp, "--state",
                                      self.path("st2"), "--no-progress"] + extra,
                                     capture_output=True, timeout=60,
                                     env=dict(os.environ, EDDY_TEST_EFFECTS=self.effects))
                self.assertEqual(res.returncode, 2, res.stderr)
                self.assertIn(b"eddy: cannot write to %s: another process holds a lock on it "
                              b"(another eddy writing its %s there?); give another %s, or run "
                              b"this once that process has ended\n"
                              % (extra[-1].encode(), what, opt.encode()), res.stderr)
            self.feed(p, range(3, 5))
            p.stdin.write(b"not json\n")  # a dead letter, written to the locked file
            p.stdin.close()
            err = p.stderr.read()
            self.assertEqual(p.wait(timeout=60), 0, err)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stderr.close()
        with open(self.out, "rb") as f:
            data = f.read()
        self.assertNotIn(b"\0", data)
        self.assertEqual([o["seq"] for o in read_jsonl(self.out)], list(range(5)))
        self.assertEqual(len(read_jsonl(dead)), 1)
        self.assertEqual(os.path.getsize(self.path("o2.jsonl")), 0)

    def stop_piped(self, p, rc):
        """Close p's input; its stderr, once it exited with rc."""
        try:
            p.stdin.close()
            err = p.stderr.read()
            self.assertEqual(p.wait(timeout=60), rc, err)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stderr.close()
        return err

    def rerun_piped(self, n):
        """The piped command again, on the same n inputs."""
        lines = "".join(json.dumps({"key": "k", "seq": i, "v": i}) + "\n" for i in range(n))
        return subprocess.run([EDDY, "run", DURABLE, "--input", "-", "--output", self.out,
                               "--state", self.state, "--no-progress", "--quiet"],
                              input=lines.encode(), capture_output=True, timeout=60,
                              env=dict(os.environ, EDDY_TEST_EFFECTS=self.effects))

    def test_output_truncated_in_place_is_an_error(self):
        # logrotate's copytruncate (`cp out out.1; : > out`) during a run:
        # eddy went on writing at its offset, the file started with a run
        # of NUL bytes where the committed lines had been, and eddy exited
        # 0. It now writes nothing more to a file shorter than what it
        # wrote, and stops (exit 1); the rerun refuses the file until its
        # content is back.
        rotated = self.out + ".1"
        p = self.piped()
        try:
            self.feed(p, range(3))
            self.wait_lines(self.out, 3, committed_in=self.state)
            shutil.copyfile(self.out, rotated)
            os.truncate(self.out, 0)
            self.feed(p, range(3, 5))
        finally:
            err = self.stop_piped(p, 1)
        size = os.path.getsize(rotated)
        self.assertIn(b"eddy: %s was truncated while eddy wrote it: it holds 0 bytes, eddy had "
                      b"written %d (rotated in place, as logrotate's copytruncate does?), and its "
                      b"lines past them are not delivered; do not truncate or rotate it while "
                      b"eddy runs: put back what it held (the copy rotated out) and run the same "
                      b"command again\n" % (self.out.encode(), size), err)
        self.assertEqual(os.path.getsize(self.out), 0)
        res = self.rerun_piped(5)
        self.assertEqual(res.returncode, 3, res.stderr)
        self.assertIn(b"eddy: %s holds 0 bytes but the state says " % self.out.encode(),
                      res.stderr)
        self.assertIn(b"the file was changed outside eddy (truncated, or rotated in place?); "
                      b"restore it (put back what it held) or start with a new --state "
                      b"directory\n", res.stderr)
        os.replace(rotated, self.out)
        res = self.rerun_piped(5)
        self.assertEqual(res.returncode, 0, res.stderr)
        with open(self.out, "rb") as f:
            self.assertNotIn(b"\0", f.read())
        self.assertEqual([o["seq"] for o in read_jsonl(self.out)], list(range(5)))

    def paused_reader(self, cmd, at, change):
        """cmd run with its reader paused (EDDY_TEST_READER_PAUSE: after its
        "first" read, or at the "end" of the input), the input changed by
        change() then; its stderr, once it exited 1."""
        paused, go = self.path("reader-paused"), self.path("reader-go")
        for f in (paused, go):
            if os.path.exists(f):
                os.remove(f)
        env = dict(os.environ, EDDY_TEST_EFFECTS=self.effects, EDDY_TEST_READER_PAUSE=at,
                   EDDY_TEST_READER_PAUSED=paused, EDDY_TEST_READER_GO=go)
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        try:
            deadline = time.monotonic() + 60
            while not os.path.exists(paused):
                self.assertIsNone(p.poll(), "eddy ended before its reader paused")
                self.assertLess(time.monotonic(), deadline, "the reader did not pause")
                time.sleep(0.01)
            change()
            open(go, "w").close()
            err = p.communicate(timeout=120)[1]
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, 1, err)
        return err

    @unittest.skipUnless(os.environ.get("EDDY_HOOKS", "ON").upper() in ("ON", "1", "TRUE", "YES"),
                         "built without EDDY_TEST_HOOKS")
    def test_input_truncated_while_read_is_an_error(self):
        # `: > in` or logrotate's copytruncate while eddy read the input:
        # the reader took the end of what was left for the end of the input
        # and eddy exited 0, the lines past it never read (with --state the
        # rerun was then refused). The reader now compares the file's length
        # with what it read and with what it held, after each read and at
        # the end, and eddy stops (exit 1).
        recs = [{"key": "k%d" % (i % 50), "seq": i, "v": i} for i in range(10000)]
        write_jsonl(self.inp, recs)
        with open(self.inp, "rb") as f:
            original = f.read()
        chunk = 256 << 10  # the reader's first read
        self.assertGreater(len(original), chunk)
        in_chunk = original[:chunk].count(b"\n")  # lines the first read holds whole
        plain = [EDDY, "run", DURABLE, "--input", self.inp, "--output", self.out,
                 "--no-progress", "--quiet"]

        def message(holds, read, held=None):
            return (b"eddy: %s was truncated while eddy read it: it holds %d bytes, eddy had "
                    b"read %d%s (rotated in place, as logrotate's copytruncate does?), and what "
                    b"it holds from there does not go on from the lines read; do not truncate or "
                    b"rotate an input while eddy reads it: put back what it held (the copy "
                    b"rotated out) and run the same command again\n"
                    % (self.inp.encode(), holds, read,
                       b" of the %d it held" % held if held is not None else b""))

        def restore():
            with open(self.inp, "wb") as f:
                f.write(original)

        # Cut below what the first read took: the next read finds the end.
        err = self.paused_reader(plain, "first", lambda: os.truncate(self.inp, 1000))
        self.assertIn(message(1000, chunk, len(original)), err)
        self.assertLess(max([o["seq"] for o in read_jsonl(self.out)], default=-1), in_chunk)

        # Cut, then written again past the reader's offset (but shorter than
        # it was): the bytes read there are not taken for lines.
        other = "".join(json.dumps({"key": "x%d" % i, "seq": -i, "v": 0}) + "\n"
                        for i in range(9000))
        self.assertTrue(chunk < len(other) < len(original))

        def rewrite():
            with open(self.inp, "w") as f:
                f.write(other)
        restore()
        err = self.paused_reader(plain, "first", rewrite)
        self.assertIn(message(len(other), len(other), len(original)), err)
        self.assertEqual([o for o in read_jsonl(self.out) if o["seq"] < 0], [])
        self.assertFalse(os.path.exists(self.out + ".dead.jsonl"))

        # With --state, cut once the state has read the whole input: the run
        # stops at the end, what it committed stays, and the rerun refuses
        # the file until what it held is back.
        restore()

        def once_all_read():
            deadline = time.monotonic() + 60
            while True:
                insp = subprocess.run([EDDY, "inspect", "--state", self.state, "--json"],
                                      capture_output=True, timeout=60)
                if insp.returncode == 0 and \
                        json.loads(insp.stdout)["source"]["offset"] == len(original):
                    break
                self.assertLess(time.monotonic(), deadline, "the input was not read")
                time.sleep(0.01)
            os.truncate(self.inp, 1000)
        err = self.paused_reader(self.cmd("--quiet"), "end", once_all_read)
        self.assertIn(message(1000, len(original)), err)
        res = self.run_cmd()
        self.assertEqual(res.returncode, 3, res.stderr)
        self.assertIn(b"eddy: %s is not the input this state was reading: it holds 1000 bytes, "
                      b"and the state has read %d (truncated, or rotated in place?); give the "
                      b"same input" % (self.inp.encode(), len(original)), res.stderr)
        restore()
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(sorted(o["seq"] for o in read_jsonl(self.out)), list(range(len(recs))))

        # Cut in the middle with --state: what was committed stays, and the
        # same command, the input put back, gives every output once.
        shutil.rmtree(self.state)
        err = self.paused_reader(self.cmd("--quiet"), "first", lambda: os.truncate(self.inp, 0))
        self.assertIn(message(0, chunk, len(original)), err)
        restore()
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(sorted(o["seq"] for o in read_jsonl(self.out)), list(range(len(recs))))

    def test_output_renamed_while_written_is_an_error(self):
        # `mv out out.moved` during a run: eddy wrote on to the moved file
        # and exited 0, and the next run was refused. Its sync now finds
        # that the path no longer names the file it writes and stops
        # (exit 1) before the lines count as delivered; moved back, the
        # file is resumed. So is one replaced by another file at the path.
        moved = self.out + ".moved"
        for replaced in (False, True):
            shutil.rmtree(self.state, ignore_errors=True)
            p = self.piped()
            try:
                self.feed(p, range(3))
                self.wait_lines(self.out, 3, committed_in=self.state)
                os.rename(self.out, moved)
                if replaced:
                    open(self.out, "w").close()
                self.feed(p, range(3, 5))
            finally:
                err = self.stop_piped(p, 1)
            self.assertIn(b"eddy: %s was renamed or replaced while eddy wrote it: the path no "
                          b"longer names the file eddy writes, which took its lines since the "
                          b"last sync (not delivered); do not move or rotate it while eddy runs: "
                          b"move that file back to %s and run the same command again\n"
                          % (self.out.encode(), self.out.encode()), err)
            res = self.rerun_piped(5)
            self.assertEqual(res.returncode, 3, res.stderr)
            self.assertIn(b"holds 0 bytes but the state says" if replaced else
                          b"is gone but the state says", res.stderr)
            os.replace(moved, self.out)
            res = self.rerun_piped(5)
            self.assertEqual(res.returncode, 0, res.stderr)
            self.assertEqual([o["seq"] for o in read_jsonl(self.out)], list(range(5)))

    def test_output_path_that_cannot_be_checked_is_an_error(self):
        # The sync's check that the path still names the file eddy writes
        # took any failure of stat(2) for a rename. One that does not say
        # the file is gone (a directory made unreadable, a network file
        # system's error; here a loop of links) now says what it is, and
        # still stops before the lines count as delivered.
        sub = self.path("sub")
        os.mkdir(sub)
        self.out = os.path.join(sub, "out.jsonl")
        p = self.piped()
        try:
            self.feed(p, range(3))
            self.wait_lines(self.out, 3, committed_in=self.state)
            os.rename(sub, sub + ".moved")
            os.symlink("sub", sub)  # sub -> sub: ELOOP
            self.feed(p, range(3, 5))
        finally:
            err = self.stop_piped(p, 1)
        self.assertIn(b"eddy: cannot check that %s still names the file eddy writes: Too many "
                      b"levels of symbolic links (its lines since the last sync are not "
                      b"delivered)\n" % self.out.encode(), err)
        os.unlink(sub)
        os.rename(sub + ".moved", sub)
        res = self.rerun_piped(5)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual([o["seq"] for o in read_jsonl(self.out)], list(range(5)))

    def test_switching_outputs_between_runs(self):
        write_jsonl(self.inp, [{"key": "k", "seq": i, "v": i} for i in range(5)])
        first = self.run_cmd()
        self.assertEqual(first.returncode, 0, first.stderr)
        with open(self.inp, "a") as f:
            for i in range(5, 8):
                f.write(json.dumps({"key": "k", "seq": i, "v": i}) + "\n")
        # The next run writes elsewhere: the first output stays as it was, the
        # new one gets the new inputs' outputs, appended, with a note.
        other = self.path("other.jsonl")
        cmd = self.cmd()
        cmd[cmd.index(self.out)] = other
        second = subprocess.run(cmd, capture_output=True, timeout=60,
                                env=dict(os.environ, EDDY_TEST_EFFECTS=self.effects))
        self.assertEqual(second.returncode, 0, second.stderr)
        self.assertIn(b"not the file the previous run wrote to", second.stderr)
        self.assertEqual([o["seq"] for o in read_jsonl(self.out)], [0, 1, 2, 3, 4])
        self.assertEqual([o["seq"] for o in read_jsonl(other)], [5, 6, 7])
        # And to stdout: nothing to cut back, nothing repeated.
        third = subprocess.run(cmd[:cmd.index("--output")] + ["--output", "-"] +
                               cmd[cmd.index("--output") + 2:], capture_output=True, timeout=60)
        self.assertEqual(third.returncode, 0, third.stderr)
        self.assertEqual(third.stdout, b"")

    def test_switched_output_gets_each_redelivered_line_once(self):
        # Lines committed but not yet written (the sync failed) are written
        # by the next run, here to another output; a failure before that
        # run commits their delivery must not make the run after append
        # them to the new output a second time.
        recs = [{"key": "k%d" % (i % 4), "seq": i, "v": i} for i in range(12)]
        write_jsonl(self.inp, recs)
        other = self.path("other.jsonl")
        cmd = self.cmd()
        cmd[cmd.index(self.out)] = other
        env = dict(os.environ, EDDY_TEST_EFFECTS=self.effects)
        saved = self.path("saved")
        cases = 0
        for n in range(2, 12):
            for p in (self.out, other):
                if os.path.exists(p):
                    os.remove(p)
            shutil.rmtree(self.state, ignore_errors=True)
            first = self.run_cmd(env={"EDDY_FAULT": "store_sync:%d" % n})
            insp = subprocess.run([EDDY, "inspect", "--state", self.state, "--json"],
                                  capture_output=True, timeout=60)
            if first.returncode != 3 or json.loads(insp.stdout)["counts"]["outbox"] == 0:
                continue  # no line waiting to be written
            shutil.rmtree(saved, ignore_errors=True)
            shutil.copytree(self.state, saved)
            written = read_jsonl(self.out) if os.path.exists(self.out) else []
            for k in (1, 2, 3):
                shutil.rmtree(self.state)
                shutil.copytree(saved, self.state)
                if os.path.exists(other):
                    os.remove(other)
                what = "store_sync:%d then store_commit:%d" % (n, k)
                second = subprocess.run(cmd, capture_output=True, timeout=60,
                                        env=dict(env, EDDY_FAULT="store_commit:%d" % k))
                cases += second.returncode == 3 and os.path.exists(other) and \
                    os.path.getsize(other) > 0
                third = subprocess.run(cmd, capture_output=True, timeout=60, env=env)
                self.assertEqual(third.returncode, 0, what + ": " + third.stderr.decode())
                seqs = [o["seq"] for o in read_jsonl(other)]
                self.assertEqual(len(seqs), len(set(seqs)), "%s: %s" % (what, seqs))
                self.assertEqual(set(seqs + [o["seq"] for o in written]), set(range(12)), what)
        self.assertGreater(cases, 0, "no failed commit found lines written to the new file")

    def test_switched_output_after_a_failure_cuts_the_old_one_back(self):
        # A run that failed (a full disk: the file took part of a write)
        # leaves its output holding bytes past its committed length: lines
        # of the outbox, the last one torn. A rerun with another --output
        # wrote those lines to the new file, so they were in both (870 of
        # 20000 on a 256 KiB tmpfs), with the torn line in the old one. The
        # old file, still the one the state recorded, is cut back to its
        # committed length, with a note; one that is not (changed, bytes
        # another program wrote, locked) is left as it is, and the note
        # says what to do.
        n = 3000
        write_jsonl(self.inp, [{"key": "k%d" % (i % 50), "seq": i, "v": 1, "ms": 2}
                               for i in range(n)])
        cmd = self.cmd("--async-threads", "2")
        env = dict(os.environ, EDDY_TEST_EFFECTS=self.effects)

        def lines(path):
            if not os.path.exists(path):
                return 0
            with open(path, "rb") as f:
                return f.read().count(b"\n")

        def committed():
            insp = subprocess.run([EDDY, "inspect", "--state", self.state, "--json"],
                                  capture_output=True, timeout=60)
            self.assertEqual(insp.returncode, 0, insp.stderr)
            return json.loads(insp.stdout)["output_offset"]

        # Killed while lines are written every turn and synced every 50 ms,
        # the file nearly always holds lines past its committed length.
        for attempt in range(1, 6):
            p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 120
            while lines(self.out) < 300 * attempt and p.poll() is None:
                self.assertLess(time.monotonic(), deadline, "no outputs")
                time.sleep(0.005)
            p.kill()
            p.wait()
            self.assertLess(lines(self.out), n, "finished before the kill: make the run longer")
            length = committed()
            if 0 < length and length + 40 < os.path.getsize(self.out):
                break
        self.assertLess(length + 40, os.path.getsize(self.out), "no lines past the length")
        with open(self.out, "rb") as f:
            killed = f.read()
        # What a write cut short by a full disk leaves: a torn last line.
        killed = killed[:-7]
        saved = self.path("saved")
        shutil.copytree(self.state, saved)
        new = self.path("new.jsonl")
        other = self.cmd("--async-threads", "2")
        other[other.index(self.out)] = new

        def rerun(old_content):
            shutil.rmtree(self.state)
            shutil.copytree(saved, self.state)
            with open(self.out, "wb") as f:
                f.write(old_content)
            if os.path.exists(new):
                os.remove(new)
            res = subprocess.run(other, env=env, capture_output=True, timeout=300)
            self.assertEqual(res.returncode, 0, res.stderr)
            self.assertIn(b"eddy: note: %s is not the file the previous run wrote to; earlier "
                          b"lines stay where they were written and this run appends to %s\n"
                          % (new.encode(), new.encode()), res.stderr)
            return res

        old = os.path.realpath(self.out).encode()  # as the state knows it
        res = rerun(killed)
        self.assertEqual(os.path.getsize(self.out), length)
        seqs = [o["seq"] for o in read_jsonl(self.out)] + [o["seq"] for o in read_jsonl(new)]
        self.assertEqual(sorted(seqs), list(range(n)))
        self.assertIn(b"eddy: note: cut %s back to %d bytes: the lines past it were not "
                      b"committed and go to %s\n" % (old, length, new.encode()),
                      res.stderr)

        def left(old_content, why):
            res = rerun(old_content)
            self.assertIn(b"eddy: note: %s, the file the previous run wrote to, holds %d bytes "
                          b"past the %d committed to it, which may be lines that this run writes "
                          b"to %s too; it is left as it is, since %s: remove from it the lines "
                          b"that %s holds too (truncate -s %d %s, when all its bytes past them "
                          b"are lines of this state)\n"
                          % (old, len(old_content) - length, length, new.encode(), why,
                             new.encode(), length, old), res.stderr)
            self.assertNotIn(b"note: cut", res.stderr)
            with open(self.out, "rb") as f:
                self.assertEqual(f.read(), old_content)

        # Another program's line after the committed ones: not cut.
        left(killed[:length] + b'{"from": "another program"}\n',
             b"they are not only lines that this run writes (another program wrote there?)")
        # A committed line changed since: not the file the state recorded.
        left(killed[:length - 3] + b"X" + killed[length - 2:],
             b"its bytes before them are not those the state recorded (the file was changed "
             b"since)")
        # Held by another process.
        import fcntl
        with open(self.out, "ab") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            left(killed, b"another process holds a lock on it (another eddy writing there?)")
        # A state whose last run was an older eddy's does not know the path.
        db = sqlite3.connect(os.path.join(saved, "eddy.db"))
        db.execute("DELETE FROM meta WHERE k = 'output_path'")
        db.commit()
        db.close()
        res = rerun(killed)
        self.assertIn(b"eddy: note: the file the previous run wrote to may hold, past the %d "
                      b"bytes committed to it, lines that this run writes to %s (the state does "
                      b"not say which file that was: an older eddy wrote it); cut that file back "
                      b"to %d bytes (truncate -s %d FILE) to have each line once\n"
                      % (length, new.encode(), length, length), res.stderr)
        with open(self.out, "rb") as f:
            self.assertEqual(f.read(), killed)

        # The dead-letter file the same way: its first line written, its
        # sync failed (nothing committed), the rerun to another file.
        shutil.rmtree(self.state)
        dead, dead2 = self.out + ".dead.jsonl", self.path("dead2.jsonl")
        write_jsonl(self.inp, [{"key": "k", "seq": 0, "v": 0}, "not json",
                               {"key": "k", "seq": 1, "v": 1}])
        res = self.run_cmd(env={"EDDY_FAULT": "sink_write.sync:2"})
        self.assertEqual(res.returncode, 1, res.stderr)
        self.assertEqual(len(read_jsonl(dead)), 1)
        res = self.run_cmd("--dead-letter", dead2)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn(b"eddy: note: cut %s back to 0 bytes: the lines past it were not committed "
                      b"and go to %s\n" % (os.path.realpath(dead).encode(), dead2.encode()),
                      res.stderr)
        self.assertEqual(os.path.getsize(dead), 0)
        self.assertEqual([d["reason"] for d in read_jsonl(dead2)], ["not JSON"])

    def finished(self, recs):
        """A run over recs to its end: the input's and the output's bytes."""
        write_jsonl(self.inp, recs)
        first = self.run_cmd()
        self.assertEqual(first.returncode, 0, first.stderr)
        with open(self.inp, "rb") as f:
            original = f.read()
        with open(self.out, "rb") as f:
            return original, f.read()

    def refused_from_stdin(self, data, why):
        """The command with --input -, refused (exit 3) for data on stdin."""
        cmd = self.cmd()
        cmd[cmd.index(self.inp)] = "-"
        res = subprocess.run(cmd, input=data, capture_output=True, timeout=60)
        self.assertEqual(res.returncode, 3, res.stderr)
        self.assertIn(b"<stdin> is not the input this state was reading: " + why, res.stderr)
        return cmd

    def test_another_input_or_key_field_is_refused(self):
        recs = [{"key": "k%d" % i, "seq": i, "v": i} for i in range(4)]
        original, outputs = self.finished(recs)

        def refused(res, why):
            self.assertEqual(res.returncode, 3, res.stderr)
            self.assertIn(b"is not the input this state was reading: " + why, res.stderr)
            with open(self.out, "rb") as f:
                self.assertEqual(f.read(), outputs)

        # Another file at the same path: its lines would be skipped up to the
        # byte the state had read to.
        write_jsonl(self.inp, [{"key": "x%d" % i, "seq": i, "v": i} for i in range(6)])
        refused(self.run_cmd(), b"its first line is not the one read before")
        with open(self.inp, "wb") as f:
            f.write(original[:len(original) // 2])
        refused(self.run_cmd(), b"it holds %d bytes, and the state has read %d (truncated, or "
                b"rotated in place?); give the same input" % (len(original) // 2, len(original)))
        # The same from a pipe.
        for data, why in ((b'{"key": "z", "seq": 9, "v": 9}\n' * 5, b"its first line"),
                          (original[:10], b"it ended after 10 bytes")):
            self.refused_from_stdin(data, why)
        # A key field other than the state's.
        with open(self.inp, "wb") as f:
            f.write(original)
        res = self.run_cmd("--key", "seq")
        self.assertEqual(res.returncode, 3, res.stderr)
        self.assertIn(b"was filled with --key key, not --key seq (a state's key field cannot "
                      b"change); give --key key, or use", res.stderr)
        # Lines added at the end of the same input: only they run.
        write_jsonl(self.inp, recs + [{"key": "k9", "seq": 9, "v": 9}])
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        seqs = [o["seq"] for o in read_jsonl(self.out)]
        self.assertEqual((sorted(seqs[:4]), seqs[4:]), ([0, 1, 2, 3], [9]))  # keys overlap

    def test_input_changed_before_the_position_is_refused(self):
        # The first line and the length are the same, but a line before the
        # position grew: the resume would start in the middle of a line,
        # dead-letter its tail and lose the line after it.
        recs = [{"key": "k%d" % (i % 3), "seq": i, "v": i} for i in range(8)]
        original, outputs = self.finished(recs)
        changed = dict(recs[3], note="longer")
        write_jsonl(self.inp, recs[:3] + [changed] + recs[4:] +
                    [{"key": "k0", "seq": 8, "v": 8}])
        with open(self.inp, "rb") as f:
            data = f.read()
        self.assertNotEqual(data[len(original) - 1:len(original)], b"\n")
        why = b"the state resumes at byte %d, which does not start a line (a line before it " \
              b"changed)" % len(original)
        res = self.run_cmd()
        self.assertEqual(res.returncode, 3, res.stderr)
        self.assertIn(self.inp.encode() + b" is not the input this state was reading: " + why,
                      res.stderr)
        cmd = self.refused_from_stdin(data, why)
        with open(self.out, "rb") as f:
            self.assertEqual(f.read(), outputs)
        self.assertFalse(os.path.exists(self.out + ".dead.jsonl"))
        # A complete last line without a newline ends the position inside
        # no line: the input may stay as it is, or go on with its newline.
        with open(self.inp, "wb") as f:
            f.write(original + json.dumps({"key": "k1", "seq": 8, "v": 8}).encode())
        for data in (None, b"", b"\n" + json.dumps({"key": "k2", "seq": 9, "v": 9}).encode()):
            if data:
                with open(self.inp, "ab") as f:
                    f.write(data)
            res = self.run_cmd()
            self.assertEqual(res.returncode, 0, res.stderr)
        with open(self.inp, "rb") as f:
            data = f.read()
        res = subprocess.run(cmd, input=data + b"\r\n" + json.dumps(
            {"key": "k0", "seq": 10, "v": 10}).encode() + b"\n", capture_output=True, timeout=60)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(sorted(o["seq"] for o in read_jsonl(self.out)), list(range(11)))
        self.assertFalse(os.path.exists(self.out + ".dead.jsonl"))

    def test_finished_calls_are_journaled_before_new_work(self):
        # Thousands of runs in flight: a task that goes on after its call
        # must not wait behind tasks that have not started, or a kill finds
        # thousands of finished calls unjournaled and runs them again (it
        # did: ~800 of 2,500 here). Killed once many calls have run, the
        # rerun may repeat what was running or had just finished: some per
        # worker (up to 82 of 3,200 seen under ASan, whose loop is slower).
        n, threads = 20000, 16
        write_jsonl(self.inp, [{"key": "k%d" % i, "seq": i, "v": 1, "ms": 1} for i in range(n)])
        cmd = self.cmd("--async-threads", str(threads))
        env = dict(os.environ, EDDY_TEST_EFFECTS=self.effects)
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        for _ in range(3000):
            if os.path.exists(self.effects) and os.path.getsize(self.effects) > 150_000:
                break  # ~3000 calls have run
            time.sleep(0.01)
        p.kill()
        p.wait()
        before = self.count_effects("effect")
        self.assertLess(before, n, "finished before the kill: make the run longer")
        res = subprocess.run(cmd, capture_output=True, timeout=300, env=env)
        self.assertEqual(res.returncode, 0, res.stderr)
        seen = collections.Counter()
        for line in self.effect_lines():
            kind, _, args = line.partition(" ")
            if kind == "effect":
                seen[json.loads(args)["seq"]] += 1
        self.assertEqual(len(seen), n)
        repeated = sum(c - 1 for c in seen.values())
        self.assertLessEqual(repeated, 12 * threads, "of %d calls before the kill" % before)

    @unittest.skipIf(SANITIZED, "sanitizers reserve terabytes of address space")
    def test_out_of_coroutine_stacks_stops_and_resumes(self):
        # Stacks that cannot be mapped are eddy's limit, not the action's
        # failure: with --on-error skip they dead-lettered good inputs, which
        # a rerun did not retry. Now eddy stops (exit 1), and resumes.
        import resource
        n = 3000
        recs = [{"key": "k%d" % i, "seq": i, "op": "sleep", "ms": 5} for i in range(n)]
        write_jsonl(self.inp, recs)
        cmd = self.cmd("--async-threads", "8", "--on-error", "skip", agent=TEST_AGENT)

        def small_address_space():
            resource.setrlimit(resource.RLIMIT_AS, (400 << 20, 400 << 20))
        # Few malloc arenas (each reserves 64 MiB of address space), so that
        # the stacks are what the limit stops; on a loaded machine a malloc
        # may still fail first, which stops eddy the same way.
        env = dict(os.environ, MALLOC_ARENA_MAX="2")
        res = subprocess.run(cmd, capture_output=True, timeout=120,
                             preexec_fn=small_address_space, env=env)
        if res.returncode == 0:
            self.skipTest("the address space limit left room for every stack here")
        self.assertEqual(res.returncode, 1, res.stderr)
        self.assertTrue(b"cannot map a coroutine stack (Cannot allocate memory)" in res.stderr or
                        res.stderr.endswith(b"eddy: out of memory\n"), res.stderr)
        self.assertFalse(os.path.exists(self.out + ".dead.jsonl") and
                         os.path.getsize(self.out + ".dead.jsonl") > 0)
        res = subprocess.run(cmd, capture_output=True, timeout=300)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(sorted(o["seq"] for o in read_jsonl(self.out)), list(range(n)))

    def test_line_being_appended_is_left_for_the_next_run(self):
        # A writer is in the middle of a line when eddy reaches the end: with
        # a state, that fragment was dead-lettered and the position moved past
        # it, so the completed line was lost (its rest dead-lettered next).
        cmd = self.cmd(agent=TEST_AGENT)
        with open(self.inp, "w") as f:
            for i in range(1, 4):
                f.write('{"key": "a", "op": "echo", "seq": %d}\n' % i)
            f.write('{"key": "a", "op": "ec')
        res = subprocess.run(cmd, capture_output=True, timeout=60)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn(b"note: line 4 of %s (22 bytes) has no newline and is not complete JSON"
                      % self.inp.encode(), res.stderr)
        with open(self.inp, "a") as f:
            f.write('ho", "seq": 4}\n{"key": "a", "op": "echo", "seq": 5}')
        res = subprocess.run(cmd, capture_output=True, timeout=60)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertNotIn(b"note:", res.stderr)  # a complete last line is taken
        self.assertEqual([o["seq"] for o in read_jsonl(self.out)], [1, 2, 3, 4, 5])
        self.assertFalse(os.path.exists(self.out + ".dead.jsonl") and
                         os.path.getsize(self.out + ".dead.jsonl") > 0)

    def test_long_line_being_appended_is_left_for_the_next_run(self):
        # A last line without a newline that is over --max-line-bytes was
        # dead-lettered at once, the position moved to its end: once the
        # line was finished, the state resumed in its middle (exit 3, "does
        # not start a line"). It is left unread like any line not complete
        # yet, and dead-lettered once, when its newline is there. The limit
        # is passed by the bytes the reader skipped (2016 and 16 MiB + 16),
        # or by one byte in the buffer (1025), which is not a '\r'.
        mib16 = 16 << 20
        for limit, pad in ((1024, 2000), (1024, 1009), (mib16, mib16)):
            state = self.path("state-%d-%d" % (limit, pad))
            for f in (self.out, self.out + ".dead.jsonl"):
                if os.path.exists(f):
                    os.unlink(f)
            head = '{"key":"b","p":"' + "x" * pad
            with open(self.inp, "w") as f:
                f.write('{"key": "a", "op": "echo", "seq": 1}\n' + head)
            extra = ["--max-line-bytes", str(limit)] if limit != mib16 else []
            cmd = self.cmd(*extra, agent=TEST_AGENT, state=state)
            res = subprocess.run(cmd, capture_output=True, timeout=60)
            self.assertEqual(res.returncode, 0, res.stderr)
            self.assertIn(b"note: line 2 of %s (%d bytes) has no newline and is over "
                          b"--max-line-bytes: it is left unread, and the next run with this "
                          b"state dead-letters it once it is complete"
                          % (self.inp.encode(), len(head)), res.stderr)
            self.assertFalse(os.path.exists(self.out + ".dead.jsonl") and
                             os.path.getsize(self.out + ".dead.jsonl") > 0)
            with open(self.inp, "a") as f:
                f.write('"}\n{"key": "a", "op": "echo", "seq": 3}\n')
            for _ in range(2):  # the second run finds nothing new
                res = subprocess.run(cmd, capture_output=True, timeout=60)
                self.assertEqual(res.returncode, 0, res.stderr)
                self.assertNotIn(b"note:", res.stderr)
            self.assertEqual([o["seq"] for o in read_jsonl(self.out)], [1, 3])
            self.assertEqual([(d["line"], d["reason"], d["detail"].split(";")[0])
                              for d in read_jsonl(self.out + ".dead.jsonl")],
                             [(2, "line too long", "line of %d bytes, over --max-line-bytes %d"
                               % (len(head) + 2, limit))])
        # Without a state such a line is dead-lettered at the input's end,
        # as before: no later run would take it.
        with open(self.inp, "w") as f:
            f.write('{"key": "a", "op": "echo", "seq": 1}\n{"key":"b","p":"' + "x" * 2000)
        os.unlink(self.out + ".dead.jsonl")
        res = subprocess.run([EDDY, "run", TEST_AGENT, "--input", self.inp, "--output", self.out,
                              "--no-progress", "--max-line-bytes", "1024"],
                             capture_output=True, timeout=60)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertNotIn(b"note:", res.stderr)
        self.assertEqual([(d["line"], d["reason"]) for d in read_jsonl(self.out + ".dead.jsonl")],
                         [(2, "line too long")])

    def test_lines_numbered_as_from_the_start_after_a_last_line_without_newline(self):
        # A resume right after a complete last line that had no newline read
        # the newline that ends it as an empty line, and counted it: every
        # later line number (dead letters, the note on a line left unread,
        # what inspect says was read) was one too high.
        def line(seq):
            return '{"key": "a", "op": "echo", "seq": %d}' % seq
        def parts(eol):
            return [line(1),                   # complete, no newline: taken as it is
                    "",                        # nothing new: the same position again
                    eol + "bad two\n" + line(3),  # ends line 1, then line 3 without newline
                    "\r\n" + line(4)[:10],     # ends line 3; line 4 is being appended
                    line(4)[10:] + "\nbad five\n"]
        inspect = [EDDY, "inspect", "--json", "--state"]
        # The first line's end also comes as CRLF: the resume still knows
        # the input by its first line (it was refused as another input).
        for stdin, eol in ((False, "\n"), (True, "\n"), (False, "\r\n"), (True, "\r\n")):
            state = self.path("state-%d-%d" % (stdin, len(eol)))
            with open(self.inp, "w") as f:
                pass
            if os.path.exists(self.out + ".dead.jsonl"):
                os.unlink(self.out + ".dead.jsonl")
            cmd = self.cmd(agent=TEST_AGENT, state=state)
            if stdin:
                cmd[cmd.index(self.inp)] = "-"
            for i, part in enumerate(parts(eol)):
                with open(self.inp, "a") as f:
                    f.write(part)
                with open(self.inp, "rb") as f:
                    res = subprocess.run(cmd, stdin=f, capture_output=True, timeout=60)
                self.assertEqual(res.returncode, 0, res.stderr)
                if i == 3:
                    self.assertIn(b"note: line 4 of ", res.stderr)
            self.assertEqual([o["seq"] for o in read_jsonl(self.out)], [1, 3, 4])
            self.assertEqual([(d["line"], d["raw"]) for d in read_jsonl(self.out + ".dead.jsonl")],
                             [(2, "bad two"), (5, "bad five")])
            info = json.loads(subprocess.run(inspect + [state], capture_output=True,
                                             timeout=60).stdout)
            self.assertEqual(info["source"]["line"], 5)
        # As a run from the start of the same input numbers them.
        fresh = self.path("fresh")
        res = subprocess.run(self.cmd(agent=TEST_AGENT, state=fresh), capture_output=True,
                             timeout=60)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual([d["line"] for d in read_jsonl(self.out + ".dead.jsonl")], [2, 5])
        info = json.loads(subprocess.run(inspect + [fresh], capture_output=True,
                                         timeout=60).stdout)
        self.assertEqual(info["source"]["line"], 5)

    def test_journal_is_pruned(self):
        write_jsonl(self.inp, [{"key": "k%d" % (i % 50), "seq": i, "v": 1} for i in range(2000)])
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        insp = subprocess.run([EDDY, "inspect", "--state", self.state, "--json"],
                              capture_output=True, timeout=60)
        self.assertEqual(insp.returncode, 0, insp.stderr)
        info = json.loads(insp.stdout)
        self.assertEqual(info["counts"]["journal"], 0)
        self.assertEqual(info["counts"]["pending"], 0)
        self.assertEqual(info["counts"]["outbox"], 0)
        self.assertEqual(info["counts"]["keys"], 50)
        self.assertLess(os.path.getsize(os.path.join(self.state, "eddy.db")), 1 << 20)

    # ------------------------------------------------------------ store errors

    def test_other_plan_is_refused(self):
        write_jsonl(self.inp, [{"key": "k", "seq": 1, "v": 1}])
        self.assertEqual(self.run_cmd().returncode, 0)
        other = self.run_cmd(agent=TEST_AGENT)
        self.assertEqual(other.returncode, 3)
        self.assertIn(b"another agent plan", other.stderr)

    def test_second_process_is_refused(self):
        fifo = self.path("fifo")
        os.mkfifo(fifo)
        holder = subprocess.Popen([EDDY, "run", DURABLE, "--input", fifo, "--output", self.out,
                                   "--state", self.state, "--no-progress"],
                                  stderr=subprocess.PIPE)
        try:
            w = os.open(fifo, os.O_WRONLY)  # lets the holder's open return
            deadline = time.time() + 30
            while not os.path.exists(os.path.join(self.state, "eddy.db")):
                self.assertLess(time.time(), deadline)
                time.sleep(0.02)
            write_jsonl(self.inp, [{"key": "k", "seq": 1, "v": 1}])
            second = self.run_cmd()
            self.assertEqual(second.returncode, 3)
            self.assertIn(b"another eddy uses state directory", second.stderr)
            # LOCK removed under the holder (the refusals that name LOCK say
            # to remove it): the directory's own lock still keeps a second
            # eddy out, which would run the holder's runs a second time.
            os.remove(os.path.join(self.state, "LOCK"))
            cmd = self.cmd()
            cmd[cmd.index(self.out)] = self.path("out2.jsonl")  # not kept out by the output's lock
            second = subprocess.run(cmd, capture_output=True, timeout=300)
            self.assertEqual(second.returncode, 3, second.stderr)
            self.assertIn(b"another eddy uses state directory %s (an eddy process, or another "
                          b"runtime in this process, holds the lock on the directory; "
                          % self.state.encode(), second.stderr)
            self.assertFalse(os.path.exists(os.path.join(self.state, "LOCK")))
            os.close(w)
            holder.wait(timeout=60)
            self.assertEqual(holder.returncode, 0)
            again = self.run_cmd()  # its lock gone with it: LOCK is made again
            self.assertEqual(again.returncode, 0, again.stderr)
            self.assertTrue(os.path.exists(os.path.join(self.state, "LOCK")))
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()

    def test_state_path_not_a_directory(self):
        bad = self.path("afile")
        open(bad, "w").close()
        write_jsonl(self.inp, [{"key": "k", "seq": 1, "v": 1}])
        res = self.run_cmd(state=bad)
        self.assertEqual(res.returncode, 3)
        self.assertIn(b"afile", res.stderr)
        # A missing parent is named; a parent that is there but refuses
        # (procfs answers ENOENT too) is not called missing.
        res = self.run_cmd(state=self.path("no/such/st"))
        self.assertEqual(res.returncode, 3)
        self.assertIn(b"directory %s does not exist" % self.path("no/such").encode(), res.stderr)
        if os.path.isdir("/proc/self"):
            res = self.run_cmd(state="/proc/eddy-state")
            self.assertEqual(res.returncode, 3)
            self.assertIn(b"cannot create state directory /proc/eddy-state: No such file",
                          res.stderr)

    def test_output_over_a_state_file_is_refused(self):
        # `--output st/eddy.db --state st` was taken: the lines went into
        # the database and the next run found it corrupted. An output or
        # dead-letter file that names one of the state's files (eddy.db,
        # eddy.db-*, LOCK), through any path, or a link to one of them, is
        # refused, exit 2, before anything is opened or made. Other files in
        # the state directory are the user's: an output kept beside the
        # state works and resumes.
        write_jsonl(self.inp, [{"key": "k", "seq": i, "v": i} for i in range(3)])
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        db = os.path.join(self.state, "eddy.db")
        with open(db, "rb") as f:
            before = f.read()
        files = sorted(os.listdir(self.state))
        os.symlink(self.state, self.path("link"))
        os.link(db, self.path("hard.jsonl"))
        wal = os.path.join(self.state, "eddy.db-wal")
        dl = os.path.join(self.state, "..", os.path.basename(self.state), "LOCK")
        cases = [
            (["--output", db], "output", db, "is a file of the state directory %s" % self.state),
            (["--output", wal], "output", wal, "is a file of the state directory"),
            (["--output", self.path("link/eddy.db")], "output", self.path("link/eddy.db"),
             "is a file of the state directory"),
            (["--dead-letter", dl], "dead-letter file", dl, "is a file of the state directory"),
            (["--output", self.path("hard.jsonl")], "output", self.path("hard.jsonl"),
             "is a file of the state directory %s under another name" % self.state),
        ]
        for extra, what, path, why in cases:
            cmd = self.cmd()
            i = cmd.index(extra[0]) if extra[0] in cmd else len(cmd)
            cmd[i:i + 2] = extra
            res = subprocess.run(cmd, capture_output=True, timeout=60)
            self.assertEqual(res.returncode, 2, res.stderr)
            self.assertIn(b"eddy: the %s (%s) %s" % (what.encode(), path.encode(), why.encode()),
                          res.stderr)
            self.assertIn(b"writing it would damage the state", res.stderr)
            self.assertEqual(sorted(os.listdir(self.state)), files)
            with open(db, "rb") as f:
                self.assertEqual(f.read(), before)
        # Through a link to the directory given as --state too.
        res = self.run_cmd(state=self.path("link"))
        self.assertEqual(res.returncode, 0, res.stderr)
        cmd = self.cmd(state=self.path("link"))
        cmd[cmd.index(self.out)] = os.path.join(self.state, "eddy.db-shm")
        res = subprocess.run(cmd, capture_output=True, timeout=60)
        self.assertEqual(res.returncode, 2, res.stderr)
        self.assertEqual(self.run_cmd().returncode, 0)
        self.assertEqual([o["seq"] for o in read_jsonl(self.out)], [0, 1, 2])
        # An output of the user's own beside the state: taken, and resumed.
        job = self.path("job")
        os.mkdir(job)
        beside = os.path.join(job, "out.jsonl")
        cmd = self.cmd(state=job)
        cmd[cmd.index(self.out)] = beside
        for extra in ([], [{"key": "k", "seq": 3, "v": 3}]):
            if extra:
                with open(self.inp, "a") as f:
                    f.write(json.dumps(extra[0]) + "\n")
            res = subprocess.run(cmd, capture_output=True, timeout=60)
            self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual([o["seq"] for o in read_jsonl(beside)], [0, 1, 2, 3])

    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("setpriv"),
                         "needs root to run eddy as another user")
    def test_read_only_state_directory(self):
        # Root ignores permissions, so eddy runs as nobody on a state directory
        # that root made and nobody may only read.
        write_jsonl(self.inp, [{"key": "k", "seq": 1, "v": 1}])
        self.assertEqual(self.run_cmd().returncode, 0)
        os.chmod(self.dir, 0o755)
        os.chmod(self.state, 0o755)
        os.chmod(self.inp, 0o644)
        os.chmod(self.out, 0o666)
        open(self.out + ".dead.jsonl", "a").close()  # no dead letters made none
        os.chmod(self.out + ".dead.jsonl", 0o666)  # only the state is out of reach
        os.chmod(os.path.join(self.state, "eddy.db"), 0o644)
        for parent in (os.path.dirname(self.dir),):
            if not os.stat(parent).st_mode & 0o001:
                self.skipTest("nobody cannot reach the test directory")
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] + self.cmd()
        res = subprocess.run(cmd, capture_output=True, timeout=60)
        if b"Permission denied" in res.stderr and b"eddy" not in res.stderr:
            self.skipTest("nobody cannot run the build's binary here")
        self.assertEqual(res.returncode, 3, res.stderr)
        self.assertIn(self.state.encode(), res.stderr)
        self.assertIn(b"ermission denied", res.stderr)

    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("setpriv"),
                         "needs root to run eddy as another user")
    def test_inspect_of_a_state_it_may_not_write(self):
        # A cleanly stopped state has no -wal or -shm file; a reader that may
        # not create one in the directory still reads the database.
        write_jsonl(self.inp, [{"key": "k", "seq": 1, "v": 1}])
        self.assertEqual(self.run_cmd().returncode, 0)
        self.assertEqual(sorted(os.listdir(self.state)), ["LOCK", "eddy.db"])
        os.chmod(self.dir, 0o755)
        os.chmod(self.state, 0o755)
        os.chmod(os.path.join(self.state, "eddy.db"), 0o644)
        if not os.stat(os.path.dirname(self.dir)).st_mode & 0o001:
            self.skipTest("nobody cannot reach the test directory")
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
               EDDY, "inspect", "--state", self.state, "--key", "k"]
        res = subprocess.run(cmd, capture_output=True, timeout=60)
        if b"Permission denied" in res.stderr and b"eddy" not in res.stderr:
            self.skipTest("nobody cannot run the build's binary here")
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn(b"key \"k\"", res.stdout)
        self.assertEqual(sorted(os.listdir(self.state)), ["LOCK", "eddy.db"])

    def as_owner(self, cmd):
        """cmd run as the owner of the test directory, whom file modes bind:
        nobody when the tests run as root (the directory is given to nobody),
        this user otherwise."""
        if os.geteuid() != 0:
            return subprocess.run(cmd, capture_output=True, timeout=60,
                                  env=dict(os.environ, EDDY_TEST_EFFECTS=self.effects))
        if not shutil.which("setpriv"):
            self.skipTest("needs setpriv to run eddy as another user than root")
        if not os.stat(os.path.dirname(self.dir)).st_mode & 0o001:
            self.skipTest("nobody cannot reach the test directory")
        for root, dirs, files in os.walk(self.dir):
            for name in [root] + [os.path.join(root, n) for n in dirs + files]:
                os.chown(name, 65534, 65534)
        res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + cmd,
                             capture_output=True, timeout=60,
                             env=dict(os.environ, EDDY_TEST_EFFECTS=self.effects))
        if b"Permission denied" in res.stderr and b"eddy:" not in res.stderr:
            self.skipTest("nobody cannot run the build's binary here")
        return res

    def test_read_only_database_is_refused_before_anything_runs(self):
        # SQLite opened a database its user may not write read-only without
        # a word: the run called its actions (side effects), failed at its
        # first commit, and left eddy.db-wal and eddy.db-shm with mode 0444,
        # so that once eddy.db was writable again the state still was not.
        write_jsonl(self.inp, [{"key": "k", "seq": 1, "v": 1}])
        res = self.as_owner(self.cmd())
        self.assertEqual(res.returncode, 0, res.stderr)
        effects = len(self.effect_lines())
        db = os.path.join(self.state, "eddy.db")
        write_jsonl(self.inp, [{"key": "k", "seq": 1, "v": 1}, {"key": "k", "seq": 2, "v": 2}])
        os.chmod(db, 0o444)
        res = self.as_owner(self.cmd())
        self.assertEqual(res.returncode, 3, res.stderr)
        self.assertIn(b"eddy: state database %s is not writable (Permission denied)" % db.encode(),
                      res.stderr)
        self.assertIn(b"stopped before running anything; make it writable (chmod u+w %s)"
                      % db.encode(), res.stderr)
        self.assertEqual(len(self.effect_lines()), effects)  # no action ran
        self.assertEqual(sorted(os.listdir(self.state)), ["LOCK", "eddy.db"])
        # An inspection reads it, and leaves no read-only WAL files either.
        res = self.as_owner([EDDY, "inspect", "--state", self.state])
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn(b"source: 1 line read", res.stdout)
        self.assertEqual(sorted(os.listdir(self.state)), ["LOCK", "eddy.db"])
        # Such files left by an older eddy are named, not the database.
        os.chmod(db, 0o644)
        for suffix, what in (("-shm", b"the state's shared-memory index"),
                             ("-wal", b"the state's write-ahead log")):
            path = db + suffix
            open(path, "w").close()
            os.chown(path, os.stat(db).st_uid, os.stat(db).st_gid)
            os.chmod(path, 0o444)
            res = self.as_owner(self.cmd())
            self.assertEqual(res.returncode, 3, res.stderr)
            self.assertIn(b"eddy: %s %s is not writable (Permission denied)"
                          % (what, path.encode()), res.stderr)
            self.assertEqual(len(self.effect_lines()), effects)
            os.remove(path)
        res = self.as_owner(self.cmd())
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual([o["seq"] for o in read_jsonl(self.out)], [1, 2])

    def test_store_write_failure_stops_cleanly_and_resumes(self):
        for sql, word in (("PRAGMA max_page_count=%d", b"full"),
                          ("PRAGMA query_only=1", b"read")):
            shutil.rmtree(self.state, ignore_errors=True)
            for f in (self.out, self.effects):
                if os.path.exists(f):
                    os.remove(f)
            write_jsonl(self.inp, [{"key": "k%d" % (i % 20), "seq": i, "v": i, "pad": "x" * 400}
                                   for i in range(400)])
            ok = self.run_cmd()  # creates the state with a few pages
            self.assertEqual(ok.returncode, 0, ok.stderr)
            pages = os.path.getsize(os.path.join(self.state, "eddy.db")) // 4096
            with open(self.inp, "a") as f:
                for i in range(400, 2400):
                    f.write(json.dumps({"key": "n%d" % i, "seq": i, "v": i, "pad": "y" * 400}))
                    f.write("\n")
            stmt = sql % (pages + 2) if "%d" in sql else sql
            bad = self.run_cmd(env={"EDDY_TEST_STORE_SQL": stmt})
            self.assertEqual(bad.returncode, 3, bad.stderr)
            self.assertIn(word, bad.stderr.lower())
            good = self.run_cmd()
            self.assertEqual(good.returncode, 0, good.stderr)
            outs = read_jsonl(self.out)
            self.assertEqual(sorted(o["seq"] for o in outs), list(range(2400)))

    @unittest.skipUnless(os.environ.get("EDDY_HOOKS", "ON").upper() in ("ON", "1", "TRUE", "YES"),
                         "built without EDDY_TEST_HOOKS")
    def test_store_failure_names_the_os_error(self):
        # A failed write of the WAL said "I/O error (disk I/O error)" or
        # "disk full" and nothing of what the system said.
        write_jsonl(self.inp, [{"key": "k%d" % i, "seq": i, "v": i} for i in range(20)])
        wal = os.path.join(self.state, "eddy.db-wal").encode()
        for fault, words in (("ENOSPC", b"disk full (database or disk is full): %s: No space "
                                        b"left on device" % wal),
                             ("EIO", b"I/O error (disk I/O error): %s: Input/output error" % wal)):
            shutil.rmtree(self.state, ignore_errors=True)
            res = self.run_cmd(env={"EDDY_FAULT": "store_wal:3:" + fault})
            self.assertEqual(res.returncode, 3, res.stderr)
            self.assertIn(b"eddy: state store failure while committing: commit failed on ", res.stderr)
            self.assertIn(words, res.stderr)

    def in_small_file_system(self, script, **env):
        """Run the shell script with a 4 MiB tmpfs mounted at $FS, in a
        mount namespace of its own (gone with it); skip where none can be
        made. Returns the script's exit code."""
        fs = self.path("fs")
        os.mkdir(fs)
        ns = ["unshare", "--mount", "--propagation", "private"]
        if os.geteuid() != 0:
            ns.insert(1, "--map-root-user")
        probe = subprocess.run(ns + ["sh", "-c", 'mount -t tmpfs -o size=4m tmpfs "$0"', fs],
                               capture_output=True, timeout=60)
        if not shutil.which("unshare") or probe.returncode != 0:
            self.skipTest("cannot mount a small file system here: %r" % probe.stderr)
        e = dict(os.environ, FS=fs, EDDY=EDDY, D=self.dir, **env)
        return subprocess.run(ns + ["sh", "-c", 'mount -t tmpfs -o size=4m tmpfs "$FS" && ' + script],
                              capture_output=True, timeout=120, env=e).returncode

    def test_full_file_system(self):
        # On a full file system, eddy inspect of a cleanly stopped state
        # exited 3 ("reading the format version: I/O error") and left an
        # eddy.db-wal and a stub eddy.db-shm there: SQLite could not give its
        # shared-memory index its size (ENOSPC). Without a WAL the database
        # file holds everything, and is read alone; a run says ENOSPC.
        write_jsonl(self.inp, [{"key": "k%d" % (i % 3), "seq": i, "v": i} for i in range(10)])
        rc = self.in_small_file_system(
            '"$EDDY" run "$AGENT" --input "$D/in.jsonl" --output "$D/out.jsonl" --state "$FS/st" '
            '--no-progress --quiet || exit 10; '
            'dd if=/dev/zero of="$FS/filler" bs=4096 2>/dev/null; '
            '"$EDDY" inspect --state "$FS/st" --key k1 >"$D/inspect.out" 2>"$D/inspect.err"; '
            'echo $? >"$D/inspect.rc"; ls "$FS/st" >"$D/ls"; '
            '"$EDDY" run "$AGENT" --input "$D/in.jsonl" --output "$D/out.jsonl" --state "$FS/st" '
            '--no-progress --quiet 2>"$D/run.err"; echo $? >"$D/run.rc"',
            AGENT=DURABLE, EDDY_TEST_EFFECTS=self.effects)
        self.assertEqual(rc, 0)

        def read(name):
            with open(self.path(name), "rb") as f:
                return f.read()
        self.assertEqual(read("inspect.rc"), b"0\n", read("inspect.err"))
        self.assertIn(b"source: 10 lines read", read("inspect.out"))
        self.assertIn(b'"count":3,"sum":12', read("inspect.out").replace(b" ", b""))
        self.assertEqual(read("ls").split(), [b"LOCK", b"eddy.db"])
        self.assertEqual(read("run.rc"), b"3\n", read("run.err"))
        self.assertIn(b"reading the schema: I/O error (disk I/O error): %s/st/eddy.db-shm: No space "
                      b"left on device" % self.path("fs").encode(), read("run.err"))

    # ------------------------------------------------------------ inspect

    def test_inspect_beside_a_running_eddy(self):
        """eddy inspect reads the state while eddy writes it: it takes no
        lock, and each commit's WAL frames are in the file before SQLite
        makes them visible (store/walvfs.c gathers them into one write).
        Every inspection succeeds and sees a consistent state: pending
        inputs (those of the runs in flight and those waiting behind them)
        within --max-in-flight + --max-pending, the reading position only
        moving on."""
        n = 1500 if not SANITIZED else 400
        write_jsonl(self.inp, [{"key": "k%d" % (i % 300), "seq": i, "v": 1, "ms": 4}
                               for i in range(n)])
        e = dict(os.environ, EDDY_TEST_EFFECTS=self.effects)
        proc = subprocess.Popen(self.cmd("--max-in-flight", "32", "--max-pending", "8",
                                         "--async-threads", "16", "--quiet"),
                                stderr=subprocess.PIPE, env=e)
        seen, last_line = 0, 0
        try:
            while proc.poll() is None:
                insp = subprocess.run([EDDY, "inspect", "--state", self.state, "--json"],
                                      capture_output=True, timeout=60)
                if insp.returncode != 0 and (b"no eddy state here" in insp.stderr):
                    continue  # not created yet, or its tables not committed yet
                self.assertEqual(insp.returncode, 0, insp.stderr)
                info = json.loads(insp.stdout)
                self.assertLessEqual(info["counts"]["pending"], 32 + 8, info["counts"])
                # One snapshot: the counts are those of the lists shown.
                self.assertEqual(info["counts"]["journal"], len(info["journal"]))
                self.assertEqual(info["counts"]["pending"],
                                 sum(k["pending"] for k in info["in_flight"]))
                self.assertGreaterEqual(info["source"]["line"], last_line)
                last_line = info["source"]["line"]
                seen += 1
        finally:
            if proc.poll() is None:
                proc.kill()
            err = proc.communicate(timeout=120)[1]
        self.assertEqual(proc.returncode, 0, err)
        self.assertGreater(seen, 0, "eddy finished before the first inspection")
        self.assertEqual(sorted(o["seq"] for o in read_jsonl(self.out)), list(range(n)))

    def test_inspect_shows_in_flight_work(self):
        flag = self.flag("crash")
        write_jsonl(self.inp, [{"key": "k1", "seq": 0, "v": 5},
                               {"key": "k2", "op": "durable_error", "seq": 1, "crash_flag": flag},
                               {"key": "k2", "seq": 2, "v": 7}])
        first = self.run_cmd()
        self.assertEqual(first.returncode, 137)
        insp = subprocess.run([EDDY, "inspect", "--state", self.state, "--json"],
                              capture_output=True, timeout=60)
        self.assertEqual(insp.returncode, 0, insp.stderr)
        info = json.loads(insp.stdout)
        self.assertEqual(info["source"]["line"], 3)
        inflight = {k["key"]: k for k in info["in_flight"]}
        self.assertIn("k2", inflight)
        self.assertEqual(inflight["k2"]["pending"], 2)
        # The key field the state was filled with, and the one run counter
        # (past every run in flight).
        self.assertEqual(info["key_field"], "key")
        self.assertGreater(info["next_run"], max(k["seq"] for k in info["in_flight"]))
        one = subprocess.run([EDDY, "inspect", "--state", self.state, "--key", '"k2"', "--json"],
                             capture_output=True, timeout=60)
        self.assertEqual(one.returncode, 0, one.stderr)
        k2 = json.loads(one.stdout)["key"]
        self.assertTrue(any(j["fn_id"] == "effect" and j["status"] == "error"
                            for j in k2["journal"]))
        self.assertEqual(k2["next_seq"], info["next_run"])
        # With another key, the top-level journal is still every run's.
        other = subprocess.run([EDDY, "inspect", "--state", self.state, "--key", '"k1"', "--json"],
                               capture_output=True, timeout=60)
        self.assertEqual(other.returncode, 0, other.stderr)
        other = json.loads(other.stdout)
        self.assertTrue(all(j["key"] == "k1" for j in other["key"]["journal"]))
        self.assertEqual(other["journal"], info["journal"])
        self.assertTrue(any(j["key"] == "k2" for j in other["journal"]))
        text = subprocess.run([EDDY, "inspect", "--state", self.state], capture_output=True,
                              timeout=60)
        self.assertEqual(text.returncode, 0, text.stderr)
        self.assertIn(b"k2", text.stdout)
        self.assertIn(b"key field: key\n", text.stdout)
        self.assertEqual([a["name"] for a in info["plan"]][:1], ["step1"])
        self.assertIn(b"plan: step1 (InputEvent)", text.stdout)
        self.assertIn(b"next run number: %d (one counter for all keys)" % info["next_run"],
                      text.stdout)
        # The text with --key once kept only the key's journal under the
        # label of the state's ("journal: 0 entries" beside "journal entries:
        # 1"). It gives the state's count, and the key's entries alone (a
        # state may hold millions: every run's was 2 KB an entry in memory).
        n = len(info["journal"])
        self.assertGreater(n, 0)
        one = subprocess.run([EDDY, "inspect", "--state", self.state, "--key", '"k1"'],
                             capture_output=True, timeout=60)
        self.assertEqual(one.returncode, 0, one.stderr)
        lines = one.stdout.decode().splitlines()
        self.assertIn("journal: %d entr%s (this key's below; without --key, every run's)" % (
            n, "y" if n == 1 else "ies"), lines)
        self.assertFalse(any(ln.startswith('  "k2" run ') for ln in lines), one.stdout)
        self.assertTrue(any(ln.startswith('    "k1" run ') for ln in lines), one.stdout)
        mine = lines.index('key "k1"')
        self.assertIn("  journal of this key: %d entr%s" % (
            len(other["key"]["journal"]), "y" if len(other["key"]["journal"]) == 1 else "ies"),
            lines[mine:])


    def test_inspect_text_and_json_count_the_same_lines(self):
        # The text said "resumes at line 4" where --json said "line": 3:
        # both now give the lines read, and the bytes they take.
        write_jsonl(self.inp, [{"key": "k%d" % i, "seq": i, "v": i} for i in range(3)])
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        insp = subprocess.run([EDDY, "inspect", "--state", self.state, "--json"],
                              capture_output=True, timeout=60)
        self.assertEqual(insp.returncode, 0, insp.stderr)
        src = json.loads(insp.stdout)["source"]
        self.assertEqual((src["line"], src["offset"]), (3, os.path.getsize(self.inp)))
        text = subprocess.run([EDDY, "inspect", "--state", self.state], capture_output=True,
                              timeout=60)
        self.assertEqual(text.returncode, 0, text.stderr)
        self.assertIn(b"\nsource: 3 lines read (%d bytes)\n" % src["offset"], text.stdout)

    def test_inspect_says_a_stream_has_no_committed_length(self):
        # With the dead letters on stderr appended to a log of 5000 bytes
        # (2>>errlog), inspect said "dead letters: 5000 bytes" as if eddy had
        # committed them: a stream's position is where it stood.
        write_jsonl(self.inp, [{"key": "k", "seq": 0, "v": 0}])
        errlog = self.path("errlog")
        with open(errlog, "wb") as f:
            f.write(b"x" * 4999 + b"\n")
        with open(errlog, "ab") as err, open(os.devnull, "wb") as null:
            res = subprocess.run([EDDY, "run", DURABLE, "--input", self.inp, "--state", self.state,
                                  "--no-progress", "--quiet"], stdout=null, stderr=err,
                                 timeout=60, env=dict(os.environ, EDDY_TEST_EFFECTS=self.effects))
        self.assertEqual(res.returncode, 0)
        with open(errlog, "rb") as f:
            self.assertEqual(f.read(), b"x" * 4999 + b"\n")  # no dead letter
        insp = subprocess.run([EDDY, "inspect", "--state", self.state, "--json"],
                              capture_output=True, timeout=60)
        report = json.loads(insp.stdout)
        self.assertEqual((report["output_stream"], report["dead_letter_stream"]), (True, True))
        text = subprocess.run([EDDY, "inspect", "--state", self.state], capture_output=True,
                              timeout=60).stdout
        self.assertIn(b"\noutput: standard output (a stream: at-least-once, no committed length); "
                      b"dead letters: standard error (a stream: at-least-once, no committed "
                      b"length)\n", text)
        self.assertNotIn(b"5000", text)
        # A file's length is what the state committed.
        shutil.rmtree(self.state)
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        report = json.loads(subprocess.run([EDDY, "inspect", "--state", self.state, "--json"],
                                           capture_output=True, timeout=60).stdout)
        self.assertEqual((report["output_stream"], report["dead_letter_stream"]), (False, False))
        text = subprocess.run([EDDY, "inspect", "--state", self.state], capture_output=True,
                              timeout=60).stdout
        self.assertIn(b"\noutput: %d bytes committed; dead letters: 0 bytes committed\n"
                      % os.path.getsize(self.out), text)

    def test_inspect_names_the_string_key_for_a_number(self):
        # --key 42 looks up the number 42; the key read was the string "42",
        # and the refusal only said how keys are written.
        write_jsonl(self.inp, [{"key": "42", "seq": 0, "v": 5}])
        first = self.run_cmd()
        self.assertEqual(first.returncode, 0, first.stderr)
        res = subprocess.run([EDDY, "inspect", "--state", self.state, "--key", "42"],
                             capture_output=True, timeout=60)
        self.assertNotEqual(res.returncode, 0)
        self.assertIn(b"key 42 is not in %s, but the string \"42\" is: give --key '\"42\"'"
                      % self.state.encode(), res.stderr)
        res = subprocess.run([EDDY, "inspect", "--state", self.state, "--key", "43"],
                             capture_output=True, timeout=60)
        self.assertIn(b"key 43 is not in %s: no short-term memory" % self.state.encode(),
                      res.stderr)
        # An object, an array or null can never be a key (such an input is
        # dead-lettered).
        for never, what in (('{"a":1}', b"an object"), ("[1]", b"an array"), ("null", b"null")):
            res = subprocess.run([EDDY, "inspect", "--state", self.state, "--key", never],
                                 capture_output=True, timeout=60)
            self.assertNotEqual(res.returncode, 0)
            self.assertIn(b"key %s is not in %s, nor can it be: an input whose key is %s is "
                          b"dead-lettered" % (never.encode(), self.state.encode(), what),
                          res.stderr)
        res = subprocess.run([EDDY, "inspect", "--state", self.state, "--key", '"42"'],
                             capture_output=True, timeout=60)
        self.assertEqual(res.returncode, 0, res.stderr)


class CrashHarness(EddyTest):
    """Kill eddy with SIGKILL at random moments, restart it each time, and
    check that the outcome is exactly that of a run without crashes."""

    def test_random_kills(self):
        chunk, n_keys = (1500, 300) if not SANITIZED else (800, 150)
        self.random_kills(DURABLE, chunk, n_keys)

    @needs_python
    def test_random_kills_python(self):
        # The same harness on the Python twin of the agent (tests/agents/durable_agent.py).
        chunk, n_keys = (600, 150) if not SANITIZED else (300, 100)
        self.random_kills(os.path.join(SOURCE, "tests", "agents", "durable_agent.py"), chunk,
                          n_keys)

    def random_kills(self, agent, chunk, n_keys, kills=20):
        rnd = random.Random(int(os.environ.get("EDDY_CRASH_SEED", "7")))
        recs = []

        def add_chunk():
            base = len(recs)
            more = [{"key": "k%03d" % rnd.randrange(n_keys), "seq": base + i,
                     "v": rnd.randrange(1000), "ms": 2} for i in range(chunk)]
            recs.extend(more)
            with open(inp, "a") as f:
                for r in more:
                    f.write(json.dumps(r) + "\n")

        inp = self.path("in.jsonl")
        add_chunk()
        out = self.path("out.jsonl")
        state = self.path("state")
        effects = self.path("effects.txt")
        env = dict(os.environ, EDDY_TEST_EFFECTS=effects)
        cmd = [EDDY, "run", agent, "--input", inp, "--output", out, "--state", state,
               "--no-progress", "--async-threads", "4", "--max-in-flight", "32"]
        done_kills = 0
        while done_kills < kills:
            errpath = self.path("stderr.txt")
            with open(errpath, "wb") as errf:
                p = subprocess.Popen(cmd, env=env, stderr=errf)
                time.sleep(rnd.uniform(0.02, 0.2))
                killed = p.poll() is None
                if killed:
                    p.send_signal(signal.SIGKILL)
                rc = p.wait()
            if killed and rc == -signal.SIGKILL:
                done_kills += 1
            else:
                with open(errpath, "rb") as errf:
                    self.assertEqual(rc, 0, errf.read().decode(errors="replace"))
                # Finished before enough kills: the input grows, and the next
                # run resumes from the committed source position.
                add_chunk()
        last = subprocess.run(cmd, env=env, capture_output=True, timeout=300)
        self.assertEqual(last.returncode, 0, last.stderr)
        n_inputs = len(recs)

        # Reference: the same input without crashes, in memory.
        ref_out = self.path("ref.jsonl")
        ref = subprocess.run([EDDY, "run", agent, "--input", inp, "--output", ref_out,
                              "--no-progress", "--async-threads", "8"], capture_output=True,
                             timeout=300)
        self.assertEqual(ref.returncode, 0, ref.stderr)

        ref_outs = read_jsonl(ref_out)
        outs = read_jsonl(out)
        # (a) every output exactly once, per-key order kept, same content.
        self.assertEqual(len(outs), n_inputs)
        self.assertEqual(sorted(json.dumps(o, sort_keys=True) for o in outs),
                         sorted(json.dumps(o, sort_keys=True) for o in ref_outs))
        per_key = collections.defaultdict(list)
        for o in outs:
            per_key[o["key"]].append(o["seq"])
        for k, seqs in per_key.items():
            self.assertEqual(seqs, sorted(seqs), "order of key %s broken" % k)
        # (c) short-term memory as if no crash happened: the count and sum each
        # output reports follow from all earlier inputs of its key.
        expect = collections.defaultdict(lambda: [0, 0])
        for r in recs:
            e = expect[r["key"]]
            e[0] += 1
            e[1] += r["v"]
            r["_count"], r["_sum"] = e[0], e[1]
        by_seq = {o["seq"]: o for o in outs}
        for r in recs:
            o = by_seq[r["seq"]]
            self.assertEqual((o["count"], o["sum"]), (r["_count"], r["_sum"]))
        insp = subprocess.run([EDDY, "inspect", "--state", state, "--json", "--key",
                               recs[0]["key"]], capture_output=True, timeout=60)
        self.assertEqual(insp.returncode, 0, insp.stderr)
        mem = json.loads(insp.stdout)["key"]["short_term_memory"]
        self.assertEqual((mem["count"], mem["sum"]), tuple(expect[recs[0]["key"]]))
        # (b) a call whose result was committed never runs again: only calls in
        # flight at a kill (at most max-in-flight per kill) can repeat.
        with open(effects) as f:
            counts = collections.Counter(line.rstrip("\n") for line in f)
        self.assertEqual(len(counts), 2 * n_inputs)
        extra = sum(c - 1 for c in counts.values())
        self.assertTrue(all(c <= 1 + done_kills for c in counts.values()))
        self.assertLessEqual(extra, 32 * done_kills)
        print("crash harness (%s): %d kills, %d inputs, %d repeated calls of %d"
              % (os.path.basename(agent), done_kills, n_inputs, extra, 2 * n_inputs))


if __name__ == "__main__":
    unittest.main(verbosity=2)
