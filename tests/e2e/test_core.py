"""End-to-end tests of the core runtime: scheduling, memory, async calls,
errors and bad input, through the eddy binary and the test agent."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from eddytest import (EDDY, PYTHON, SANITIZED, SOURCE, TEST_AGENT, EddyTest,  # noqa: E402
                      needs_python, write_jsonl)


def by_key(outputs):
    keys = {}
    for o in outputs:
        keys.setdefault(o["key"], []).append(o)
    return keys


class CoreTest(EddyTest):
    def test_chain_gives_x_plus_one_times_two(self):
        recs = [{"key": "k%d" % (i % 5), "op": "chain", "x": i, "seq": i} for i in range(100)]
        res = self.run_eddy(recs)
        self.assertOk(res)
        outs = res.outputs()
        self.assertEqual(len(outs), 100)
        self.assertEqual(sorted((o["seq"], o["x"]) for o in outs),
                         [(i, (i + 1) * 2) for i in range(100)])
        # Event ids are 16 hex digits and distinct.
        ids = {o["event_id"] for o in outs}
        self.assertEqual(len(ids), 100)
        self.assertTrue(all(len(i) == 16 for i in ids))
        self.assertIn(b"100 inputs", res.stderr)

    def test_event_ids_are_deterministic(self):
        recs = [{"key": "k%d" % (i % 3), "op": "chain", "x": i, "seq": i} for i in range(30)]
        a = self.run_eddy(recs)
        self.assertOk(a)
        first = sorted((o["seq"], o["event_id"]) for o in a.outputs())
        b = self.run_eddy(recs, "--async-threads", "1")
        self.assertOk(b)
        self.assertEqual(first, sorted((o["seq"], o["event_id"]) for o in b.outputs()))

    def test_same_key_in_order_one_at_a_time(self):
        # Each run sleeps; runs of one key must not overlap and keep input order.
        recs = [{"key": "same", "op": "sleep", "ms": 5, "seq": i} for i in range(20)]
        res = self.run_eddy(recs, "--async-threads", "8")
        self.assertOk(res)
        outs = res.outputs()
        self.assertEqual([o["seq"] for o in outs], list(range(20)))
        for a, b in zip(outs, outs[1:]):
            self.assertLessEqual(a["end"], b["start"], "runs of one key overlapped")

    def test_different_keys_overlap(self):
        n = 16
        recs = [{"key": "k%d" % i, "op": "sleep", "ms": 100, "seq": i} for i in range(n)]
        t0 = time.monotonic()
        res = self.run_eddy(recs, "--async-threads", str(n))
        elapsed = time.monotonic() - t0
        self.assertOk(res)
        outs = res.outputs()
        self.assertEqual(len(outs), n)
        # Overlap is checked on the calls' own clocks, not on wall time.
        latest_start = max(o["start"] for o in outs)
        earliest_end = min(o["end"] for o in outs)
        self.assertLess(latest_start, earliest_end, "calls of different keys did not overlap")
        self.assertLess(elapsed, n * 0.1)

    def hot_then_cold(self, hot):
        """hot inputs of key "hot", each a 20 ms call, then one input each of
        keys cold0..cold2 (no sleep)."""
        return ([{"key": "hot", "op": "sleep", "ms": 20, "seq": i} for i in range(hot)] +
                [{"key": "cold%d" % i, "op": "sleep", "ms": 0, "seq": hot + i}
                 for i in range(3)])

    def test_busy_key_backlog_does_not_hold_other_keys(self):
        # --max-in-flight counted every input admitted and not finished,
        # those waiting in a key's FIFO too: 100 inputs of one key filled 20
        # slots, and the cold keys behind them were admitted only once 81 hot
        # runs had ended (~1.7 s; rule 3: no key starves another). It now
        # bounds the runs in flight; the hot key's backlog waits in its FIFO
        # (--max-pending) and the cold keys start at once.
        for extra in ([], ["--state", self.path("st")]):
            res = self.run_eddy(self.hot_then_cold(100), "--max-in-flight", "20",
                                "--async-threads", "4", *extra)
            self.assertOk(res)
            outs = res.outputs()
            self.assertEqual(len(outs), 103, extra)
            hot = [o["seq"] for o in outs if o["seq"] < 100]
            self.assertEqual(hot, list(range(100)), extra)  # the key's inputs in order
            cold_at = [i for i, o in enumerate(outs) if o["seq"] >= 100]
            # Each cold run takes no time; the hot key's take 20 ms each, one
            # after the other: the cold outputs come among the first few
            # (before this change at 81-83).
            self.assertLess(max(cold_at), 10, (extra, cold_at))

    def test_max_pending_bounds_a_keys_backlog(self):
        # With --max-pending 5, the hot key's first input runs and five wait:
        # admission then stops (in input order) until the hot key's runs
        # drain its FIFO, so cold0 (line 61) is admitted only once 60 - 1 - 5
        # hot runs have ended, and the cold outputs come after those.
        res = self.run_eddy(self.hot_then_cold(60), "--max-in-flight", "20",
                            "--max-pending", "5", "--async-threads", "4")
        self.assertOk(res)
        outs = res.outputs()
        self.assertEqual([o["seq"] for o in outs if o["seq"] < 60], list(range(60)))
        cold_at = [i for i, o in enumerate(outs) if o["seq"] >= 60]
        self.assertEqual(len(cold_at), 3)
        self.assertGreaterEqual(min(cold_at), 54, cold_at)

    def progress_counts(self, res):
        """(inputs read, runs in flight, pending, outputs) of each progress line."""
        line_re = re.compile(rb"eddy: (\d+) inputs read, (\d+) in flight, (\d+) pending, "
                             rb"(\d+) outputs, ")
        counts = [tuple(int(g) for g in m.groups())
                  for m in map(line_re.match, (p.strip() for p in res.stderr.split(b"\r")))
                  if m is not None]
        self.assertTrue(counts, res.stderr)
        return counts

    def test_progress_counts_runs_and_pending_inputs(self):
        # 80 inputs of one key, 20 ms each (1.6 s: progress lines at 0.5, 1
        # and 1.5 s), then three cold keys. "in flight" counts runs, the hot
        # key's one; "pending" the inputs waiting behind it: with
        # --max-pending 5 never more than 5, and admission waits for them
        # (inputs read stay within the outputs + 1 run + 5 pending).
        res = self.run_eddy(self.hot_then_cold(80), "--max-in-flight", "20", "--max-pending",
                            "5", "--progress")
        self.assertOk(res)
        for read, runs, pending, outputs in self.progress_counts(res):
            self.assertEqual(runs, 1, res.stderr)
            self.assertLessEqual(pending, 5, res.stderr)
            self.assertLessEqual(read, outputs + runs + pending, res.stderr)
        # By default the backlog waits in the FIFO, taking no run slot: at the
        # first line (0.5 s) the cold runs are done and most hot inputs wait.
        res = self.run_eddy(self.hot_then_cold(80), "--max-in-flight", "20", "--progress")
        self.assertOk(res)
        read, runs, pending, outputs = self.progress_counts(res)[0]
        self.assertEqual((read, runs), (83, 1), res.stderr)
        self.assertLessEqual(read, outputs + runs + pending, res.stderr)
        self.assertGreater(pending, 20, res.stderr)

    def test_max_pending_option_is_checked(self):
        inp = self.path("in.jsonl")
        write_jsonl(inp, self.hot_then_cold(5))
        for bad in ("0", "-1", "x", "1.5", ""):
            proc = subprocess.run([EDDY, "run", TEST_AGENT, "--input", inp, "--output",
                                   self.path("o.jsonl"), "--max-pending=" + bad],
                                  capture_output=True, timeout=30)
            self.assertEqual(proc.returncode, 2, (bad, proc.stderr))
            self.assertIn(b"invalid value '%s' for option 'max-pending': expected a whole "
                          b"number of at least 1" % bad.encode(), proc.stderr)
            self.assertFalse(os.path.exists(self.path("o.jsonl")), bad)
        # The least accepted: one input waits behind a run at a time.
        res = self.run_eddy(self.hot_then_cold(5), "--max-pending", "1", "--max-in-flight", "1")
        self.assertOk(res)
        self.assertEqual(sorted(o["seq"] for o in res.outputs()), list(range(8)))
        proc = subprocess.run([EDDY, "run", "--help"], capture_output=True, timeout=30)
        self.assertIn(b"--max-pending N", proc.stdout)
        self.assertIn(b"(default: 10000)", proc.stdout.split(b"--max-pending N", 1)[1])

    def test_chained_async_calls(self):
        recs = [{"key": "k%d" % (i % 4), "op": "chain_async", "x": i, "seq": i, "ms": 1}
                for i in range(40)]
        res = self.run_eddy(recs)
        self.assertOk(res)
        self.assertEqual(sorted((o["seq"], o["x"]) for o in res.outputs()),
                         [(i, i + 3) for i in range(40)])
        self.assertIn(b"120 async calls", res.stderr)

    def test_async_across_many_keys(self):
        recs = [{"key": i, "op": "sleep", "ms": 0, "seq": i} for i in range(5000)]
        res = self.run_eddy(recs)
        self.assertOk(res)
        outs = res.outputs()
        self.assertEqual(sorted(o["seq"] for o in outs), list(range(5000)))
        self.assertEqual(sorted(o["key"] for o in outs), list(range(5000)))

    def test_several_calls_in_flight_from_one_action(self):
        recs = [{"key": "k", "op": "many", "n": 8, "ms": 100, "seq": 0}]
        res = self.run_eddy(recs, "--async-threads", "8")
        self.assertOk(res)
        (out,) = res.outputs()
        self.assertEqual(out["n"], 8)
        # Eight 100 ms calls in flight at once take far less than 800 ms.
        self.assertLess(out["elapsed_us"], 500000)

    def test_fan_out_to_several_actions_overlaps(self):
        recs = [{"key": "k", "op": "fanout", "ms": 100, "seq": 0}]
        res = self.run_eddy(recs, "--async-threads", "4")
        self.assertOk(res)
        outs = res.outputs()
        self.assertEqual(sorted(o["which"] for o in outs), ["a", "b", "c"])
        self.assertLess(max(o["start"] for o in outs), min(o["end"] for o in outs))

    def test_memory_short_term_kept_sensory_cleared(self):
        recs = [{"key": "a" if i % 2 else "b", "op": "count", "seq": i} for i in range(10)]
        res = self.run_eddy(recs)
        self.assertOk(res)
        keys = by_key(res.outputs())
        self.assertEqual([o["count"] for o in keys["a"]], [1, 2, 3, 4, 5])
        self.assertEqual([o["count"] for o in keys["b"]], [1, 2, 3, 4, 5])
        self.assertTrue(all(not o["sensory_seen_before"] for o in res.outputs()))
        self.assertTrue(all(o["own_write"] == o["count"] for o in res.outputs()))

    def test_memory_paths(self):
        res = self.run_eddy([{"key": "m", "op": "memory", "seq": 0}])
        self.assertOk(res)
        (o,) = res.outputs()
        self.assertEqual(o["set_nested"], 0)
        self.assertEqual(o["set_under_value"], -5)  # EDDY_EPATH
        self.assertEqual(o["set_over_object"], -5)
        self.assertEqual(o["new_object"], 0)
        self.assertEqual(o["bad_path"], -2)  # EDDY_EINVAL
        self.assertEqual(o["exists_abc"], 1)
        self.assertEqual(o["exists_missing"], 0)
        self.assertEqual(o["fields_a"], ["b", "n"])
        self.assertEqual(o["get_a"], {"b": {"c": 1}, "n": {}})

    def test_thread_confinement(self):
        res = self.run_eddy([{"key": "t", "op": "wrongthread", "seq": 0}])
        self.assertOk(res)
        (o,) = res.outputs()
        self.assertEqual(o["send"], -3)  # EDDY_EWRONGTHREAD
        self.assertEqual(o["fail"], -3)
        self.assertTrue(o["key_null"])
        self.assertTrue(o["stm_null"])

    def test_unhandled_events_counted(self):
        res = self.run_eddy([{"key": "u", "op": "unhandled", "seq": i} for i in range(3)])
        self.assertOk(res)
        self.assertEqual(len(res.outputs()), 3)
        self.assertIn(b"3 unhandled events (Nobody), ", res.stderr)
        self.assertIn(b" 0 unhandled events, ", self.run_eddy([{"key": "u", "seq": 0}]).stderr)

    def test_unhandled_event_types_named(self):
        # The summary names the first three types met, and "..." for more.
        types = ["Foo", "Bar", "Foo", "Baz", "Qux", "Quux"]
        res = self.run_eddy([{"key": "u", "op": "unhandled", "type": t, "seq": i}
                             for i, t in enumerate(types)])
        self.assertOk(res)
        self.assertIn(b"6 unhandled events (Foo, Bar, Baz, ...), ", res.stderr)

    def test_agent_with_no_input_event_action_is_refused(self):
        # Every input would be dropped, and eddy said so only as "unhandled
        # events" in the summary, with exit 0.
        agent = os.path.join(os.path.dirname(TEST_AGENT), "noinput.so")
        res = self.run_eddy([{"key": "u", "op": "echo", "seq": 1}], agent=agent)
        self.assertEqual(res.rc, 2, res.stderr)
        err = res.stderr.decode()
        self.assertIn("noinput.so: no action listens to InputEvent", err)
        self.assertIn("its actions listen to 'Foo', 'Bar' (", err)
        self.assertFalse(os.path.exists(res.out_path))

    def test_action_error_stops_by_default(self):
        recs = [{"key": "a", "op": "echo", "seq": 0}, {"key": "b", "op": "fail", "seq": 1},
                {"key": "c", "op": "echo", "seq": 2}]
        res = self.run_eddy(recs)
        self.assertEqual(res.rc, 1)
        err = res.stderr.decode()
        self.assertIn("dispatch", err)
        self.assertIn('"b"', err)
        self.assertIn("InputEvent", err)
        self.assertIn("the input asked to fail", err)
        self.assertIn("ValueError", err)

    def test_failure_reason_comes_after_the_summary(self):
        # The summary is printed first, the reason the run failed last, so
        # that it is the line the user sees at the bottom: with or without a
        # progress line, with or without a state, for an action's failure
        # and an output's. The exit code is the failure's. (The first input
        # takes 0.7 s, so that a progress line is shown before the failure.)
        inp = self.path("in.jsonl")
        write_jsonl(inp, [{"key": "b", "op": "sleep", "ms": 700, "seq": 0},
                          {"key": "b", "op": "fail", "seq": 1}])
        reason = (b'eddy: action \'dispatch\' failed for key "b" on InputEvent (input line 2): '
                  b'ValueError: the input asked to fail')
        cases = [(["--output", self.path("o1.jsonl")], reason),
                 (["--output", self.path("o2.jsonl"), "--progress"], reason),
                 (["--output", self.path("o3.jsonl"), "--state", self.path("st")], reason)]
        if os.path.exists("/dev/full"):
            cases.append((["--output", "/dev/full", "--on-error", "skip"],
                          b"eddy: cannot write to /dev/full: No space left on device"))
        for args, want in cases:
            proc = subprocess.run([EDDY, "run", TEST_AGENT, "--input", inp] + args,
                                  capture_output=True, timeout=60)
            self.assertEqual(proc.returncode, 1, (args, proc.stderr))
            lines = [l.split(b"\r")[-1] for l in proc.stderr.splitlines()]
            lines = [l for l in lines if l.strip()]
            self.assertEqual(lines[-1], want, (args, proc.stderr))
            self.assertTrue(lines[-2].startswith(b"eddy: 2 inputs, "), (args, proc.stderr))
            if "--progress" in args:
                self.assertIn(b"\reddy: 2 inputs read, ", proc.stderr)

    def test_action_error_from_async_call(self):
        res = self.run_eddy([{"key": "a", "op": "fail_async", "seq": 0}])
        self.assertEqual(res.rc, 1)
        self.assertIn("negative sleep", res.stderr.decode())

    def test_action_error_skip(self):
        recs = [{"key": "a", "op": "echo", "seq": 0}, {"key": "b", "op": "fail", "seq": 1},
                {"key": "b", "op": "echo", "seq": 2}, {"key": "c", "op": "echo", "seq": 3}]
        res = self.run_eddy(recs, "--on-error", "skip")
        self.assertOk(res)
        self.assertEqual(sorted(o["seq"] for o in res.outputs()), [0, 2, 3])
        (d,) = res.dead()
        self.assertEqual(d["reason"], "action failed")
        self.assertEqual(d["line"], 2)
        self.assertEqual(d["key"], "b")
        self.assertEqual(d["action"], "dispatch")
        self.assertEqual(d["error"]["type"], "ValueError")
        self.assertEqual(d["input"]["seq"], 1)

    def test_event_cycle_stops_at_max_run_actions(self):
        # A run of "bounce" with n starts n + 2 actions: dispatch and n + 1 pings.
        recs = [{"key": "a", "op": "bounce", "n": 48, "seq": 1},
                {"key": "b", "op": "bounce", "n": -1, "seq": 2},
                {"key": "d", "op": "bounce", "n": 49, "seq": 3},
                {"key": "c", "op": "echo", "seq": 4}]
        res = self.run_eddy(recs, "--on-error", "skip", "--max-run-actions", "50")
        self.assertOk(res)
        self.assertEqual(sorted(o["seq"] for o in res.outputs()), [1, 4])
        self.assertEqual([o.get("pings") for o in res.outputs() if o["seq"] == 1], [48])
        dead = res.dead()
        self.assertEqual(sorted(d["key"] for d in dead), ["b", "d"])
        for d in dead:
            self.assertEqual(d["reason"], "action failed")
            self.assertEqual(d["action"], "ping")
            self.assertEqual(d["error"]["type"], "limit")
            self.assertIn("--max-run-actions (50 action executions)", d["error"]["message"])
        # By default a cycle stops the run at 100000, as a failed action does.
        res = self.run_eddy(recs[1:2])
        self.assertEqual(res.rc, 1, res.stderr)
        self.assertIn(b"action 'ping' failed for key \"b\" on Ping (input line 1): limit: the run "
                      b"reached --max-run-actions (100000 action executions)", res.stderr)
        # The action that passes the limit fails before anything it did is
        # released: Ping 48 would start the 51st action; its output and its
        # memory write are discarded with it, those of Pings 0-47 stand.
        st = self.path("st")
        res = self.run_eddy([{"key": "n", "op": "bounce", "n": -1, "noisy": 1, "seq": 9}],
                            "--on-error", "skip", "--max-run-actions", "50", "--state", st)
        self.assertOk(res)
        self.assertEqual(sorted(o["ping"] for o in res.outputs()), list(range(48)))
        proc = subprocess.run([EDDY, "inspect", "--state", st, "--key", "n", "--json"],
                              capture_output=True, timeout=60)
        self.assertEqual(json.loads(proc.stdout)["key"]["short_term_memory"], {"pings": 47})
        # 0: no limit.
        res = self.run_eddy([{"key": "e", "op": "bounce", "n": 150000, "seq": 5}],
                            "--max-run-actions", "0")
        self.assertOk(res)
        self.assertEqual(res.outputs()[0]["pings"], 150000)

    def test_refused_context_call_is_named(self):
        # An action that returns the code of a context call that refused its
        # arguments fails naming the call and why, not just "invalid argument".
        res = self.run_eddy([{"key": "a", "op": "null_output", "seq": 1}])
        self.assertEqual(res.rc, 1, res.stderr)
        self.assertIn(b"EDDY_EINVAL: invalid argument (eddy_ctx_send_output: the output is "
                      b"NULL, as when building it failed)", res.stderr)
        res = self.run_eddy([{"key": "a", "op": "durable_null_fn", "seq": 1}])
        self.assertEqual(res.rc, 1, res.stderr)
        self.assertIn(b"EDDY_EINVAL: invalid argument (a durable call's fn is NULL)", res.stderr)
        # An action's own text wins over it.
        res = self.run_eddy([{"key": "a", "op": "fail", "seq": 1}])
        self.assertNotIn(b"(eddy_ctx", res.stderr)

    def test_sending_an_input_event_is_refused(self):
        # It ran the input's actions again, in this run and under this key.
        rec = {"key": "a", "op": "unhandled", "type": "InputEvent", "seq": 1}
        res = self.run_eddy([rec])
        self.assertEqual(res.rc, 1, res.stderr)
        self.assertIn(b"action 'dispatch' failed for key \"a\" on InputEvent (input line 1): "
                      b"EDDY_EINVAL: invalid argument (eddy_ctx_send_event: an action cannot "
                      b"send an InputEvent; ", res.stderr)
        res = self.run_eddy([rec], "--on-error", "skip")
        self.assertOk(res)
        self.assertEqual(res.outputs(), [])
        (dead,) = res.dead()
        self.assertIn("cannot send an InputEvent", dead["error"]["message"])

    def test_output_event_without_an_output_is_refused(self):
        # It wrote a null line; an explicit null still does.
        res = self.run_eddy([{"key": "a", "op": "output_attrs", "attrs": {"output": None},
                              "seq": 1}])
        self.assertOk(res)
        with open(res.out_path) as f:
            self.assertEqual(f.read(), 'null\n{"seq":1,"key":"a"}\n')
        for attrs in (None, {"note": 1}):
            rec = {"key": "b", "op": "output_attrs", "seq": 2}
            if attrs is not None:
                rec["attrs"] = attrs
            res = self.run_eddy([rec])
            self.assertEqual(res.rc, 1, res.stderr)
            self.assertIn(b"action 'dispatch' failed for key \"b\" on InputEvent (input line 1): "
                          b"EDDY_EINVAL: invalid argument (eddy_ctx_send_event: an OutputEvent "
                          b"without an attribute \"output\" ", res.stderr)
            self.assertEqual(res.outputs(), [])

    def test_values_nested_too_deep_are_refused(self):
        # EDDY_VALUE_MAX_DEPTH is 1000: depth 1000 everywhere passes (and reads
        # back from the state), 1001 is EDDY_ELIMIT (-18), a durable result
        # that deep the call's failure of type "limit".
        recs = [{"key": "a", "op": "deep", "n": 1000, "seq": 1},
                {"key": "b", "op": "deep", "n": 1001, "seq": 2}]
        state = self.path("st")
        res = self.run_eddy(recs, "--state", state)
        self.assertOk(res)
        with open(res.out_path, "rb") as f:
            lines = f.read().splitlines()
        deep = [ln for ln in lines if ln.startswith(b"[[")]
        self.assertEqual(len(deep), 1)
        self.assertEqual(deep[0], b"[" * 999 + b"1" + b"]" * 999)
        outs = {o["key"]: o for o in map(json.loads, [ln for ln in lines if ln not in deep])}
        for what in ("set", "set_path", "output", "event", "durable"):
            self.assertEqual(outs["a"][what], 0, what)
            self.assertEqual(outs["b"][what], -6 if what == "durable" else -18, what)
        self.assertEqual(outs["b"]["durable_error"], "limit")
        proc = subprocess.run([EDDY, "inspect", "--state", state, "--key", "a", "--json"],
                              capture_output=True, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn(b'"v": [', proc.stdout)

    @unittest.skipIf(SANITIZED, "sanitizers handle SIGSEGV themselves")
    def test_stack_overflow_is_named(self):
        # A write into a coroutine's guard page killed eddy with no word.
        res = self.run_eddy([{"key": "a", "op": "recurse", "depth": 200, "seq": 1}],
                            "--stack-size", "16384")
        self.assertEqual(res.rc, -11, res.stderr)
        # The size given, not the usable size rounded up to pages.
        self.assertIn(b"eddy: action 'dispatch' for key \"a\" overflowed its coroutine stack of "
                      b"16384 bytes (deep recursion or large locals): raise --stack-size\n",
                      res.stderr)
        res = self.run_eddy([{"key": "a", "op": "recurse", "depth": 200, "seq": 1}])
        self.assertOk(res)  # the default stack holds it
        # A frame larger than the guard page (large locals) moves the stack
        # pointer past it in one step, and the fault lands below it: it was
        # a bare "Segmentation fault".
        res = self.run_eddy([{"key": "b", "op": "big_frame", "kib": 100, "seq": 1}],
                            "--stack-size", "16384")
        self.assertEqual(res.rc, -11, res.stderr)
        self.assertIn(b"eddy: action 'dispatch' for key \"b\" overflowed its coroutine stack of ",
                      res.stderr)
        res = self.run_eddy([{"key": "b", "op": "big_frame", "kib": 100, "seq": 1}])
        self.assertOk(res)

    def test_durable_call_body_cannot_use_the_context(self):
        # eddy_ctx_durable_execute runs its body on the mailbox thread: a
        # context call from there is refused as from a worker (-3).
        res = self.run_eddy([{"key": "c", "op": "reenter", "seq": 1}], "--state", self.path("st"))
        self.assertOk(res)
        self.assertEqual(res.outputs(), [{"output": -3, "key_null": True, "memory_null": True,
                                          "durable": -3, "fail": -3, "seq": 1, "key": "c"}])

    def test_failed_async_call_hands_out_an_error_not_a_result(self):
        # The body fails with a code, no error object, and a result set.
        res = self.run_eddy([{"key": "d", "op": "sloppy_fail", "seq": 1}])
        self.assertOk(res)
        self.assertEqual(res.outputs(), [{"seq": 1, "rc": -8, "result_null": True,
                                          "err_type": "EDDY_EIO", "key": "d"}])

    def test_bad_lines_go_to_dead_letter(self):
        text = (b'{"key": "a", "op": "echo", "seq": 0}\n'
                b'not json at all\n'
                b'[1, 2]\n'
                b'{"nokey": 1}\n'
                b'\n'
                b'{"key": null}\n'
                b'{"key": {"x": 1}}\n'
                b'{"key": "b", "op": "echo", "seq": 7}\n')
        res = self.run_eddy(None, input_text=text)
        self.assertOk(res)
        self.assertEqual(sorted(o["seq"] for o in res.outputs()), [0, 7])
        dead = res.dead()
        self.assertEqual([d["line"] for d in dead], [2, 3, 4, 6, 7])
        self.assertEqual(dead[0]["raw"], "not json at all")
        self.assertEqual(dead[0]["reason"], "not JSON")
        self.assertEqual(dead[2]["reason"], "no key field")
        self.assertIn(b"5 dead-lettered", res.stderr)

    def test_dead_letter_file_only_with_dead_letters(self):
        good = [{"key": "a", "op": "echo", "seq": 0}]
        res = self.run_eddy(good)
        self.assertOk(res)
        self.assertFalse(os.path.exists(res.dead_path))
        res = self.run_eddy(None, input_text=b"not json\n")
        self.assertOk(res)
        self.assertEqual(len(res.dead()), 1)
        # One left by an earlier run is emptied, not kept as this run's.
        res = self.run_eddy(good)
        self.assertOk(res)
        self.assertEqual(os.path.getsize(res.dead_path), 0)

    def test_key_option_and_integer_keys(self):
        recs = [{"user_id": i % 3, "op": "count", "seq": i} for i in range(9)]
        res = self.run_eddy(recs, "--key", "user_id")
        self.assertOk(res)
        keys = by_key(res.outputs())
        self.assertEqual(sorted(keys), [0, 1, 2])
        self.assertEqual([o["count"] for o in keys[1]], [1, 2, 3])

    def test_reals_pass_through_unchanged(self):
        # Output reals were cut to 15 digits: 1732700000.123456 came out as
        # 1732700000.12346. Now each reads back as the double that was read,
        # in the fewest digits that do, also with a state (from the outbox).
        texts = ["1732700000.123456", "0.30000000000000004", "0.3333333333333333", "0.1",
                 "1e-7", "5e-324", "1.7976931348623157e308", "-0.0", "100.0", "1e21",
                 "1.5e10", "2.5e-300", "[0.1,1.0,1.2345678901234568e17]"]
        want = ["1732700000.123456", "0.30000000000000004", "0.3333333333333333", "0.1",
                "1e-7", "5e-324", "1.7976931348623157e308", "-0.0", "100.0", "1e21",
                "15000000000.0", "2.5e-300", "[0.1,1.0,1.2345678901234568e17]"]
        data = b"".join(b'{"key": "k%d", "op": "copy", "seq": %d, "value": %s}\n'
                        % (i, i, t.encode()) for i, t in enumerate(texts))
        for state in ([], ["--state", self.path("st")]):
            res = self.run_eddy([], *state, input_text=data)
            self.assertOk(res)
            with open(res.out_path, "rb") as f:
                got = {json.loads(l)["seq"]: l for l in f.read().splitlines()}
            for i, w in enumerate(want):
                self.assertEqual(got[i], b'{"seq":%d,"value":%s,"key":"k%d"}' % (i, w.encode(), i),
                                 state)
                self.assertEqual(repr(json.loads(got[i])["value"]), repr(json.loads(texts[i])))
        # eddy inspect showed memory's reals with 15 digits; they read back
        # now, with one precision for a whole value (jansson's way): the 17
        # digits one real needs here are 0.1's too.
        st = self.path("st")
        for i, w in ((0, b"1732700000.123456"), (1, b"0.30000000000000004"),
                     (2, b"0.3333333333333333"), (3, b"0.1"),
                     (12, b"[0.10000000000000001,1.0,1.2345678901234568e17]")):
            proc = subprocess.run([EDDY, "inspect", "--state", st, "--key", "k%d" % i],
                                  capture_output=True, timeout=30)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertIn(b'\n  short-term memory: {"value":%s}\n' % w, proc.stdout)
            proc = subprocess.run([EDDY, "inspect", "--state", st, "--key", "k%d" % i, "--json"],
                                  capture_output=True, timeout=30)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertEqual(json.loads(proc.stdout)["key"]["short_term_memory"]["value"],
                             json.loads(texts[i]))

    def test_stdin_to_stdout(self):
        data = b"".join(b'{"key": "k%d", "op": "echo", "seq": %d}\n' % (i % 2, i)
                        for i in range(10))
        proc = subprocess.run([EDDY, "run", TEST_AGENT, "--quiet"], input=data,
                              capture_output=True, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        import json
        outs = [json.loads(l) for l in proc.stdout.splitlines()]
        self.assertEqual(sorted(o["seq"] for o in outs), list(range(10)))

    def test_what_agents_print_goes_to_stderr_when_the_output_is_stdout(self):
        # printf, puts, write(1) and a child's echo in an action went into the
        # JSONL on stdout. eddy keeps stdout for its lines and gives agents
        # stderr as their stdout, from the agent's init on; the summary stays
        # last (what they print is line-buffered).
        data = b"".join(b'{"key": "k%d", "op": "print", "seq": %d}\n' % (i % 3, i)
                        for i in range(6))
        prints = [b"printf from a C action, seq ", b"puts from a C action",
                  b"write(1) from a C action", b"from a child of a C action"]
        out = self.path("out.jsonl")
        for args in ([], ["--state", self.path("st")], ["--output", "/dev/stdout"],
                     ["--output", out, "--dead-letter", "/dev/stdout"]):
            dead_to_stdout = "--dead-letter" in args
            proc = subprocess.run([EDDY, "run", TEST_AGENT, "--no-progress"] + args,
                                  input=data + (b"not json\n" if dead_to_stdout else b""),
                                  capture_output=True, timeout=60,
                                  env=dict(os.environ, EDDY_TEST_PRINT_AT_INIT="1"))
            self.assertEqual(proc.returncode, 0, (args, proc.stderr))
            lines = [json.loads(l) for l in proc.stdout.splitlines()]
            if dead_to_stdout:
                self.assertEqual([l["reason"] for l in lines], ["not JSON"], args)
                with open(out, "rb") as f:
                    self.assertEqual(sorted(json.loads(l)["seq"] for l in f), list(range(6)))
            else:
                self.assertEqual(sorted(l["seq"] for l in lines), list(range(6)), args)
            err = proc.stderr.splitlines()
            for p in prints:
                self.assertEqual(sum(l.startswith(p) for l in err), 6, (args, p, proc.stderr))
            self.assertEqual(err.count(b"printed by eddy_agent_init"), 1, (args, proc.stderr))
            self.assertTrue(err[-1].startswith(b"eddy: 6 inputs, "), (args, proc.stderr))
        # With the output in a file, stdout is left as it is.
        proc = subprocess.run([EDDY, "run", TEST_AGENT, "--quiet", "--output", out],
                              input=data, capture_output=True, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout.count(b"puts from a C action\n"), 6, proc.stdout)
        self.assertNotIn(b"from a C action", proc.stderr)

    def test_a_path_that_names_stdout_is_written_as_dash(self):
        # The README has stdout as "-" or "/dev/stdout", written from where
        # the stream stands (`>>` keeps earlier lines); a path was opened
        # anew with O_TRUNC and wiped them. Any path that names eddy's
        # stdout (or stderr, for dead letters) is now written as "-" is,
        # with --state too (not cut back: at-least-once), and its dead
        # letters go to stderr as "-"'s do.
        data = b"".join(b'{"key": "k%d", "op": "echo", "seq": %d}\n' % (i % 2, i)
                        for i in range(10))
        inp = self.path("in.jsonl")
        with open(inp, "wb") as f:
            f.write(data + b"not json\n")
        x = self.path("x.jsonl")
        for path in ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1", x):
            for state in ([], ["--state", self.path("st")]):
                shutil.rmtree(self.path("st"), ignore_errors=True)
                with open(x, "wb") as f:
                    f.write(b"earlier\n")
                with open(x, "ab") as f:
                    proc = subprocess.run([EDDY, "run", TEST_AGENT, "--input", inp, "--output",
                                           path, "--no-progress"] + state, stdout=f,
                                          stderr=subprocess.PIPE, timeout=60)
                what = (path, state, proc.stderr)
                self.assertEqual(proc.returncode, 0, what)
                with open(x, "rb") as f:
                    lines = f.read().splitlines()
                self.assertEqual(lines[0], b"earlier", what)
                self.assertEqual(sorted(json.loads(l)["seq"] for l in lines[1:]), list(range(10)),
                                 what)
                self.assertIn(b'"reason":"not JSON"', proc.stderr, what)
                self.assertFalse(os.path.exists(x + ".dead.jsonl"), what)
                self.assertFalse(os.path.exists(path + ".dead.jsonl"), what)
        # Dead letters to a path that names stderr: after what is there.
        y = self.path("y.jsonl")
        with open(y, "wb") as f:
            f.write(b"earlier\n")
        with open(y, "ab") as f:
            proc = subprocess.run([EDDY, "run", TEST_AGENT, "--input", inp, "--output",
                                   self.path("out.jsonl"), "--dead-letter", "/dev/stderr",
                                   "--quiet"], stderr=f, timeout=60)
        self.assertEqual(proc.returncode, 0)
        with open(y, "rb") as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[0], b"earlier")
        self.assertEqual([json.loads(l)["reason"] for l in lines[1:]], ["not JSON"])

    def test_usage_errors(self):
        proc = subprocess.run([EDDY, "run"], capture_output=True, timeout=30)
        self.assertEqual(proc.returncode, 2)
        proc = subprocess.run([EDDY, "run", TEST_AGENT, "--max-in-flight", "zero"],
                              capture_output=True, timeout=30)
        self.assertEqual(proc.returncode, 2)
        self.assertIn(b"max-in-flight", proc.stderr)
        proc = subprocess.run([EDDY, "run", self.path("missing.so")], capture_output=True,
                              timeout=30)
        self.assertEqual(proc.returncode, 2)
        self.assertIn(b"missing.so", proc.stderr)
        proc = subprocess.run([EDDY, "run", TEST_AGENT, "--input", self.path("nope.jsonl")],
                              capture_output=True, timeout=30)
        self.assertEqual(proc.returncode, 2)
        self.assertIn(b"nope.jsonl", proc.stderr)
        proc = subprocess.run([EDDY, "--version"], capture_output=True, timeout=30)
        self.assertEqual(proc.returncode, 0)
        self.assertTrue(proc.stdout.startswith(b"eddy "))
        for word in ("--help", "-h", "help"):  # "help" was an unknown command
            proc = subprocess.run([EDDY, word], capture_output=True, timeout=30)
            self.assertEqual(proc.returncode, 0, word)
            self.assertTrue(proc.stdout.startswith(b"usage: eddy COMMAND"), word)
        # Nothing may follow them: it was ignored, with a success.
        for args, hint in ((["--version", "extra"], "eddy --help"),
                           (["help", "run"], "eddy run --help"),
                           (["--help", "inspect"], "eddy inspect --help"),
                           (["-h", "x"], "eddy --help")):
            proc = subprocess.run([EDDY] + args, capture_output=True, timeout=30, text=True)
            self.assertEqual(proc.returncode, 2, args)
            self.assertEqual(proc.stdout, "", args)
            self.assertEqual(proc.stderr, "eddy: unexpected argument '%s' after '%s' (it takes "
                             "none)\ntry '%s'\n" % (args[1], args[0], hint))
        proc = subprocess.run([EDDY, "run", "--help"], capture_output=True, timeout=30)
        self.assertEqual(proc.returncode, 0)
        for opt in (b"--input", b"--output", b"--key", b"--async-threads", b"--max-in-flight",
                    b"--on-error", b"--dead-letter", b"--state"):
            self.assertIn(opt, proc.stdout)

    def test_header_config_list_matches_the_help(self):
        # eddy.h lists the configuration names with the ranges that
        # `eddy run --help` shows, and every value strict-determinism takes.
        with open(os.path.join(SOURCE, "include", "eddy", "eddy.h")) as f:
            header = f.read()
        block = header[header.index("Runtime configuration:"):]
        block = block[:block.index("*/")]
        entries, name = {}, None
        for line in block.splitlines():
            m = re.match(r" \*   ([a-z-]+)\s", line)
            if m:
                name = m.group(1)
            if name:
                entries[name] = entries.get(name, "") + " " + line.lstrip(" *")
        proc = subprocess.run([EDDY, "run", "--help"], capture_output=True, timeout=30,
                              text=True)
        self.assertEqual(proc.returncode, 0)
        checked = 0
        for line in proc.stdout.splitlines():
            m = re.match(r"  --([a-z-]+) [A-Z]+\s+(.*)", line)
            if not m:
                continue
            opt, text = m.groups()
            for lo, hi in re.findall(r"(\d+)\.\.(\d+)", text):
                self.assertIn("%s..%s" % (lo, hi), entries[opt], opt)
                checked += 1
            for lo in re.findall(r">= (\d+)", text):
                self.assertIn("at least %s" % lo, entries[opt], opt)
                checked += 1
        self.assertGreaterEqual(checked, 5)
        for value in ("true", "false", "yes", "no", "1", "0"):
            self.assertIn('"%s"' % value, entries["strict-determinism"])

    def test_option_value_is_never_the_next_option(self):
        # "--output --quiet" made files named "--quiet" and "--quiet.dead.jsonl".
        inp = self.path("in.jsonl")
        with open(inp, "w") as f:
            f.write('{"key": "a", "op": "echo", "seq": 1}\n')
        proc = subprocess.run([EDDY, "run", TEST_AGENT, "--input", inp, "--output", "--quiet"],
                              capture_output=True, timeout=60, cwd=self.dir)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn(b"option '--output' needs a value (PATH), not the option '--quiet'",
                      proc.stderr)
        self.assertIn(b"--output=--quiet", proc.stderr)
        self.assertEqual(sorted(os.listdir(self.dir)), ["in.jsonl"])
        # Given as --opt=VALUE, such a value is taken; a lone "-" is a value too.
        proc = subprocess.run([EDDY, "run", TEST_AGENT, "--input", inp, "--output=--out",
                               "--quiet"], capture_output=True, timeout=60, cwd=self.dir)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with open(self.path("--out")) as f:
            self.assertIn('"seq":1', f.read().replace(" ", ""))
        proc = subprocess.run([EDDY, "run", TEST_AGENT, "--input", "-", "--output", "-",
                               "--quiet"], input=b'{"key": "a", "op": "echo", "seq": 2}\n',
                              capture_output=True, timeout=60, cwd=self.dir)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn(b'"seq":2', proc.stdout.replace(b" ", b""))
        proc = subprocess.run([EDDY, "run", "--help"], capture_output=True, timeout=30)
        self.assertIn(b"must be given as --opt=VALUE", proc.stdout)
        # inspect too.
        for args in (["--state", "--json"], ["--state", self.dir, "--key", "--json"]):
            proc = subprocess.run([EDDY, "inspect"] + args, capture_output=True, timeout=30)
            self.assertEqual(proc.returncode, 2, (args, proc.stderr))
            self.assertIn(b"needs a value, not the option '--json'", proc.stderr)

    def run_files(self, *args, stdout=None):
        return subprocess.run([EDDY, "run", TEST_AGENT, "--quiet"] + list(args),
                              stdout=stdout if stdout is not None else subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=60)

    def test_same_file_twice_is_refused_and_nothing_is_touched(self):
        inp, out = self.path("in.jsonl"), self.path("out.jsonl")
        data = b'{"key": "a", "op": "echo", "seq": 1}\nnot json\n'
        with open(inp, "wb") as f:
            f.write(data)
        os.symlink(inp, self.path("link.jsonl"))
        cases = [
            (["--output", inp], b"the output (%s) is the same file as the input" % inp.encode()),
            (["--output", self.path("link.jsonl")], b"is the same file as the input"),
            (["--output", out, "--dead-letter", inp],
             b"the dead-letter file (%s) is the same file as the input" % inp.encode()),
            # Neither exists yet: the same path all the same.
            (["--output", out, "--dead-letter", self.path("./out.jsonl")],
             b"bad lines would overwrite the outputs"),
        ]
        for args, msg in cases:
            for state in ([], ["--state", self.path("st")]):
                proc = self.run_files("--input", inp, *(args + state))
                self.assertEqual(proc.returncode, 2, (args, proc.stderr))
                self.assertIn(msg, proc.stderr)
                with open(inp, "rb") as f:
                    self.assertEqual(f.read(), data)
                self.assertFalse(os.path.exists(out))
                self.assertFalse(os.path.exists(self.path("st")))
        # stdout appended to the input would be read back forever.
        with open(inp, "ab") as f:
            proc = self.run_files("--input", inp, stdout=f)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn(b"the output (standard output) is the same file as the input", proc.stderr)
        # stdout and stderr to one file is fine.
        log = self.path("log")
        with open(log, "wb") as f:
            proc = subprocess.run([EDDY, "run", TEST_AGENT, "--quiet", "--input", inp],
                                  stdout=f, stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(proc.returncode, 0)
        with open(log, "rb") as f:
            self.assertIn(b'"reason":"not JSON"', f.read())

    def test_pseudo_files_are_read_to_their_end(self):
        # Files whose length says nothing of what they hold: /proc says 0
        # bytes (it was taken for a file cut while read: exit 1), sysfs says
        # 4096 and gives a few (the reader went back for the rest for ever).
        for path in ("/proc/self/status", "/sys/kernel/mm/transparent_hugepage/enabled",
                     "/sys/class/net/lo/mtu"):
            if not os.path.exists(path):
                continue
            dead = self.path("dead.jsonl")
            proc = subprocess.run([EDDY, "run", TEST_AGENT, "--quiet", "--input", path,
                                   "--output", self.path("out.jsonl"), "--dead-letter", dead],
                                  capture_output=True, timeout=30)
            self.assertEqual(proc.returncode, 0, (path, proc.stderr))
            with open(path, "rb") as f:
                lines = f.read().count(b"\n")
            with open(dead, "rb") as f:
                self.assertEqual(f.read().count(b"\n"), lines, path)  # none is JSON

    # The agent's own file as the output or the dead-letter file: a C agent's
    # module is mapped (cut, it killed eddy with SIGBUS), a Python agent's
    # source would be overwritten. Refused, nothing touched.
    def test_an_output_over_a_c_agent_is_refused(self):
        self.output_over_the_agent_refused(TEST_AGENT, "victim.so")

    @needs_python
    def test_an_output_over_a_python_agent_is_refused(self):
        self.output_over_the_agent_refused(
            os.path.join(SOURCE, "tests", "agents", "pyagent.py"), "victim.py")

    def output_over_the_agent_refused(self, source, name):
        inp = self.path("in.jsonl")
        with open(inp, "w") as f:
            f.write('{"key": "a", "op": "echo", "seq": 1}\n')
        agent = self.path(name)
        shutil.copy(source, agent)
        with open(agent, "rb") as f:
            data = f.read()
        link = self.path("link" + os.path.splitext(agent)[1])
        os.symlink(agent, link)
        cases = [
            (["--output", agent], b"the output (%s) is the agent's file %s: writing it would "
             b"destroy the agent; give --output another path" % (agent.encode(), agent.encode())),
            (["--output", self.path("out.jsonl"), "--dead-letter", link],
             b"the dead-letter file (%s) is the agent's file" % link.encode()),
        ]
        for args, msg in cases:
            for state in ([], ["--state", self.path("st")]):
                proc = subprocess.run([EDDY, "run", agent, "--quiet", "--input", inp] + args +
                                      state, capture_output=True, timeout=60)
                self.assertEqual(proc.returncode, 2, (agent, args, proc.stderr))
                self.assertIn(msg, proc.stderr)
                with open(agent, "rb") as f:
                    self.assertEqual(f.read(), data)
                self.assertFalse(os.path.exists(self.path("out.jsonl")))
                self.assertFalse(os.path.exists(self.path("st")))

    def test_agent_that_is_no_shared_object(self):
        # A Python agent named "agent" was dlopen'ed as a C agent, which said
        # only "invalid ELF header". A file that is no shared object is said
        # to be one, with what AGENT must be (a name ending in .py is Python,
        # but for an eddy built without Python).
        with open(os.path.join(SOURCE, "tests", "agents", "pyagent.py"), "rb") as f:
            source = f.read()
        must = ("or a Python agent's file, whose name ends in .py" if PYTHON else
                "(this eddy was built without Python: it runs no Python agent)")
        for name in ("agent", "agent.txt"):
            with open(self.path(name), "wb") as f:
                f.write(source)
            proc = subprocess.run([os.path.abspath(EDDY), "run", name, "--no-progress"],
                                  input=b'{"key": "k", "op": "key", "seq": 1}\n', cwd=self.dir,
                                  capture_output=True, timeout=120)
            self.assertEqual(proc.returncode, 2, proc.stderr)
            self.assertEqual(proc.stderr.decode(),
                             "eddy: cannot load agent %s: it is not a shared object (no ELF "
                             "header); AGENT must be a C agent's shared object %s\n"
                             % (name, must))
            self.assertEqual(proc.stdout, b"")
        # A file that is not there keeps dlopen's words.
        res = self.run_eddy([{"key": "k"}], agent=self.path("missing.so"))
        self.assertEqual(res.rc, 2)
        self.assertIn(b"cannot open shared object file: No such file or directory", res.stderr)

    def test_version_says_whether_python_agents_run(self):
        # The second line of --version is what the e2e tests skip Python
        # agents' tests by (eddytest.PYTHON): it must agree with the build's
        # EDDY_WITH_PYTHON, which CMake gives ctest's tests, so that a wrong
        # answer cannot skip them unseen.
        proc = subprocess.run([EDDY, "--version"], capture_output=True, timeout=30, text=True)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        lines = proc.stdout.splitlines()
        self.assertEqual(len(lines), 2, proc.stdout)
        self.assertRegex(lines[0], r"^eddy \d+\.\d+\.\d+$")
        self.assertIn(lines[1], ("Python agents: yes",
                                 "Python agents: no (this eddy was built without Python)"))
        self.assertEqual(lines[1] == "Python agents: yes", PYTHON)
        built = os.environ.get("EDDY_WITH_PYTHON")  # "1" or "0"; unset outside ctest
        if built is not None:
            self.assertEqual(PYTHON, built == "1", "EDDY_WITH_PYTHON=%s" % built)

    def test_standard_streams_are_written_where_they_stand(self):
        # `for f in a b; do eddy ...; done >all`: one description, no O_APPEND;
        # each run goes on where the one before stopped.
        a, b, bad = self.path("a.jsonl"), self.path("b.jsonl"), self.path("bad.jsonl")
        with open(a, "w") as f:
            f.write('{"key": "a", "op": "echo", "seq": 1}\n{"key": "b", "op": "echo", "seq": 2}\n')
        with open(b, "w") as f:
            f.write('{"key": "c", "op": "echo", "seq": 3}\n')
        with open(bad, "w") as f:
            f.write("not json\n")
        all_ = self.path("all.jsonl")
        with open(all_, "wb") as f:
            for inp in (a, b):
                self.assertEqual(self.run_files("--input", inp, stdout=f).returncode, 0)
        with open(all_, "rb") as f:
            self.assertEqual(sorted(json.loads(l)["seq"] for l in f), [1, 2, 3])
        # `(echo header; eddy ...) >log 2>&1`: the dead letters on stderr
        # follow the header; so do the outputs, with and without a state.
        for args in (["--input", bad, "--output", os.devnull],
                     ["--input", a, "--state", self.path("st")],
                     ["--input", a, "--state", self.path("st2"), "--dead-letter", "-"]):
            log = self.path("log")
            with open(log, "wb") as f:
                f.write(b"header\n")
                f.flush()
                proc = subprocess.run([EDDY, "run", TEST_AGENT] + args, stdout=f,
                                      stderr=subprocess.STDOUT, timeout=60)
            self.assertEqual(proc.returncode, 0, args)
            with open(log, "rb") as f:
                lines = f.read().splitlines()
            self.assertEqual(lines[0], b"header", args)
            self.assertTrue(lines[-1].startswith(b"eddy: "), args)  # the summary
            want = [b"not JSON"] if args[1] == bad else [b'"seq":1', b'"seq":2']
            for w in want:
                self.assertEqual(sum(w in l for l in lines), 1, (args, lines))

    def test_failed_start_keeps_the_output_and_creates_no_state(self):
        out, st = self.path("out.jsonl"), self.path("st")
        with open(out, "w") as f:
            f.write("earlier output\n")
        inp = self.path("in.jsonl")
        with open(inp, "w") as f:
            f.write('{"key": "a", "op": "echo", "seq": 1}\n')
        for args, msg in (
                (["--input", self.path("typo.jsonl")],
                 b"cannot open %s: No such file or directory" % self.path("typo.jsonl").encode()),
                (["--input", self.dir], b"cannot read %s: Is a directory" % self.dir.encode()),
                (["--input", inp, "--dead-letter", self.path("no/such/dir/d")],
                 b"cannot open %s for writing" % self.path("no/such/dir/d").encode()),
                (["--input", inp, "--output", self.dir], b"Is a directory")):
            if "--output" not in args:
                args = ["--output", out] + args
            proc = self.run_files("--state", st, *args)
            self.assertEqual(proc.returncode, 2, (args, proc.stderr))
            self.assertIn(msg, proc.stderr)
            with open(out) as f:
                self.assertEqual(f.read(), "earlier output\n")
            self.assertFalse(os.path.exists(st), args)

    def test_input_errors_use_the_system_wording(self):
        # They were libuv's lowercase texts ("no such file or directory",
        # "i/o error") where the rest of eddy says strerror's.
        for inp, msg in ((self.path("missing.jsonl"), "No such file or directory"),
                         ("/proc/self/mem", "Input/output error")):  # opens, read fails: EIO
            proc = self.run_files("--input", inp, "--output", self.path("out.jsonl"))
            self.assertNotEqual(proc.returncode, 0, inp)
            verb = "open" if inp.endswith("missing.jsonl") else "read"
            self.assertIn(b"eddy: cannot %s %s: %s\n" % (verb.encode(), inp.encode(), msg.encode()),
                          proc.stderr)

    def test_output_to_dev_null_sends_bad_lines_to_stderr(self):
        inp = self.path("in.jsonl")
        with open(inp, "w") as f:
            f.write('{"key": "a", "op": "echo", "seq": 1}\nnot json\n')
        proc = self.run_files("--input", inp, "--output", os.devnull)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn(b'"reason":"not JSON"', proc.stderr)
        self.assertFalse(os.path.exists(os.devnull + ".dead.jsonl"))

    @unittest.skipUnless(os.path.exists("/dev/full"), "no /dev/full")
    def test_summary_counts_lines_written(self):
        # Outputs and dead letters that could not be written are not counted.
        inp, bad, st = self.path("in.jsonl"), self.path("bad.jsonl"), self.path("st")
        with open(inp, "w") as f:
            f.write('{"key": "a", "op": "echo", "seq": 1}\n{"key": "b", "op": "echo", "seq": 2}\n')
        with open(bad, "w") as f:
            f.write("not json\n")
        for args in (["--input", inp, "--output", "/dev/full"],
                     ["--input", inp, "--output", "/dev/full", "--state", st],
                     ["--input", bad, "--output", self.path("o.jsonl"), "--dead-letter",
                      "/dev/full"]):
            proc = subprocess.run([EDDY, "run", TEST_AGENT] + args, capture_output=True,
                                  timeout=60)
            self.assertEqual(proc.returncode, 1, proc.stderr)
            self.assertIn(b"cannot write to /dev/full: No space left on device", proc.stderr)
            self.assertIn(b" 0 outputs, 0 dead-lettered", proc.stderr)
        # The rerun writes what the state's outbox kept, counts it, and says
        # where it came from (and no rate of inputs: it read none).
        out = self.path("out.jsonl")
        proc = subprocess.run([EDDY, "run", TEST_AGENT, "--input", inp, "--state", st,
                               "--output", out], capture_output=True, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn(b"eddy: 0 inputs, 2 outputs (2 written from the state), 0 dead-lettered, ",
                      proc.stderr)
        self.assertNotIn(b"inputs/s", proc.stderr)
        with open(out) as f:
            self.assertEqual(len(f.readlines()), 2)
        # So does a dead letter that a failed run left there.
        args = ["--input", bad, "--output", self.path("o3.jsonl"), "--state", self.path("st3")]
        proc = subprocess.run([EDDY, "run", TEST_AGENT, "--dead-letter", "/dev/full"] + args,
                              capture_output=True, timeout=60)
        self.assertEqual(proc.returncode, 1, proc.stderr)
        proc = subprocess.run([EDDY, "run", TEST_AGENT, "--dead-letter", self.path("dl.jsonl")]
                              + args, capture_output=True, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn(b"eddy: 0 inputs, 0 outputs, 1 dead-lettered (1 written from the state), ",
                      proc.stderr)

    def test_progress_line_rates_inputs_as_the_summary_does(self):
        # The progress line gave events/s over the last half second, the
        # summary inputs/s over the run: two figures that could not be
        # compared. Both are now inputs accepted per second of the run so
        # far. Six inputs of one key, 200 ms each: all six are accepted at
        # once, and the progress lines come at 0.5 s and 1 s.
        recs = [{"key": "a", "op": "sleep", "ms": 200, "seq": i} for i in range(6)]
        res = self.run_eddy(recs, "--progress")
        self.assertOk(res)
        parts = [p.strip() for p in res.stderr.split(b"\r")]
        lines = [p for p in parts if b" in flight, " in p]
        self.assertTrue(lines, res.stderr)
        line_re = re.compile(rb"eddy: (\d+) inputs read, \d+ in flight, \d+ pending, \d+ outputs, "
                             rb"(\d+) inputs/s, \d+ dead-lettered$")
        rates = []
        for line in lines:
            m = line_re.match(line)
            self.assertIsNotNone(m, line)
            # Every line comes 0.5 s or more into the run.
            self.assertLessEqual(int(m.group(2)), int(m.group(1)) / 0.4 + 1, line)
            rates.append(int(m.group(2)))
        self.assertNotIn(b"events/s", res.stderr)
        summary = re.search(rb"eddy: 6 inputs, .*, ([0-9.]+) s, (\d+) inputs/s, ", res.stderr)
        self.assertIsNotNone(summary, res.stderr)
        # The same figure, later: the run's last rate is the summary's.
        self.assertGreaterEqual(rates[-1] + 1, int(summary.group(2)), res.stderr)

    def test_empty_state_option_is_refused(self):
        inp = self.path("in.jsonl")
        with open(inp, "w") as f:
            f.write('{"key": "a", "op": "echo", "seq": 1}\n')
        for args in (["--state", ""], ["--state="]):
            proc = self.run_files("--input", inp, "--output", self.path("o"), *args)
            self.assertEqual(proc.returncode, 2, proc.stderr)
            self.assertIn(b"--state needs a directory", proc.stderr)
        # An empty --dead-letter ($DL unset) went to the default without a
        # word; it is refused as --state is.
        for args in (["--dead-letter", ""], ["--dead-letter="]):
            proc = self.run_files("--input", inp, "--output", self.path("o"), *args)
            self.assertEqual(proc.returncode, 2, proc.stderr)
            self.assertIn(b"--dead-letter needs a path", proc.stderr)
        proc = subprocess.run([EDDY, "inspect", "--state="], capture_output=True, timeout=30)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn(b"inspect needs --state DIR", proc.stderr)

    def test_option_given_twice_is_refused(self):
        # "--state A --state B" ran with B, and A was silently dropped. An
        # option that takes a value takes it once: a second is a usage
        # error naming the option and both values, and nothing is started.
        inp, out = self.path("in.jsonl"), self.path("out.jsonl")
        with open(inp, "w") as f:
            f.write('{"key": "a", "op": "echo", "seq": 1}\n')
        a, b = self.path("stA"), self.path("stB")
        for args, name, first, second in (
                (["--state", a, "--state", b], "state", a, b),
                (["--async-threads", "4", "--async-threads=8"], "async-threads", "4", "8"),
                (["--output", self.path("other.jsonl")], "output", out, self.path("other.jsonl")),
                (["--key", "key", "--key", "key"], "key", "key", "key"),
                (["--max-pending", "5", "--max-pending=6"], "max-pending", "5", "6")):
            proc = self.run_files("--input", inp, "--output", out, *args)
            self.assertEqual(proc.returncode, 2, (args, proc.stderr))
            self.assertIn(b"eddy: option '--%s' given twice, as '%s' and as '%s'; it takes one "
                          b"value\ntry 'eddy run --help'\n"
                          % (name.encode(), first.encode(), second.encode()), proc.stderr)
            self.assertFalse(any(os.path.exists(p) for p in (a, b, out)), args)
        # Flags may be repeated; a run with each option once still runs.
        proc = self.run_files("--input", inp, "--output", out, "--quiet", "--quiet")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        # eddy inspect likewise, for --state and --key.
        self.assertEqual(self.run_files("--input", inp, "--output", out, "--state", a)
                         .returncode, 0)
        for args, name, first, second in (
                (["--state", a, "--state=" + b], "state", a, b),
                (["--state", a, "--key", "a", "--key", "b"], "key", "a", "b")):
            proc = subprocess.run([EDDY, "inspect"] + args, capture_output=True, timeout=30)
            self.assertEqual(proc.returncode, 2, (args, proc.stderr))
            self.assertIn(b"eddy: option '--%s' given twice, as '%s' and as '%s'; it takes one "
                          b"value\ntry 'eddy inspect --help'\n"
                          % (name.encode(), first.encode(), second.encode()), proc.stderr)
        # A word that is no option was called an unknown option.
        for word in ("extra", "--"):
            proc = subprocess.run([EDDY, "inspect", "--state", a, word], capture_output=True,
                                  timeout=30)
            self.assertEqual(proc.returncode, 2, proc.stderr)
            self.assertEqual(proc.stderr, b"eddy: inspect takes only options (--state DIR, "
                             b"--key KEY, --json), not '%s'\ntry 'eddy inspect --help'\n"
                             % word.encode())
        # And --help says so.
        for cmd in (["run", "--help"], ["inspect", "--help"]):
            proc = subprocess.run([EDDY] + cmd, capture_output=True, timeout=30)
            self.assertIn(b"given twice", proc.stdout.replace(b"\n", b" "), cmd)

    def max_rss_kb(self, *args):
        """Peak resident memory (KiB) of `eddy run TEST_AGENT args`, which
        must succeed; run from a fresh interpreter so that RUSAGE_CHILDREN
        sees only it."""
        probe = ("import resource, subprocess, sys\n"
                 "p = subprocess.run(sys.argv[1:], capture_output=True)\n"
                 "sys.stderr.buffer.write(p.stderr)\n"
                 "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
                 "sys.exit(p.returncode)\n")
        proc = subprocess.run([sys.executable, "-c", probe, EDDY, "run", TEST_AGENT,
                               "--no-progress"] + list(args), capture_output=True, timeout=600)
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        return int(proc.stdout.decode().strip())

    @unittest.skipIf(SANITIZED, "sanitizer builds inflate memory and time")
    def test_back_pressure_bounds_memory(self):
        # 1,000,000 lines through --max-in-flight 100: resident memory stays far
        # below what holding the input would take.
        n = 1000000
        inp = self.path("big.jsonl")
        with open(inp, "w") as f:
            for i in range(n):
                f.write('{"key":"k%d","op":"echo","seq":%d,"pad":"%s"}\n' % (i % 1000, i, "x" * 100))
        out = self.path("big.out.jsonl")
        size = os.path.getsize(inp)
        max_rss_kb = self.max_rss_kb("--input", inp, "--output", out, "--max-in-flight", "100")
        with open(out, "rb") as f:
            lines = sum(1 for _ in f)
        self.assertEqual(lines, n)
        # The input is ~150 MB; bounded admission keeps the process small.
        self.assertLess(max_rss_kb * 1024, size / 2, "resident memory grew with the input")

    @unittest.skipIf(SANITIZED, "sanitizer builds inflate memory and time")
    def test_bad_lines_do_not_grow_memory_with_state(self):
        # A file in Latin-1: every line invalid UTF-8, each dead-lettered
        # slower than the reader reads it. admit() went on with them without
        # returning to the loop while the reader stayed ahead: nothing was
        # committed until the input's end, and the dead letters waiting for
        # that commit grew with the input (288 MB of input, 2.29 GB resident).
        rss = []
        for n in (50000, 200000):
            inp = self.path("latin%d.jsonl" % n)
            with open(inp, "wb") as f:
                for i in range(n):
                    f.write(('{"key":"k%d","n":"Ren\u00e9 %s"}\n' % (i, "x" * 150))
                            .encode("latin-1"))
            out = self.path("o%d" % n)
            rss.append(self.max_rss_kb("--input", inp, "--output", out,
                                       "--state", self.path("st%d" % n)))
            with open(out + ".dead.jsonl", "rb") as f:
                self.assertEqual(sum(1 for _ in f), n)
        # 150,000 more lines are ~28 MB of input, which grew it by ~200 MB.
        self.assertLess(rss[1] - rss[0], 20 * 1024, "resident memory grew with the input: %s" % rss)

    @unittest.skipIf(SANITIZED, "sanitizer builds inflate memory and time")
    def test_distinct_keys_do_not_grow_memory_with_state(self):
        # Every input a new key (ids, say), with --state: keys without
        # memory are let go as without state (they were all kept, ~750
        # bytes each: ~900 MB for 1.2 M keys). Resident memory must not grow
        # with the number of keys.
        rss = []
        for n in (100000, 400000):
            inp = self.path("keys%d.jsonl" % n)
            with open(inp, "w") as f:
                for i in range(n):
                    f.write('{"key":"u%d","op":"echo","seq":%d}\n' % (i, i))
            rss.append(self.max_rss_kb("--input", inp, "--output", self.path("o%d" % n),
                                       "--state", self.path("st%d" % n)))
        # 300,000 more keys would have been ~220 MB more.
        self.assertLess(rss[1] - rss[0], 100 * 1024, "resident memory grew with the keys: %s" % rss)


if __name__ == "__main__":
    unittest.main(verbosity=2)
