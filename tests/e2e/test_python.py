"""End-to-end tests of Python agents: the Flink Agents operator scenarios,
memory, durable calls across a crash, errors and the GIL, through the eddy
binary and tests/agents/pyagent.py."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from eddytest import (EDDY, SANITIZED, SOURCE, EddyTest, needs_python, read_jsonl,  # noqa: E402
                      without_python)

HOOKS = os.environ.get("EDDY_HOOKS", "ON").upper() in ("ON", "1", "TRUE", "YES")

PY_AGENTS = os.path.join(SOURCE, "tests", "agents")
AGENT = os.path.join(PY_AGENTS, "pyagent.py")
AWAITING = os.path.join(PY_AGENTS, "awaiting.py")


def lines(path):
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for _ in f)


@needs_python
class PythonTest(EddyTest):
    def run_py(self, records, *args, agent=AGENT, **kw):
        return self.run_eddy(records, *args, agent=agent, **kw)

    # ------------------------------------------------------------ operator scenarios

    def test_chain_two_actions_with_short_term_memory(self):
        recs = [{"key": "k%d" % (i % 5), "op": "chain", "x": i, "seq": i} for i in range(50)]
        res = self.run_py(recs)
        self.assertOk(res)
        self.assertEqual(sorted((o["seq"], o["x"]) for o in res.outputs()),
                         [(i, (i + 1) * 2) for i in range(50)])
        self.assertIn(b"100 actions", res.stderr)

    def test_same_key_in_order_one_at_a_time(self):
        recs = [{"key": "same", "op": "sleep", "ms": 5, "seq": i} for i in range(15)]
        res = self.run_py(recs, "--async-threads", "8")
        self.assertOk(res)
        outs = res.outputs()
        self.assertEqual([o["seq"] for o in outs], list(range(15)))
        for a, b in zip(outs, outs[1:]):
            self.assertLessEqual(a["end"], b["start"], "runs of one key overlapped")

    def test_different_keys_overlap(self):
        n = 12
        recs = [{"key": "k%d" % i, "op": "sleep", "ms": 150, "seq": i} for i in range(n)]
        res = self.run_py(recs, "--async-threads", str(n))
        self.assertOk(res)
        outs = res.outputs()
        self.assertEqual(len(outs), n)
        self.assertLess(max(o["start"] for o in outs), min(o["end"] for o in outs),
                        "calls of different keys did not overlap")

    def test_chained_async_calls(self):
        recs = [{"key": "k%d" % (i % 4), "op": "chain_async", "x": i, "seq": i, "ms": 1}
                for i in range(40)]
        res = self.run_py(recs)
        self.assertOk(res)
        self.assertEqual(sorted((o["seq"], o["x"]) for o in res.outputs()),
                         [(i, i + 3) for i in range(40)])
        self.assertIn(b"120 async calls", res.stderr)

    def test_async_across_many_keys(self):
        n = 300 if SANITIZED else 2000
        recs = [{"key": i, "op": "sleep", "ms": 0, "seq": i} for i in range(n)]
        res = self.run_py(recs)
        self.assertOk(res)
        outs = res.outputs()
        self.assertEqual(sorted(o["seq"] for o in outs), list(range(n)))
        self.assertEqual({o["key"] for o in outs}, set(range(n)))

    def test_gather_overlaps_calls(self):
        n, ms = 8, 200
        res = self.run_py([{"key": "g", "op": "gather", "n": n, "ms": ms, "seq": 0}],
                          "--async-threads", str(n))
        self.assertOk(res)
        (o,) = res.outputs()
        self.assertEqual(o["xs"], list(range(1, n + 1)))  # results in order
        self.assertLess(o["elapsed"], n * ms / 1000 / 2,
                        "gather did not overlap its calls: %.3f s" % o["elapsed"])
        self.assertGreaterEqual(o["elapsed"], ms / 1000 * 0.9)

    def test_fan_out_and_module_level_action(self):
        res = self.run_py([{"key": "f", "op": "fan", "seq": 1}])
        self.assertOk(res)
        self.assertEqual(res.outputs(), [{"key": "f", "seq": 1, "by": "module-level action",
                                          "type": "Fanned"}])

    def test_reals_come_out_as_python_made_them(self):
        # They were cut to 15 digits: 0.1 + 0.2 came out as 0.3.
        res = self.run_py([], input_text=b'{"key":"a","op":"reals","seq":1,'
                                         b'"ts":1732700000.123456}\n')
        self.assertOk(res)
        with open(res.out_path, "rb") as f:
            self.assertEqual(f.read(), b'{"key":"a","seq":1,"ts":1732700000.123456,'
                                       b'"sum":0.30000000000000004,"third":0.3333333333333333}\n')

    def test_what_agents_print_goes_to_stderr_when_the_output_is_stdout(self):
        # print() in an action went into the JSONL on stdout. Now stdout holds
        # only eddy's lines: what the agent prints (at import, in actions, in
        # its children) goes to stderr, line by line, before the summary, and
        # no child is left a descriptor of the real stdout.
        fds = self.path("fds")
        data = b"".join(b'{"key": "k%d", "op": "print", "seq": %d, "fds": %s}\n'
                        % (i % 3, i, json.dumps(fds if i == 0 else None).encode())
                        for i in range(6))
        prints = [b"print from a Python action, seq ", b"sys.stdout.write from a Python action",
                  b"os.write(1) from a Python action", b"from a child of a Python action"]
        stdout = self.path("stdout")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        env["EDDY_TEST_PRINT_AT_IMPORT"] = "1"
        for args in ([], ["--state", self.path("st")], ["--output", "/dev/stdout"]):
            with open(stdout, "wb") as f:
                proc = subprocess.run([EDDY, "run", AGENT, "--no-progress"] + args, input=data,
                                      stdout=f, stderr=subprocess.PIPE, timeout=120, env=env)
            self.assertEqual(proc.returncode, 0, (args, proc.stderr))
            with open(stdout, "rb") as f:
                lines = [json.loads(l) for l in f.read().splitlines()]
            self.assertEqual(sorted(l["seq"] for l in lines), list(range(6)), args)
            err = proc.stderr.splitlines()
            for p in prints:
                self.assertEqual(sum(l.startswith(p) for l in err), 6, (args, p, proc.stderr))
            self.assertEqual(err.count(b"printed when the agent is imported"), 1, proc.stderr)
            self.assertTrue(err[-1].startswith(b"eddy: 6 inputs, "), (args, proc.stderr))
            with open(fds) as f:
                targets = f.read().split()
            self.assertNotIn(os.path.realpath(stdout), targets, (args, targets))

    def test_key_and_mailbox_thread(self):
        res = self.run_py([{"key": 42, "op": "key", "seq": 1},
                           {"key": "s", "op": "key", "seq": 2}])
        self.assertOk(res)
        outs = sorted(res.outputs(), key=lambda o: o["seq"])
        self.assertEqual([o["ctx_key"] for o in outs], [42, "s"])
        self.assertEqual({o["thread"] for o in outs}, {"MainThread"})

    def test_contextvars_are_the_action_executions_own(self):
        # Every action execution was stepped in the mailbox thread's one
        # contextvars context: interleaved at their awaits, key a computed
        # with key b's decimal.localcontext() (1.2345679, not 1.23) and b
        # with none (1.23456789123; the agent's localprec stands for
        # decimal's, which works alike), a ContextVar set before an await was
        # another key's after it, one a def action set was the next one's,
        # and a function on a worker saw none of the action's.
        agent = os.path.join(PY_AGENTS, "contextvars_agent.py")
        recs = [{"key": "a", "prec": 3, "ms": 20}, {"key": "b", "prec": 8, "ms": 100},
                {"key": "d1", "def": True}, {"key": "d2", "def": True}]
        res = self.run_py(recs, "--state", self.path("state"), agent=agent)
        self.assertOk(res)
        outs = {o["key"]: o for o in res.outputs()}
        for key, prec, amount in (("a", 3, "1.23"), ("b", 8, "1.2345679")):
            seen = {"var": key, "prec": prec}
            self.assertEqual(outs[key], {"key": key, "before": "unset", "after_call": key,
                                         "var": key, "prec": prec, "amount": amount,
                                         "worker": seen, "durable": seen, "prec_after": 28})
        self.assertEqual(outs["d1"], {"key": "d1", "before": "unset"})
        self.assertEqual(outs["d2"], {"key": "d2", "before": "unset"})

    # ------------------------------------------------------------ durable calls

    def crash_and_resume(self, rec, expect_calls=1):
        counter = self.path("counter")
        crash = self.path("crash.flag")
        state = self.path("state")
        rec = dict(rec, counter=counter, crash=crash)
        open(crash, "w").close()
        first = self.run_py([rec], "--state", state)
        self.assertEqual(first.rc, 3, "the agent should have crashed: %s" % first.stderr)
        self.assertEqual(lines(counter), expect_calls)
        self.assertEqual(first.outputs() if os.path.exists(first.out_path) else [], [])
        os.unlink(crash)
        second = self.run_py([rec], "--state", state)
        self.assertOk(second)
        self.assertEqual(lines(counter), expect_calls, "a journaled call ran again")
        self.assertRegex(second.stderr, rb"[1-9][0-9]* durable calls? replayed")
        return second.outputs()

    def test_durable_call_replayed_after_restart(self):
        outs = self.crash_and_resume({"key": "d", "op": "durable", "x": 5, "seq": 1})
        self.assertEqual(outs, [{"key": "d", "seq": 1, "v": {"v": 5}}])

    @unittest.skipUnless(HOOKS, "built without EDDY_TEST_HOOKS")
    def test_replay_under_allocation_failures(self):
        """Resumed with each of jansson's allocations failing in turn, a
        replay either goes on with the journaled result or fails the action
        with a MemoryError (eddy stops, the state as it was): a MemoryError
        while digesting the arguments digested their pickle instead (the
        journal then differed and the committed call ran again), and one
        while parsing the journaled result gave the action a string a
        character short (jansson 2.14 drops one it cannot store)."""
        counter, crash = self.path("counter"), self.path("crash.flag")
        state, pristine = self.path("state"), self.path("pristine")
        rec = {"key": "d", "op": "durable", "x": "abcdefghij" * 300, "seq": 1,
               "counter": counter, "crash": crash}
        open(crash, "w").close()
        first = self.run_py([rec], "--state", pristine)
        self.assertEqual(first.rc, 3, first.stderr)
        os.unlink(crash)
        want = [{"key": "d", "seq": 1, "v": {"v": rec["x"]}}]
        stopped = 0
        for n in range(1, 61, 4 if SANITIZED else 1):
            shutil.rmtree(state, ignore_errors=True)
            shutil.copytree(pristine, state)
            if os.path.exists(self.path("out.jsonl")):
                os.unlink(self.path("out.jsonl"))
            res = self.run_py([rec], "--state", state,
                              extra_env={"EDDY_FAULT": "alloc.json:%d" % n})
            what = "EDDY_FAULT=alloc.json:%d: %s" % (n, res.stderr.decode(errors="replace"))
            self.assertEqual(lines(counter), 1, "a journaled call ran again, " + what)
            self.assertNotIn(b"non-deterministic", res.stderr, what)
            if res.rc == 0:
                self.assertEqual(res.outputs(), want, what)
            else:
                self.assertIn(b"out of memory", res.stderr, what)
                self.assertEqual(res.outputs() if os.path.exists(res.out_path) else [], [], what)
                stopped += 1
        self.assertGreater(stopped, 0, "no allocation failed")

    def test_replayed_shared_exception_left_as_it_is(self):
        """An exception pickled by reference comes back from the journal as
        the module's own object: the replay's note (and a cause) went onto
        it, one more on each replay, and onto every later raise of it."""
        outs = self.crash_and_resume({"key": "s", "op": "durable_singleton", "seq": 1},
                                     expect_calls=2)
        self.assertEqual(outs, [{"key": "s", "seq": 1, "same": [True, True], "notes": 0}])

    def test_durable_pickled_result_replayed(self):
        outs = self.crash_and_resume({"key": "d", "op": "durable_object", "seq": 1})
        self.assertEqual(outs, [{"key": "d", "seq": 1, "v": [1, 2, 3], "t": "set"}])

    def typed_replay(self, kind):
        """A durable result that is not made exactly of JSON types comes back
        from the journal with its own types, from both kinds of call."""
        outs = self.crash_and_resume({"key": "t", "op": "durable_typed", "kind": kind,
                                      "seq": 1}, expect_calls=2)
        self.assertEqual(len(outs), 1)
        self.assertEqual(outs[0]["sync"], outs[0]["v"])
        return outs[0]["v"]

    def test_durable_tuple_replayed_as_tuple(self):
        self.assertEqual(self.typed_replay("tuple"),
                         {"type": "builtins.tuple", "inner": ["int", "tuple", "list"],
                          "value": [1, [2, "x"], [3]]})

    def test_durable_defaultdict_replayed_with_its_factory(self):
        self.assertEqual(self.typed_replay("defaultdict"),
                         {"type": "collections.defaultdict", "value": {"a": [1], "b": [2]}})

    def test_durable_intenum_replayed_as_member(self):
        self.assertEqual(self.typed_replay("intenum"),
                         {"type": "pyagent.Level", "is_member": True, "name": "HIGH"})

    def test_durable_str_subclass_replayed(self):
        self.assertEqual(self.typed_replay("str_subclass"),
                         {"type": "builtins.dict", "tag_type": "Tag", "shout": "HI!"})

    def test_durable_sync_call_replayed(self):
        outs = self.crash_and_resume({"key": "d", "op": "durable_sync", "x": 4, "seq": 1})
        self.assertEqual(outs, [{"key": "d", "seq": 1, "v": 40}])

    def inline_then_call(self, nxt, hold):
        """ctx.durable_execute(count) journals its result in the open
        transaction and returns; the action's next call dies on the first
        run. That call must not run before the record is committed and
        synced: the re-run then replays count rather than call it again."""
        counter, crash = self.path("counter"), self.path("crash.flag")
        state, until = self.path("state"), self.path("until")
        recs = [{"key": "a", "op": "inline_then_call", "next": nxt, "hold": hold, "x": 7,
                 "counter": counter, "crash": crash, "seq": 1}]
        args = ["--state", state]
        if hold:
            # Another key's task stays ready and the commit interval is
            # long: the loop commits only when a task or a job asks for it
            # (the call for a worker was handed over before the turn's
            # commit, and ran on a record that never committed).
            recs.insert(0, {"key": "h", "op": "hold_ready", "until": until, "seq": 0})
            args += ["--commit-interval-ms", "10000"]
        open(crash, "w").close()
        first = self.run_py(recs, *args)
        self.assertEqual(first.rc, 3, "the agent should have crashed: %s" % first.stderr)
        self.assertEqual(lines(counter), 1)
        os.unlink(crash)
        open(until, "w").close()
        second = self.run_py(recs, *args)
        self.assertOk(second)
        self.assertEqual(lines(counter), 1,
                         "the durable_execute ran again: the call after it ran on a result "
                         "that was never committed")
        outs = [o for o in second.outputs() if o["key"] == "a"]
        self.assertEqual(outs, [{"key": "a", "seq": 1, "v": 7}])

    def test_durable_sync_then_inline_call_waits_for_the_record(self):
        self.inline_then_call("inline", hold=False)

    def test_durable_sync_then_worker_call_waits_for_the_record(self):
        self.inline_then_call("worker", hold=True)

    def test_durable_sync_then_durable_async_waits_for_the_record(self):
        self.inline_then_call("durable_async", hold=True)

    def test_durable_calls_in_gather_replayed(self):
        outs = self.crash_and_resume({"key": "d", "op": "gather_durable", "seq": 1},
                                     expect_calls=2)
        self.assertEqual(outs, [{"key": "d", "seq": 1, "rs": [1, 2, 3]}])

    def test_gather_of_coroutines_replayed_in_its_rounds(self):
        # ctx.gather took calls only. Coroutines (one nested gather among
        # them) now run as branches in rounds, so that the replay finds each
        # durable call at the position the first run gave it: 8 calls, none
        # run again, none cut as non-deterministic.
        outs = self.crash_and_resume({"key": "d", "op": "gather_coros", "seq": 1},
                                     expect_calls=8)
        self.assertEqual(outs, [{"key": "d", "seq": 1, "tag": "action",
                                 "rs": [["a0", "a1", "a2", "a"], ["b0", "b"], "c",
                                        [["x0", "x1", "x"], ["y0", "y"]]]}])

    def test_gather_of_coroutines_overlaps_them(self):
        n, ms = 4, 150
        res = self.run_py([{"key": "g", "op": "gather_coros_timed", "n": n, "ms": ms, "seq": 0}],
                          "--async-threads", str(n))
        self.assertOk(res)
        (o,) = res.outputs()
        self.assertEqual(o["n"], n)
        # Two calls each, the branches' calls at once: two rounds, not 2 n.
        self.assertLess(o["elapsed"], n * 2 * ms / 1000 / 2,
                        "gather did not overlap its coroutines: %.3f s" % o["elapsed"])
        self.assertGreaterEqual(o["elapsed"], 2 * ms / 1000 * 0.9)

    def test_gather_of_coroutines_exceptions(self):
        res = self.run_py([{"key": "g", "op": "gather_coros_errors", "seq": 0}])
        self.assertOk(res)
        (o,) = res.outputs()
        self.assertEqual(o["got"], ["ValueError('branch failed')", "float",
                                    "refused: eddy actions can await only ctx.execute_async(), "
                                    "ctx.durable_execute_async(), ctx.gather() and ctx.sleep()"])
        self.assertEqual(o["raised"], "branch failed")
        self.assertEqual((o["stubborn"], o["twice"], o["gen"], o["tags"]),
                         ("TypeError", True, [11], ["at gather()", "at gather()"]))
        self.assertIn(b"eddy: warning: a ctx.gather() of coroutines made for key 'g' was never "
                      b"awaited, so its coroutines never ran (await it)", res.stderr)
        self.assertNotIn(b"RuntimeWarning", res.stderr)
        self.assertRegex(o["bad"], r"^gather\(\) takes awaitables \(coroutines .*\), not 42$")

    def test_durable_exception_replayed_with_its_type(self):
        outs = self.crash_and_resume({"key": "e", "op": "durable_error", "kind": "custom",
                                      "seq": 1})
        self.assertEqual(outs, [{"key": "e", "seq": 1, "error": "pyagent.CustomError",
                                 "message": "('custom failure', 7)", "code": 7,
                                 "type_name": None}])

    def test_durable_builtin_exception_replayed(self):
        outs = self.crash_and_resume({"key": "e", "op": "durable_error", "kind": "value",
                                      "seq": 1})
        self.assertEqual(outs[0]["error"], "builtins.ValueError")
        self.assertEqual(outs[0]["message"], "value failure")

    def two_arg_replayed(self, sync):
        # TwoArg's __init__ takes (msg, code) but passes on msg alone, so
        # pickle cannot re-create it from its args: it came back as an
        # eddy.DurableCallError, and `except TwoArg` missed it.
        outs = self.crash_and_resume({"key": "e", "op": "durable_error", "kind": "two_arg",
                                      "sync": sync, "seq": 1})
        self.assertEqual(outs, [{"key": "e", "seq": 1, "caught": "TwoArg", "message": "two",
                                 "args": ["two"], "code": 5}])

    def test_durable_exception_rebuilt_without_its_init(self):
        self.two_arg_replayed(sync=False)

    def test_durable_sync_exception_rebuilt_without_its_init(self):
        self.two_arg_replayed(sync=True)

    def replayed_error(self, kind):
        outs = self.crash_and_resume({"key": "e", "op": "durable_error", "kind": kind,
                                      "detail": True, "seq": 1})
        self.assertEqual(len(outs), 1)
        return outs[0]

    def test_durable_exception_keeps_its_picklable_attributes(self):
        # One attribute that does not pickle lost them all: the replay's
        # HTTPError had no status.
        o = self.replayed_error("unpicklable_attribute")
        self.assertEqual((o["error"], o["message"]), ("pyagent.HTTPError", "404"))
        self.assertEqual(o["detail"], {"args": ["404"], "attributes": {"status": 404},
                                       "dropped": [], "causes": []})

    def test_durable_exception_keeps_its_args_in_place(self):
        # An arg that does not pickle is replayed as its repr, in its place:
        # the replay's args were the repr of the whole tuple, alone.
        o = self.replayed_error("unpicklable_arg")
        self.assertEqual((o["error"], o["code"]), ("pyagent.ApiError", 502))
        args = o["detail"]["args"]
        self.assertEqual(args[:2], ["bad gateway", 502])
        self.assertEqual(len(args), 3)
        self.assertTrue(args[2].startswith("<unlocked _thread.lock object at 0x"), args)
        self.assertEqual(o["detail"]["attributes"], {"code": 502})

    def test_durable_exception_keeps_its_cause(self):
        # raise X from Y: __cause__ was lost on every replay, pickle keeping
        # none. Each cause is rebuilt by the same rules.
        o = self.replayed_error("cause")
        self.assertEqual((o["error"], o["message"]), ("builtins.ValueError", "outer"))
        self.assertEqual(o["detail"]["causes"], [["pyagent.HTTPError", "503", 503],
                                                 ["builtins.KeyError", "'k'", None]])

    def test_replayed_exception_says_so(self):
        # The action lets the replayed exception escape: eddy stopped with
        # the message of the first run's failure, every time, and nothing
        # told that the call had not been made again.
        counter, crash, state = self.path("counter"), self.path("crash.flag"), self.path("state")
        rec = {"key": "e", "op": "durable_error", "kind": "unpicklable_arg",
               "raise_after_crash": True, "counter": counter, "crash": crash, "seq": 1}
        open(crash, "w").close()
        first = self.run_py([rec], "--state", state)
        self.assertEqual(first.rc, 3, first.stderr)
        os.unlink(crash)
        note = ("eddy: replayed from the journal: pyagent.count_and_raise was not called "
                "again. It raised this exception in a run of this action execution before "
                "eddy restarted, and a durable call's exception is journaled as its result "
                "is: it is final for this action execution, even once what made the call "
                "fail is fixed. To try a failing call again, write the retry into the action "
                "(catch the exception and make the call again), or, once the cause is "
                "fixed, run eddy again with --retry-failed-calls. What differs from the "
                "exception raised: args[2] could not be pickled and is its repr() text.\n")
        stopped = self.run_py([rec], "--state", state)
        self.assertEqual(stopped.rc, 1, stopped.stderr)
        err = stopped.stderr.decode()
        self.assertIn("action 'dispatch' failed for key \"e\"", err)
        self.assertIn("\npyagent.ApiError: ('bad gateway', 502, '<unlocked _thread.lock", err)
        self.assertIn(note, err)  # after the traceback, as Python prints notes
        skipped = self.run_py([rec], "--state", state, "--on-error", "skip")
        self.assertOk(skipped)
        (dead,) = skipped.dead()
        self.assertEqual(dead["error"]["type"], "pyagent.ApiError")
        self.assertTrue(dead["error"]["message"].endswith(note), dead["error"]["message"])
        self.assertEqual(lines(counter), 1)

    def test_durable_exception_fallback_type(self):
        # A class defined in a function: neither pickled nor found by name.
        outs = self.crash_and_resume({"key": "e", "op": "durable_error", "kind": "local",
                                      "seq": 1})
        name = "pyagent.count_and_raise.<locals>.Local"
        self.assertEqual(outs[0]["error"], "eddy.DurableCallError")
        self.assertEqual(outs[0]["type_name"], name)
        self.assertEqual(outs[0]["message"], name + ": from a local class")

    def test_durable_exception_whose_type_cannot_be_named(self):
        # A class whose __module__ can be neither compared nor formatted:
        # its qualified name cannot be made, and the exception was
        # journaled without its message (replayed as "Odd: ").
        outs = self.crash_and_resume({"key": "e", "op": "durable_error", "kind": "odd_module",
                                      "seq": 1})
        self.assertEqual(outs, [{"key": "e", "seq": 1, "error": "eddy.DurableCallError",
                                 "message": "Odd: odd failure", "code": None,
                                 "type_name": "Odd"}])

    def test_durable_call_of_a_function_with_a_lone_surrogate_in_its_name(self):
        # Its id goes to the journal, which holds UTF-8: a bare
        # UnicodeEncodeError, now a ValueError that says where, as for values.
        why = ("durable call: the id of its function (fn.__module__ + '.' + fn.__qualname__) "
               "'pyagent.caf\\udce9' holds a lone surrogate ('\\udce9' at index 11), which "
               "is not UTF-8 text (")
        for extra in ([], ["--state", self.path("state")]):
            res = self.run_py([{"key": "s", "op": "durable_surrogate_fn", "seq": 1}], *extra)
            self.assertOk(res)
            (o,) = res.outputs()
            self.assertEqual(sorted(o), ["async", "key", "seq", "sync"])
            for how in ("sync", "async"):
                self.assertTrue(o[how].startswith(why), o[how])

    def test_durable_exception_with_a_lone_surrogate_replayed(self):
        # The journal holds UTF-8: a message with a lone surrogate (a file
        # name os.fsdecode made) lost the message and the pickle, and the
        # replay raised ValueError(""). Now the exception unpickles whole.
        outs = self.crash_and_resume({"key": "e", "op": "durable_error", "kind": "surrogate",
                                      "seq": 1})
        self.assertEqual(outs, [{"key": "e", "seq": 1, "error": "builtins.ValueError",
                                 "message": "cannot parse caf\\udce9.txt", "surrogates": 1,
                                 "code": None, "type_name": None}])

    def test_durable_exception_message_with_a_lone_surrogate_journaled(self):
        # A type found by no name is replayed from the journaled type name
        # and message, which has the surrogate as a backslash escape (it was
        # journaled as "").
        outs = self.crash_and_resume({"key": "e", "op": "durable_error",
                                      "kind": "surrogate_local", "seq": 1})
        name = "pyagent.count_and_raise.<locals>.Local"
        self.assertEqual(outs, [{"key": "e", "seq": 1, "error": "eddy.DurableCallError",
                                 "message": name + ": cannot parse caf\\udce9.txt",
                                 "surrogates": 0, "code": None, "type_name": name}])

    def test_partial_bound_arguments_are_part_of_the_call(self):
        # A durable call through functools.partial is the call of the function
        # behind it with the partial's bound arguments and the call's own:
        # the digest covered only the call's, so a re-run whose partial bound
        # something else got the journaled result of the old call, silently,
        # even under --strict-determinism.
        want = {"pos": ["%r", "'x'"], "kw": ["'x'", "tag=%r"],
                "inner": ["%r", "'outer'", "'x'"], "pickled": ["b%r", "'x'"]}
        for where, shape in want.items():
            with self.subTest(where=where):
                counter, crash = self.path(where + ".counter"), self.path(where + ".crash")
                rec = {"key": "p", "op": "durable_partial", "where": where, "seq": 1,
                       "counter": counter, "crash": crash}

                def run(state, bound, *args):
                    return self.run_py([rec], "--state", self.path(where + state), *args,
                                       extra_env={"EDDY_TEST_BOUND": bound})

                def expect(bound):
                    return [{"key": "p", "seq": 1, "v": [s % bound if "%" in s else s
                                                         for s in shape]}]

                # By default: a warning, and the call runs again.
                open(crash, "w").close()
                first = run(".st1", "a")
                self.assertEqual(first.rc, 3, first.stderr)
                self.assertEqual(lines(counter), 1)
                os.unlink(crash)
                second = run(".st1", "b")
                self.assertOk(second)
                self.assertIn(b"warning: non-deterministic durable call 0 of action "
                              b"'dispatch'", second.stderr)
                # Named by the function behind the partials, however nested.
                self.assertIn(b"the journal has pyagent.count_args(args ", second.stderr)
                self.assertEqual(lines(counter), 2, "replayed for other bound arguments")
                self.assertEqual(second.outputs(), expect("b"))
                # Strictly: the action fails, and the call does not run.
                open(crash, "w").close()
                self.assertEqual(run(".st2", "a").rc, 3)
                self.assertEqual(lines(counter), 3)
                os.unlink(crash)
                strict = run(".st2", "b", "--strict-determinism")
                self.assertEqual(strict.rc, 1, strict.stderr)
                self.assertIn(b"NonDeterminism", strict.stderr)
                self.assertEqual(lines(counter), 3)
                # The same bound arguments still replay, from another process.
                same = run(".st2", "a", "--strict-determinism")
                self.assertOk(same)
                self.assertIn(b"1 durable call replayed", same.stderr)
                self.assertEqual(lines(counter), 3, "a journaled call ran again")
                self.assertEqual(same.outputs(), expect("a"))

    def test_nul_characters_survive_a_crash(self):
        # A journaled result, an event and memory holding "\u0000": the
        # state written before the crash must read back as it was.
        outs = self.crash_and_resume({"key": "n", "op": "durable_nul", "seq": 1})
        self.assertEqual(outs, [{"key": "n", "seq": 1, "v": "a\x00b", "event": "x\x00y",
                                 "memory": "c\x00d"}])

    def test_strict_nondeterminism_fails_an_action_that_catches_it(self):
        # The action caught the NonDeterminismError and went on: its later
        # calls were answered from the journal past the divergence and its
        # output written (exit 0). They raise it again now, and the action
        # execution fails with the error, caught or not.
        counter = self.path("counter")
        crash = self.path("crash.flag")
        state = self.path("state")
        rec = {"key": "n", "op": "nondet_caught", "seq": 1, "counter": counter, "crash": crash}
        open(crash, "w").close()
        first = self.run_py([rec], "--state", state, extra_env={"EDDY_TEST_VARIANT": "a"})
        self.assertEqual(first.rc, 3, first.stderr)
        self.assertEqual(lines(counter), 3)
        os.unlink(crash)
        second = self.run_py([rec], "--state", state, "--strict-determinism",
                             extra_env={"EDDY_TEST_VARIANT": "b"})
        self.assertEqual(second.rc, 1, second.stderr)
        err = second.stderr.decode()
        self.assertIn("action 'dispatch' failed for key \"n\" on InputEvent (input line 1): "
                      "eddy.NonDeterminismError: durable call 0 of action 'dispatch' for key "
                      "\"n\" was pyagent.count(args ", err)
        self.assertNotRegex(err, "durable calls? replayed")
        self.assertEqual(second.outputs() if os.path.exists(second.out_path) else [], [])
        self.assertEqual(lines(counter), 3)  # nothing ran again
        skipped = self.run_py([rec], "--state", state, "--strict-determinism", "--on-error",
                              "skip", extra_env={"EDDY_TEST_VARIANT": "b"})
        self.assertOk(skipped)
        self.assertEqual(skipped.outputs() if os.path.exists(skipped.out_path) else [], [])
        (dead,) = skipped.dead()
        self.assertEqual(dead["error"]["type"], "eddy.NonDeterminismError")
        self.assertEqual(lines(counter), 3)

    def test_durable_body_cannot_use_the_context(self):
        res = self.run_py([{"key": "r", "op": "durable_reenter", "seq": 1}],
                          "--state", self.path("st"))
        self.assertOk(res)
        self.assertEqual(len(res.outputs()), 1)
        self.assertIn("cannot be used inside the body of a durable call",
                      res.outputs()[0]["body"])

    def test_durable_without_state_runs_each_time(self):
        counter = self.path("counter")
        recs = [{"key": "d", "op": "durable", "x": i, "seq": i, "counter": counter}
                for i in range(3)]
        res = self.run_py(recs)
        self.assertOk(res)
        self.assertEqual(lines(counter), 3)
        self.assertEqual([o["v"] for o in res.outputs()], [{"v": 0}, {"v": 1}, {"v": 2}])

    def test_unjournalable_result_without_state(self):
        """Without --state nothing is journaled, so a result that pickle
        refuses comes back from both kinds of durable call; with --state it
        is a TypeError."""
        rec = {"key": "u", "op": "durable_unpicklable", "seq": 1}
        res = self.run_py([rec])
        self.assertOk(res)
        self.assertEqual(res.outputs(), [{"key": "u", "seq": 1, "sync": "lock",
                                          "async": "lock"}])
        res = self.run_py([rec], "--state", self.path("state"))
        self.assertOk(res)
        (o,) = res.outputs()
        for kind in ("sync", "async"):
            self.assertIn("can be journaled neither as JSON nor with pickle", o[kind])

    def test_state_resume_finishes_other_keys(self):
        counter = self.path("counter")
        state = self.path("state")
        recs = [{"key": "k%d" % i, "op": "durable", "x": i, "seq": i, "counter": counter}
                for i in range(20)]
        res = self.run_py(recs, "--state", state)
        self.assertOk(res)
        again = self.run_py(recs, "--state", state)
        self.assertOk(again)
        self.assertEqual(sorted(o["seq"] for o in again.outputs()), list(range(20)))
        self.assertEqual(lines(counter), 20)

    # ------------------------------------------------------------ errors

    def test_uncaught_exception_stops_by_default(self):
        recs = [{"key": "ok", "op": "chain", "x": 1, "seq": 0},
                {"key": "bad", "op": "raise", "seq": 1}]
        res = self.run_py(recs)
        self.assertEqual(res.rc, 1)
        err = res.stderr.decode()
        self.assertIn("action 'dispatch' failed for key \"bad\"", err)
        self.assertIn("ValueError: bad input 1", err)
        self.assertIn("Traceback (most recent call last)", err)
        self.assertIn("pyagent.py", err)

    def test_exception_without_a_message(self):
        """An exception with an empty message still reads as a sentence;
        CPython's own out-of-memory error says so."""
        for op, want in (("raise_bare", "ValueError: (no message)"),
                         ("raise_memory", "MemoryError: out of memory")):
            res = self.run_py([{"key": "k", "op": op, "seq": 0}])
            self.assertEqual(res.rc, 1, res.stderr)
            err = res.stderr.decode()
            self.assertIn("action 'dispatch' failed for key \"k\"", err)
            self.assertIn(want + "\n", err)
            self.assertIn("Traceback (most recent call last)", err)

    def test_exception_text_that_is_not_utf8_or_not_formattable(self):
        """A lone surrogate in the message (os.fsdecode of a name that is not
        UTF-8) left "ValueError: ?" and no traceback; an exception whose
        __str__ raises left its bare class name and no traceback. Now the
        message has the surrogate as a backslash escape (the dead letter is
        UTF-8 JSON), the type is qualified and the traceback is there."""
        path = self.path("odd.py")
        with open(path, "w") as f:
            f.write("import os\n"
                    "from eddy import action, InputEvent\n"
                    "class BadStr(Exception):\n"
                    "    def __str__(self):\n"
                    "        raise RuntimeError('no str')\n"
                    "@action(InputEvent)\n"
                    "def go(event, ctx):\n"
                    "    if event.input['op'] == 'fsdecode':\n"
                    "        raise ValueError('cannot parse ' + os.fsdecode(b'caf\\xe9.txt'))\n"
                    "    raise BadStr('x')\n")
        surrogate = ("cannot parse caf\\udce9.txt\n"
                     "Traceback (most recent call last):\n"
                     '  File "%s", line 9, in go\n'
                     "    raise ValueError('cannot parse ' + os.fsdecode(b'caf\\xe9.txt'))\n"
                     "ValueError: cannot parse caf\\udce9.txt\n" % path)
        bad_str = ("(the exception cannot be formatted: its str() raised RuntimeError: no str)\n"
                   "Traceback (most recent call last):\n"
                   '  File "%s", line 10, in go\n'
                   "    raise BadStr('x')\n"
                   "odd.BadStr: <exception str() failed>\n" % path)
        res = self.run_py([{"key": "k", "op": "fsdecode"}], agent=path)
        self.assertEqual(res.rc, 1, res.stderr)
        self.assertIn('eddy: action \'go\' failed for key "k" on InputEvent (input line 1): '
                      "ValueError: " + surrogate, res.stderr.decode())
        res = self.run_py([{"key": "k", "op": "bad_str"}], agent=path)
        self.assertEqual(res.rc, 1, res.stderr)
        self.assertIn('eddy: action \'go\' failed for key "k" on InputEvent (input line 1): '
                      "odd.BadStr: " + bad_str, res.stderr.decode())
        res = self.run_py([{"key": "k", "op": "fsdecode"}, {"key": "k", "op": "bad_str"}],
                          "--on-error", "skip", agent=path)
        self.assertOk(res)
        self.assertEqual([d["error"] for d in res.dead()],
                         [{"type": "ValueError", "message": surrogate},
                          {"type": "odd.BadStr", "message": bad_str}])
        # At load, the same.
        err = self.load_error("odd_load.py", "import os\n"
                              "raise ValueError('cannot parse ' + os.fsdecode(b'caf\\xe9.txt'))\n")
        self.assertEqual(err, "eddy: cannot load Python agent odd_load.py: ValueError: cannot "
                         "parse caf\\udce9.txt\n"
                         "Traceback (most recent call last):\n"
                         '  File "%s", line 2, in <module>\n'
                         "    raise ValueError('cannot parse ' + os.fsdecode(b'caf\\xe9.txt'))\n"
                         "ValueError: cannot parse caf\\udce9.txt\n" % self.path("odd_load.py"))

    def test_uncaught_exception_skip(self):
        counter = self.path("counter")
        recs = [{"key": "bad", "op": "raise", "seq": 0},
                {"key": "bad2", "op": "raise_async", "seq": 1, "counter": counter},
                {"key": "ok", "op": "chain", "x": 1, "seq": 2},
                {"key": "bad", "op": "chain", "x": 2, "seq": 3},
                {"key": "bad3", "op": "durable_error", "kind": "custom", "raise": True,
                 "seq": 4, "counter": counter}]
        res = self.run_py(recs, "--on-error", "skip")
        self.assertOk(res)
        self.assertEqual(sorted((o["seq"], o["x"]) for o in res.outputs()), [(2, 4), (3, 6)])
        dead = sorted(res.dead(), key=lambda d: d["line"])
        self.assertEqual(len(dead), 3)
        # Built-in exceptions by their name, others qualified by their module.
        self.assertEqual([d["error"]["type"] for d in dead],
                         ["ValueError", "ValueError", "pyagent.CustomError"])
        self.assertIn("bad input 0", dead[0]["error"]["message"])
        self.assertIn("value failure", dead[1]["error"]["message"])
        self.assertEqual(dead[0]["action"], "dispatch")

    def skipped_run(self, log, *args, crash=None):
        recs = [{"key": "k", "n": 1, "fail": True, "log": log},
                {"key": "k", "n": 2, "log": log}]
        if crash is not None:
            recs = [dict(recs[0], crash=crash)]
        return self.run_py(recs, "--on-error", "skip", *args,
                           agent=os.path.join(PY_AGENTS, "skipped_run.py"))

    def test_skip_keeps_what_the_failed_run_finished(self):
        # What --on-error skip keeps of a failed run (README, durability.md):
        # the outputs and memory writes of the actions that finished before
        # the failure; not what the failing action or the actions still in
        # flight did, though those go on to their end and their calls run;
        # an action ready to start never runs. The input is dead-lettered,
        # once, and the key's next input starts when the run's last action
        # has ended. With --state the run is over: a rerun takes nothing up.
        for extra in ([], ["--state", self.path("state")]):
            with self.subTest(state=bool(extra)):
                log = self.path("log%d" % len(extra))
                res = self.skipped_run(log, *extra)
                self.assertOk(res)
                self.assertIn(b"2 inputs, 4 outputs, 1 dead-lettered, 6 actions, "
                              b"4 async calls", res.stderr)
                none = {"first": None, "slow": None, "fails": None, "sensory": None}
                self.assertEqual(res.outputs(), [
                    {"n": 1, "by": "first", "before": none},
                    # run 1's first wrote memory and finished: kept; slow's
                    # and fails' writes dropped; sensory memory cleared
                    {"n": 2, "by": "first", "before": dict(none, first=1)},
                    {"n": 2, "by": "fails"},
                    {"n": 2, "by": "slow", "memory": {"first": 2, "slow": 2, "fails": 2,
                                                      "sensory": 2}}])
                (dead,) = res.dead()
                self.assertEqual(dead["line"], 1)
                self.assertEqual(dead["reason"], "action failed")
                self.assertEqual((dead["key"], dead["action"], dead["event_type"]),
                                 ("k", "fails", "Work"))
                self.assertEqual(dead["error"]["type"], "ValueError")
                self.assertIn("run 1 fails", dead["error"]["message"])
                self.assertEqual(dead["input"], {"key": "k", "n": 1, "fail": True, "log": log})
                with open(log) as f:
                    logged = f.read().splitlines()
                # slow 1 went on past the failure (its next call ran), and
                # run 2 waited for it; never 1 and the event slow 1 sent
                # (later 1) never ran.
                self.assertEqual(logged[:4], ["first 1", "slow 1 call", "slow 1 next call",
                                              "first 2"])
                self.assertEqual(sorted(logged[4:]), ["later 2", "never 2", "slow 2 call",
                                                      "slow 2 next call"])
                if extra:
                    inspect = subprocess.run([EDDY, "inspect", "--json", "--key", "k", *extra],
                                             capture_output=True, check=True)
                    st = json.loads(inspect.stdout)
                    self.assertEqual((st["in_flight"], st["journal"]), ([], []))
                    again = self.skipped_run(log, *extra)
                    self.assertOk(again)
                    self.assertIn(b"0 inputs, 0 outputs, 0 dead-lettered", again.stderr)
                    self.assertEqual(len(again.outputs()), 4)
                    self.assertEqual(len(again.dead()), 1)

    def test_skip_crash_before_the_failed_run_ends(self):
        # The dead letter is written when the action fails; the run ends
        # (its journal and pending input deleted) only when its last action
        # in flight has ended. A crash in between resumed the run: the
        # failing action ran again, failed again and was dead-lettered a
        # second time. The run's failure is committed with its dead letter
        # now, and the rerun ends the run as it stood (README,
        # durability.md): no action of it runs (slow does not make its next
        # call), the input is dead-lettered once, and what finished before
        # the failure is not output again.
        log, crash, state = self.path("log"), self.path("crash.flag"), self.path("state")
        open(crash, "w").close()
        first = self.skipped_run(log, "--state", state, crash=crash)
        self.assertEqual(first.rc, 3, first.stderr)  # slow 1 died past the failure
        os.unlink(crash)
        second = self.skipped_run(log, "--state", state, crash=crash)
        self.assertOk(second)
        self.assertIn(b"1 run resumed (1 of them failed: ended with no action run again), "
                      b"1 pending input taken up from the state", second.stderr)
        self.assertEqual([o["by"] for o in second.outputs()], ["first"])
        (dead,) = second.dead()
        self.assertEqual(dead["action"], "fails")
        with open(log) as f:
            self.assertEqual(f.read().splitlines(), ["first 1", "slow 1 call"])
        inspect = subprocess.run([EDDY, "inspect", "--json", "--state", state],
                                 capture_output=True, check=True)
        st = json.loads(inspect.stdout)
        self.assertEqual((st["in_flight"], st["journal"]), ([], []))
        self.assertEqual(st["counts"]["pending"], 0)

    def test_sending_an_input_event_is_refused(self):
        # A new InputEvent, the triggering one, or one named so: each ran
        # the input's actions again, in this run and under this key.
        res = self.run_py([{"key": "i", "op": "send_input", "seq": 1}])
        self.assertOk(res)
        (o,) = res.outputs()
        self.assertEqual(len(o["errors"]), 3)
        for e in o["errors"]:
            self.assertIsNotNone(e)
            self.assertTrue(e.startswith("send_event: an action cannot send an InputEvent: "), e)
        self.assertIn(b" 1 action, ", res.stderr)

    def test_output_event_without_an_output_is_refused(self):
        # OutputEvent() wrote a null line; OutputEvent(output=None) still does.
        res = self.run_py([{"key": "o", "op": "output_missing", "seq": 1}])
        self.assertOk(res)
        with open(res.out_path) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[:2], ["null", '"set later"'])
        (o,) = [json.loads(ln) for ln in lines[2:]]
        self.assertEqual(len(o["errors"]), 3)
        for e in o["errors"]:
            self.assertEqual(e, "send_event: action 'dispatch' for key \"o\" sent an OutputEvent "
                                "without an output (OutputEvent() or no attribute 'output'): "
                                "give OutputEvent(output=value); output=None writes a null line")

    def test_bad_attribute_value_refused(self):
        res = self.run_py([{"key": "b", "op": "bad_attr", "seq": 0}])
        self.assertEqual(res.rc, 1)
        err = res.stderr.decode()
        self.assertIn("TypeError", err)
        self.assertIn("Step attribute 'bad' at ['inner'][1]", err)
        self.assertIn("'set' is not JSON", err)

    def test_bad_attribute_value_catchable(self):
        res = self.run_py([{"key": "b", "op": "bad_attr_caught", "seq": 0}])
        self.assertOk(res)
        (o,) = res.outputs()
        self.assertIn("Step attribute 'when'", o["error"])
        self.assertIn("'module' is not JSON", o["error"])

    def test_depth_limit_is_eddys_everywhere(self):
        # Python refused values past 512 levels where eddy (and a C agent)
        # takes 1000 (EDDY_VALUE_MAX_DEPTH); past 1000 the refusal said "a
        # limit was reached (for example max-run-actions)", and arguments
        # too deep to digest raised a RecursionError from eddy's own code.
        path = self.path("deep.py")
        with open(path, "w") as f:
            f.write("from eddy import action, Event, InputEvent, OutputEvent\n"
                    "class Step(Event):\n"
                    "    pass\n"
                    "def nested(n):\n"
                    "    v = 1\n"
                    "    for _ in range(n):\n"
                    "        v = [v]\n"
                    "    return v\n"
                    "def depth(v):\n"
                    "    d = 0\n"
                    "    while isinstance(v, list):\n"
                    "        v, d = (v[0] if v else None), d + 1\n"
                    "    return d\n"
                    "def keep(x):\n"
                    "    return 1\n"
                    "def empty(n):\n"
                    "    v = []\n"
                    "    for _ in range(n - 1):\n"
                    "        v = [v]\n"
                    "    return v\n"
                    "@action(InputEvent)\n"
                    "async def go(event, ctx):\n"
                    "    n = event.input['n']\n"
                    "    r = {'n': n}\n"
                    "    for name, f in (\n"
                    "            ('set', lambda: ctx.short_term_memory.set('v', nested(n - 1))),\n"
                    "            ('output', lambda: ctx.send_event(OutputEvent(output=nested(n - 1)))),\n"
                    "            ('event', lambda: ctx.send_event(Step(v=nested(n - 1))))):\n"
                    "        try:\n"
                    "            f()\n"
                    "            r[name] = 'ok'\n"
                    "        except Exception as e:\n"
                    "            r[name] = '%s: %s' % (type(e).__name__, e)\n"
                    "    try:\n"
                    "        r['durable'] = depth(await ctx.durable_execute_async(nested, n))\n"
                    "    except TypeError as e:\n"
                    "        r['durable'] = str(e)\n"
                    "    try:\n"
                    "        r['empty'] = depth(await ctx.durable_execute_async(empty, n))\n"
                    "    except TypeError as e:\n"
                    "        r['empty'] = str(e)\n"
                    "    try:\n"
                    "        await ctx.durable_execute_async(keep, nested(n + 500))\n"
                    "    except Exception as e:\n"
                    "        r['args'] = '%s: %s' % (type(e).__name__, e)\n"
                    "    ctx.send_event(OutputEvent(output=r))\n"
                    "@action(Step)\n"
                    "def step(event, ctx):\n"
                    "    pass\n")
        res = self.run_py([{"key": "a", "n": 1000}, {"key": "b", "n": 1001}], "--state",
                          self.path("st"), agent=path)
        self.assertOk(res)
        with open(res.out_path, "rb") as f:
            lines = f.read().splitlines()
        # The one output 1000 levels deep (json.loads would recurse too far).
        self.assertEqual([ln for ln in lines if ln.startswith(b"[")],
                         [b"[" * 999 + b"1" + b"]" * 999])
        outs = {o["n"]: o for o in map(json.loads, [ln for ln in lines if ln.startswith(b"{")])}
        self.assertEqual(len(outs), 2)
        self.assertEqual(outs[1000]["set"], "ok")
        self.assertEqual(outs[1000]["output"], "ok")
        self.assertEqual(outs[1000]["event"], "ok")
        self.assertEqual(outs[1000]["durable"], 1000)
        too_deep = "nested deeper than EDDY_VALUE_MAX_DEPTH (1000) levels of lists and dicts"
        self.assertEqual(outs[1001]["set"], "ValueError: cannot set memory path 'v': the value, "
                         "in the dicts of the path, would be " + too_deep)
        self.assertEqual(outs[1001]["output"], "ValueError: send_event: OutputEvent's "
                         "attributes, in the event's dict of them, are " + too_deep)
        self.assertEqual(outs[1001]["event"], "ValueError: send_event: Step's attributes, in "
                         "the event's dict of them, are " + too_deep)
        self.assertEqual(outs[1001]["durable"], "the result of durable call deep.nested (a "
                         "'list') can be journaled neither as JSON nor with pickle: maximum "
                         "recursion depth exceeded while pickling an object")
        # An empty list as deep as that is a level too (it was journaled as
        # JSON 1001 levels deep).
        self.assertEqual(outs[1000]["empty"], 1000)
        self.assertEqual(outs[1001]["empty"], "the result of durable call deep.empty (a "
                         "'list') can be journaled neither as JSON nor with pickle: maximum "
                         "recursion depth exceeded while pickling an object")
        for o in outs.values():
            self.assertTrue(o["args"].startswith(
                "ValueError: durable call deep.keep: its arguments cannot be digested: they are "
                "not JSON (args at [0][0][0]"), o["args"])
            self.assertTrue(o["args"].endswith(
                too_deep + ", the most a value may have (or a cycle) ('list')), and their "
                "pickle and repr reached Python's recursion limit (arguments nested too deep, "
                "or the action's own calls)"), o["args"])

    def test_lone_surrogate_refused_with_its_place(self):
        # A str with a lone surrogate (os.fsdecode of a name that is not
        # UTF-8) raised a bare UnicodeEncodeError naming neither the
        # attribute nor the memory path nor the place inside the value.
        path = self.path("surrogates.py")
        with open(path, "w") as f:
            f.write("import os\n"
                    "from eddy import action, Event, InputEvent, OutputEvent\n"
                    "class Step(Event):\n"
                    "    pass\n"
                    "S = os.fsdecode(b'caf\\xe9')\n"
                    "@action(InputEvent)\n"
                    "def go(event, ctx):\n"
                    "    stm = ctx.short_term_memory\n"
                    "    errors = []\n"
                    "    for f in (lambda: ctx.send_event(OutputEvent(output={'list': ['ok', S]})),\n"
                    "              lambda: ctx.send_event(Step(name=S)),\n"
                    "              lambda: ctx.send_event(Step(**{S: 1})),\n"
                    "              lambda: stm.set('a.b', {'x': S}),\n"
                    "              lambda: stm.set('a.b', {S: 1}),\n"
                    "              lambda: stm.set(S, 1)):\n"
                    "        try:\n"
                    "            f()\n"
                    "        except ValueError as e:\n"
                    "            errors.append(str(e))\n"
                    "    ctx.send_event(OutputEvent(output=errors))\n")
        res = self.run_py([{"key": "k"}], agent=path)
        self.assertOk(res)
        why = ("'caf\\udce9' holds a lone surrogate ('\\udce9' at index 3), which is not UTF-8 "
               "text (os.fsdecode and errors='surrogateescape' make one of a byte that is not "
               "UTF-8: decode such bytes with errors='replace' or 'backslashreplace')")
        self.assertEqual(res.outputs(), [[
            "OutputEvent attribute 'output' at ['list'][1]: str " + why,
            "Step attribute 'name': str " + why,
            "Step attribute name " + why,
            "memory path 'a.b' at ['x']: str " + why,
            "memory path 'a.b': dict key " + why,
            "MemoryObject.set: memory path " + why]])

    def test_asyncio_refused_clearly(self):
        # As docs/python.md says: eddy's TypeError for what yields something
        # else than an eddy call, asyncio's "no running event loop" (and
        # eddy's hint) for what asks for the loop.
        for op, words in (("asyncio_sleep0", "can await only ctx.execute_async()"),
                          ("asyncio_gather", "something that yielded <_GatheringFuture pending>"),
                          ("asyncio_future", "something that yielded <Future pending>"),
                          ("asyncio_sleep", "no running event loop (eddy runs actions without "
                           "an asyncio event loop"),
                          ("asyncio_create_task", "no running event loop (eddy runs actions "
                           "without an asyncio event loop")):
            res = self.run_py([{"key": "a", "op": op, "seq": 0}])
            self.assertEqual(res.rc, 1, op)
            self.assertIn(words, res.stderr.decode(), op)

    def test_context_refused_on_worker_thread(self):
        res = self.run_py([{"key": "w", "op": "wrong_thread", "seq": 0}])
        self.assertOk(res)
        (o,) = res.outputs()
        self.assertEqual(len(o["errors"]), 3)
        for e in o["errors"]:
            self.assertIn("mailbox thread", e)

    def test_context_refused_after_action_ended(self):
        res = self.run_py([{"key": "s", "op": "finished_ctx", "seq": 0},
                           {"key": "s", "op": "use_saved", "seq": 1}])
        self.assertOk(res)
        (o,) = res.outputs()
        self.assertIn("has ended", o["error"])

    def test_context_refused_to_another_action_execution(self):
        """A context kept from another action execution that is still
        running (suspended) is refused, and so are its memory objects: its
        durable calls took that one's journal positions, so a re-run of it
        found another call there."""
        counter = self.path("counter")
        res = self.run_py([{"key": "a", "op": "keep_ctx", "counter": counter, "seq": 0},
                           {"key": "b", "op": "use_kept", "counter": counter, "seq": 1}],
                          "--state", self.path("state"))
        self.assertOk(res)
        outs = {o["key"]: o for o in res.outputs()}
        self.assertEqual(outs["a"]["v"], "mine")
        errors = outs["b"]["errors"]
        self.assertEqual(len(errors), 11)
        for use, error in errors.items():
            self.assertIsNotNone(error, use)
            self.assertTrue(error.startswith("RuntimeError: "), (use, error))
            self.assertIn("belongs to another action execution", error, use)
        self.assertTrue(errors["durable_execute"].startswith(
            "RuntimeError: RunnerContext.durable_execute: "), errors["durable_execute"])
        self.assertTrue(errors["memory_get"].startswith("RuntimeError: MemoryObject.get: "),
                        errors["memory_get"])
        self.assertEqual(lines(counter), 1, "a call made through the kept context ran")
        self.assertNotIn(b"warning", res.stderr)

    def test_context_refused_in_dropped_coroutine(self):
        """A coroutine that eddy drops unfinished (here, when another key's
        failure stops it) is closed: its finally blocks run and find the
        context refused, as after the end of an action, instead of sending
        and writing what would be silently discarded."""
        report = self.path("report.json")
        res = self.run_py([{"key": "d", "op": "drop_in_finally", "seconds": 2,
                            "report": report, "seq": 0},
                           {"key": "x", "op": "raise_later", "seconds": 0.2, "seq": 1}])
        self.assertEqual(res.rc, 1, res.stderr)
        self.assertIn(b"stopping eddy", res.stderr)
        with open(report) as f:
            r = json.load(f)
        self.assertEqual(sorted(r), ["durable_execute", "memory_set", "send_event"])
        for use, error in r.items():
            self.assertIsNotNone(error, use)
            self.assertIn("has ended unfinished", error, use)

    # ------------------------------------------------------------ memory

    def test_memory_api(self):
        res = self.run_py([{"key": "m", "op": "memory", "seq": 0},
                           {"key": "m", "op": "memory", "seq": 1}])
        self.assertOk(res)
        a, b = res.outputs()
        self.assertEqual(a["get_c"], 1)
        self.assertEqual(a["get_d"], [1, "two", None, True, 2.5])
        self.assertEqual(a["nested_type"], "MemoryObject")
        self.assertEqual(a["nested_c"], 1)
        self.assertEqual(a["via_root"], "g")
        self.assertEqual(a["new_object"], 5)
        self.assertEqual(a["is_exist"], [True, False, True])
        self.assertEqual(a["field_names"], ["c", "d", "e"])
        self.assertEqual(a["fields"], {"c": 1, "d": [1, "two", None, True, 2.5],
                                       "e": "MemoryObject"})
        self.assertEqual(a["root_names"], ["a", "o"])
        self.assertEqual(a["dots_names"], ["", "a.b", "ok", "sub", "x.y"])
        # get_fields gave None for "a.b" and the parent object for "".
        self.assertEqual(a["dots_fields"], {"": 2, "a.b": 1, "ok": 3, "x.y": {"z": 4},
                                            "sub": {"MemoryObject": {"w": 5}}})
        self.assertEqual(a["dots_path"], [None, False])
        self.assertIsNone(a["absent"])
        self.assertIn("memory path 'bad' at ['k']", a["set_bad"])
        self.assertIn("'set' is not JSON", a["set_bad"])
        self.assertEqual("cannot set memory path 'a.b.c.d': 'a.b.c' holds a value, not a "
                         "dict, so nothing stands below it (set a dict there first)",
                         a["set_below_value"])
        self.assertEqual("cannot set memory path 'a.b.e' to a value that is not a dict: an "
                         "object stands there (a dict set there is kept as nested objects, and "
                         "only a dict replaces them: {} empties it; or keep the value under a "
                         "field of its own, 'a.b.e.value')", a["set_value_over_object"])
        self.assertEqual(a["dict_over_object"], ["z"])
        self.assertEqual(a["new_object_over_value"],
                         "cannot make an object at memory path 'nv.v': a value stands there "
                         "(new_object(path, overwrite=True) replaces it)")
        self.assertEqual((a["overwritten"], a["kept"]), ({"w": 2}, {"w": 2}))
        self.assertEqual(a["new_object_under_value"],
                         "cannot make an object at memory path 'nv.v.w.x': 'nv.v.w' holds a "
                         "value, not a dict, so nothing stands below it (set a dict there "
                         "first)")
        self.assertEqual(b["overwritten"], {"w": 2})
        self.assertIn("bad memory path 'a..b'", a["bad_path"])
        self.assertEqual((a["runs"], b["runs"]), (1, 2))  # short-term memory persists
        self.assertIn("runs", b["root_names"])

    def test_sensory_memory_cleared_between_runs(self):
        res = self.run_py([{"key": "s", "op": "sensory", "seq": 0},
                           {"key": "s", "op": "sensory", "seq": 1}])
        self.assertOk(res)
        outs = res.outputs()
        firsts = [o for o in outs if "sensory_before" in o]
        sames = [o for o in outs if "sensory_same_run" in o]
        self.assertEqual([o["sensory_before"] for o in firsts], [None, None])
        self.assertEqual([o["stm_before"] for o in firsts], [None, 0])
        self.assertEqual([o["sensory_same_run"] for o in sames], [0, 1])

    # ------------------------------------------------------------ the GIL

    def test_workers_run_python_while_mailbox_steps_other_keys(self):
        # One worker spins in pure Python (it needs the GIL all along) while
        # the mailbox steps quick actions of other keys: both must progress.
        recs = [{"key": "spin", "op": "spin", "seconds": 0.6, "seq": 0}]
        recs += [{"key": "q%d" % i, "op": "quick", "seq": i + 1} for i in range(200)]
        t0 = time.monotonic()
        res = self.run_py(recs, "--async-threads", "4", "--max-in-flight", "4")
        elapsed = time.monotonic() - t0
        self.assertOk(res)
        outs = res.outputs()
        spin = [o for o in outs if o["key"] == "spin"][0]
        quick = [o for o in outs if o["key"] != "spin"]
        self.assertEqual(len(quick), 200)
        during = [o for o in quick if spin["start"] < o["stepped"] < spin["end"]]
        self.assertGreater(len(during), 20, "the mailbox did not step other keys while a "
                           "worker ran Python")
        self.assertGreater(spin["n"], 1000)
        self.assertLess(elapsed, 30)

    # ------------------------------------------------------------ loading

    def test_load_errors_name_the_file(self):
        cases = [("noagent.py", (), "no actions"),
                 ("several.py", (), "several Agent subclasses (First, Second)"),
                 ("several.py", ("--agent", "Third"), "no Agent subclass named 'Third'"),
                 ("broken.py", (), "this agent is broken on purpose")]
        for name, args, words in cases:
            path = os.path.join(PY_AGENTS, name)
            res = self.run_py([{"key": "k"}], *args, agent=path)
            self.assertEqual(res.rc, 2, name)
            err = res.stderr.decode()
            self.assertIn(name, err)
            self.assertIn(words, err)

    def test_agent_file_named_py_in_any_case(self):
        # A name ending in .PY is Python too (one named without .py is said
        # to be no shared object: test_core's test_agent_that_is_no_shared_object).
        with open(AGENT, "rb") as f:
            source = f.read()
        for name in ("agent.PY", "Agent.Py"):
            with open(self.path(name), "wb") as f:
                f.write(source)
            res = self.run_py([{"key": "k", "op": "key", "seq": 1}], "--agent", "TestAgent",
                              agent=self.path(name))
            self.assertOk(res)
            self.assertEqual([o["ctx_key"] for o in res.outputs()], ["k"])

    def test_imported_agent_classes_and_actions(self):
        # A file that only imports an Agent subclass was refused with "no
        # actions" and no word of --agent, which runs it: the message names
        # the classes it imports. Imported @action functions are actions of
        # the file (from shared import *), as documented.
        files = {
            "shared.py": "from eddy import action, InputEvent, OutputEvent\n"
                         "@action(InputEvent)\n"
                         "def audit(event, ctx):\n"
                         "    ctx.send_event(OutputEvent(output='audit'))\n",
            "myagents.py": "from eddy import Agent, action, InputEvent, OutputEvent\n"
                           "class ReviewAgent(Agent):\n"
                           "    @action(InputEvent)\n"
                           "    @staticmethod\n"
                           "    def review(event, ctx):\n"
                           "        ctx.send_event(OutputEvent(output='review'))\n"
                           "class OtherAgent(Agent):\n"
                           "    pass\n",
            "star.py": "from shared import *\n"
                       "from eddy import action, InputEvent, OutputEvent\n"
                       "@action(InputEvent)\n"
                       "def mine(event, ctx):\n"
                       "    ctx.send_event(OutputEvent(output='mine'))\n",
        }
        for name, source in files.items():
            with open(self.path(name), "w") as f:
                f.write(source)
        res = self.run_py([{"key": "k"}], agent=self.path("star.py"))
        self.assertOk(res)
        self.assertEqual(res.outputs(), ["audit", "mine"])
        why = ("no actions: decorate static methods of an Agent subclass (or module-level "
               "functions) with @action(EventType)")
        self.assertEqual(
            self.load_error("one.py", "from myagents import ReviewAgent\n"),
            "eddy: cannot load Python agent one.py: %s; it imports the Agent subclass "
            "ReviewAgent: choose it with --agent ReviewAgent\n" % why)
        self.assertEqual(
            self.load_error("two.py", "from myagents import *\n"),
            "eddy: cannot load Python agent two.py: %s; it imports the Agent subclasses "
            "OtherAgent, ReviewAgent: choose one with --agent NAME\n" % why)
        res = self.run_py([{"key": "k"}], "--agent", "ReviewAgent", agent=self.path("one.py"))
        self.assertOk(res)
        self.assertEqual(res.outputs(), ["review"])
        self.assertIn("no Agent subclass named 'Nope' (found: OtherAgent, ReviewAgent)",
                      self.load_error_agent("two.py", "Nope"))

    def test_memory_written_beside_a_read_is_warned_about(self):
        # Python QA: an action that read a field and awaited, while another
        # of the run wrote it and finished, re-ran after a crash reading the
        # write, and its durable call differed. eddy cannot replay that read;
        # it now says so when the write lands. Not for a reader triggered by
        # the writer's event, nor for other fields; once per writer, reader
        # and path.
        agent = self.path("rw.py")
        with open(agent, "w") as f:
            f.write("from eddy import Agent, Event, InputEvent, OutputEvent, action\n"
                    "class Next(Event):\n"
                    "    pass\n"
                    "class A(Agent):\n"
                    "    @action(InputEvent)\n"
                    "    @staticmethod\n"
                    "    async def prompt(event, ctx):\n"
                    "        h = ctx.short_term_memory.get('history')\n"
                    "        ctx.short_term_memory.is_exist('unrelated')\n"
                    "        ctx.short_term_memory.set('own', 1)\n"
                    "        ctx.short_term_memory.get('own')  # its own write: no warning\n"
                    "        await ctx.sleep(0.01)\n"
                    "        ctx.send_event(OutputEvent(output=h is not None))\n"
                    "    @action(InputEvent)\n"
                    "    @staticmethod\n"
                    "    def remember(event, ctx):\n"
                    "        ctx.short_term_memory.set('history.last', event.input['v'])\n"
                    "        ctx.short_term_memory.set('other', 1)\n"
                    "        ctx.short_term_memory.set('own', 2)\n"
                    "        ctx.send_event(Next())\n"
                    "    @action(Next)\n"
                    "    @staticmethod\n"
                    "    def after(event, ctx):\n"
                    "        ctx.short_term_memory.set('seen', ctx.short_term_memory.get('history.last'))\n")
        res = self.run_py([{"key": "a", "v": 1}, {"key": "b", "v": 2}, {"key": "a", "v": 3}],
                          agent=agent)
        self.assertOk(res)
        self.assertEqual(res.stderr.count(b"warning"), 1, res.stderr)
        self.assertIn(b"eddy: warning: action 'remember' for key \"a\" wrote short-term memory at "
                      b"'history.last', which action 'prompt', running beside it, had read (at "
                      b"'history'): after a crash (with a state) 'prompt' runs again", res.stderr)

    def test_agent_named_like_a_standard_module_is_warned_about(self):
        # python.md said json.py was imported as eddy_agent_json: it is json,
        # and hides the standard module from later imports. Now a warning;
        # none for a name whose module is loaded already (os.py is
        # eddy_agent_os, and `import os` still gives os).
        source = ("from eddy import Agent, InputEvent, OutputEvent, action\n"
                  "class A(Agent):\n"
                  "    @action(InputEvent)\n"
                  "    @staticmethod\n"
                  "    def go(event, ctx):\n"
                  "        ctx.send_event(OutputEvent(output=__name__))\n")
        for name, module, warned in (("csv", "csv", True), ("os", "eddy_agent_os", False)):
            with open(self.path(name + ".py"), "w") as f:
                f.write(source)
            res = self.run_py([{"key": "k"}], agent=self.path(name + ".py"))
            self.assertOk(res)
            self.assertEqual(res.outputs(), [module])
            self.assertEqual(b"eddy: warning: %s.py has the name of Python's standard module %s: "
                             b"its folder goes first on sys.path" % (name.encode(), name.encode())
                             in res.stderr, warned, res.stderr)

    def test_retry_failed_calls_calls_a_journaled_failure_again(self):
        # A failure inside a durable call was journaled and replayed on every
        # rerun, even once its cause was fixed: --retry-failed-calls calls
        # it again (and what the action did after it), the calls before it
        # still replayed.
        log, up = self.path("calls.log"), self.path("up.flag")
        agent = self.path("svc.py")
        with open(agent, "w") as f:
            f.write("import os\n"
                    "from eddy import Agent, InputEvent, OutputEvent, action\n"
                    "def note(what):\n"
                    "    with open(%r, 'a') as f:\n"
                    "        f.write(what + '\\n')\n"
                    "def before(x):\n"
                    "    note('before')\n"
                    "    return x\n"
                    "def call(x):\n"
                    "    note('call')\n"
                    "    if not os.path.exists(%r):\n"
                    "        raise ConnectionError('service down')\n"
                    "    return x * 2\n"
                    "class A(Agent):\n"
                    "    @action(InputEvent)\n"
                    "    @staticmethod\n"
                    "    async def go(event, ctx):\n"
                    "        a = await ctx.durable_execute_async(before, event.input['x'])\n"
                    "        v = await ctx.durable_execute_async(call, a)\n"
                    "        ctx.send_event(OutputEvent(output={'v': v}))\n" % (log, up))
        state = self.path("st")
        first = self.run_py([{"key": "a", "x": 1}], "--state", state, agent=agent)
        self.assertEqual(first.rc, 1, first.stderr)
        self.assertIn(b"ConnectionError: service down", first.stderr)
        open(up, "w").close()
        again = self.run_py([{"key": "a", "x": 1}], "--state", state, agent=agent)
        self.assertEqual(again.rc, 1, again.stderr)  # replayed, not called
        self.assertIn(b"replayed from the journal: svc.call was not called again", again.stderr)
        self.assertEqual(lines(log), 2)
        retried = self.run_py([{"key": "a", "x": 1}], "--state", state,
                              "--retry-failed-calls", "--strict-determinism", agent=agent)
        self.assertOk(retried)
        self.assertEqual(retried.outputs(), [{"v": 2}])
        self.assertIn(b"eddy: note: durable call 1 of action 'go' for key \"a\" raised "
                      b"ConnectionError before; calling svc.call again (--retry-failed-calls)",
                      retried.stderr)
        self.assertNotIn(b"non-deterministic", retried.stderr)
        with open(log) as f:
            self.assertEqual(f.read().split(), ["before", "call", "call"])

    def test_retry_failed_calls_keeps_a_later_pending_for_its_reconciler(self):
        # Review: the retry cut the journal from the failed call on, so a
        # reconciled call after it whose outcome was unknown (PENDING, the
        # process killed in it) ran again instead of its reconciler. Only the
        # failed call's record goes now; the rest replays while the action
        # makes the same calls.
        log, crash = self.path("calls.log"), self.path("crash.flag")
        agent = self.path("recon.py")
        with open(agent, "w") as f:
            f.write("import os\n"
                    "from eddy import Agent, InputEvent, OutputEvent, action\n"
                    "def note(what):\n"
                    "    with open(%r, 'a') as f:\n"
                    "        f.write(what + '\\n')\n"
                    "def flaky():\n"
                    "    note('flaky')\n"
                    "    raise ConnectionError('still down')\n"
                    "def charge(x):\n"
                    "    note('charge')\n"
                    "    if os.path.exists(%r):\n"
                    "        os._exit(3)\n"
                    "    return x\n"
                    "def reconcile():\n"
                    "    note('reconcile')\n"
                    "    return 7\n"
                    "class A(Agent):\n"
                    "    @action(InputEvent)\n"
                    "    @staticmethod\n"
                    "    async def go(event, ctx):\n"
                    "        try:\n"
                    "            await ctx.durable_execute_async(flaky)\n"
                    "        except ConnectionError:\n"
                    "            pass\n"
                    "        v = await ctx.durable_execute_async(charge, 7, reconciler=reconcile)\n"
                    "        ctx.send_event(OutputEvent(output=v))\n" % (log, crash))
        state = self.path("st")
        open(crash, "w").close()
        first = self.run_py([{"key": "a"}], "--state", state, agent=agent)
        self.assertEqual(first.rc, 3, first.stderr)
        os.unlink(crash)
        again = self.run_py([{"key": "a"}], "--state", state, "--retry-failed-calls",
                            "--strict-determinism", agent=agent)
        self.assertOk(again)
        self.assertEqual(again.outputs(), [7])
        with open(log) as f:
            self.assertEqual(f.read().split(), ["flaky", "charge", "flaky", "reconcile"])

    def test_retry_then_crash_replays_the_new_path(self):
        # Review: the retried call's new outcome and the cut of the old
        # path's records after it were committed apart, so a crash between
        # them left both, and the next run took the new path for
        # non-determinism (under --strict-determinism: a failure on every
        # rerun). The retry now cuts the old records at once.
        log, up, crash = self.path("calls.log"), self.path("up.flag"), self.path("crash.flag")
        agent = self.path("path.py")
        with open(agent, "w") as f:
            f.write("import os\n"
                    "from eddy import Agent, InputEvent, OutputEvent, action\n"
                    "def note(what):\n"
                    "    with open(%r, 'a') as f:\n"
                    "        f.write(what + '\\n')\n"
                    "    return what\n"
                    "def flaky():\n"
                    "    note('flaky')\n"
                    "    if not os.path.exists(%r):\n"
                    "        raise ConnectionError('down')\n"
                    "    return 'up'\n"
                    "class A(Agent):\n"
                    "    @action(InputEvent)\n"
                    "    @staticmethod\n"
                    "    async def go(event, ctx):\n"
                    "        try:\n"
                    "            got = await ctx.durable_execute_async(flaky)\n"
                    "        except ConnectionError:\n"
                    "            got = 'down'\n"
                    "        if got == 'up' and os.path.exists(%r):\n"
                    "            os._exit(3)  # the retry's outcome committed, nothing after\n"
                    "        other = await ctx.durable_execute_async(note, 'B' if got == 'down' else 'C')\n"
                    "        if os.path.exists(%r):\n"
                    "            os._exit(3)\n"
                    "        ctx.send_event(OutputEvent(output=[got, other]))\n"
                    % (log, up, crash, crash))
        state = self.path("st")
        open(crash, "w").close()
        first = self.run_py([{"key": "a"}], "--state", state, agent=agent)
        self.assertEqual(first.rc, 3, first.stderr)
        open(up, "w").close()
        second = self.run_py([{"key": "a"}], "--state", state, "--retry-failed-calls",
                             agent=agent)
        self.assertEqual(second.rc, 3, second.stderr)
        os.unlink(crash)
        third = self.run_py([{"key": "a"}], "--state", state, "--strict-determinism",
                            agent=agent)
        self.assertOk(third)
        self.assertEqual(third.outputs(), [["up", "C"]])
        self.assertNotIn(b"non-deterministic", third.stderr)
        with open(log) as f:
            self.assertEqual(f.read().split(), ["flaky", "B", "flaky", "C"])

    def test_a_stopped_retry_puts_back_what_it_had_not_replayed(self):
        # Chaos QA: a retry run ended by a clean stop (another key failing
        # under --on-error stop) before key a replayed the PENDING record of
        # its reconciled call had dropped it: the next run called the
        # function again instead of its reconciler. The stop now puts back
        # the records the retry took out of the store and had not replayed.
        log, down, bfail = self.path("calls.log"), self.path("down"), self.path("bfail")
        crash = self.path("crash")
        agent = self.path("stopretry.py")
        with open(agent, "w") as f:
            f.write("import os, time\n"
                    "from eddy import Agent, InputEvent, OutputEvent, action\n"
                    "def note(what):\n"
                    "    with open(%r, 'a') as f:\n"
                    "        f.write(what + '\\n')\n"
                    "def flaky():\n"
                    "    note('flaky')\n"
                    "    if os.path.exists(%r):\n"
                    "        raise ConnectionError('down')\n"
                    "    time.sleep(0.5)\n"
                    "    return 'up'\n"
                    "def charge():\n"
                    "    note('charge')\n"
                    "    if os.path.exists(%r):\n"
                    "        os._exit(3)\n"
                    "    return 'charged'\n"
                    "def reconcile():\n"
                    "    note('reconcile')\n"
                    "    return 'reconciled'\n"
                    "def gate():\n"
                    "    if os.path.exists(%r):\n"
                    "        raise RuntimeError('b fails')\n"
                    "    return 'b'\n"
                    "class A(Agent):\n"
                    "    @action(InputEvent)\n"
                    "    @staticmethod\n"
                    "    async def go(event, ctx):\n"
                    "        if ctx.key == 'b':\n"
                    "            ctx.send_event(OutputEvent(output=await ctx.durable_execute_async(gate)))\n"
                    "            return\n"
                    "        try:\n"
                    "            got = await ctx.durable_execute_async(flaky)\n"
                    "        except ConnectionError:\n"
                    "            got = 'down'\n"
                    "        paid = await ctx.durable_execute_async(charge, reconciler=reconcile)\n"
                    "        ctx.send_event(OutputEvent(output=[got, paid]))\n"
                    % (log, down, crash, bfail))
        state, recs = self.path("st"), [{"key": "a"}, {"key": "b"}]
        for flag in (down, crash):
            open(flag, "w").close()
        first = self.run_py(recs[:1], "--state", state, agent=agent)
        self.assertEqual(first.rc, 3, first.stderr)  # killed in charge, its PENDING committed
        for flag in (down, crash):
            os.unlink(flag)
        open(bfail, "w").close()
        second = self.run_py(recs, "--state", state, "--retry-failed-calls", agent=agent)
        self.assertEqual(second.rc, 1, second.stderr)  # b failed: a stop, flaky still running
        os.unlink(bfail)
        third = self.run_py(recs, "--state", state, "--on-error", "skip", agent=agent)
        self.assertOk(third)  # b's journaled failure skips its input
        self.assertEqual(third.outputs(), [["up", "reconciled"]])
        with open(log) as f:
            self.assertEqual(f.read().split(), ["flaky", "charge", "flaky", "reconcile"])

    def test_agent_in_a_package_imports_relatively(self):
        # An agent file in a package failed at `from . import x` (no known
        # parent package): it now resolves in the package, which is imported
        # as Python imports it, while the module keeps its name (durable
        # calls' function ids hold it).
        files = {
            "proj/agents/__init__.py": "",
            "proj/agents/shared.py": "def shout(s):\n    return s.upper()\n",
            "proj/agents/triage/__init__.py": "PREFIX = 'pkg'\n",
            "proj/agents/triage/tools.py": "from ..shared import shout\n"
                                           "def label(x):\n    return shout('label-%s' % x)\n",
            "proj/agents/triage/agent.py":
                "from . import PREFIX\n"
                "from .tools import label\n"
                "import agents.shared\n"
                "from eddy import Agent, InputEvent, OutputEvent, action\n"
                "class T(Agent):\n"
                "    @action(InputEvent)\n"
                "    @staticmethod\n"
                "    async def go(event, ctx):\n"
                "        v = await ctx.durable_execute_async(label, event.input['x'])\n"
                "        ctx.send_event(OutputEvent(output=[v, PREFIX, __name__, __package__,\n"
                "                                           agents.shared.shout('abs')]))\n",
        }
        for name, source in files.items():
            os.makedirs(os.path.dirname(self.path(name)), exist_ok=True)
            with open(self.path(name), "w") as f:
                f.write(source)
        res = self.run_py([{"key": "k", "x": 1}], "--state", self.path("st"),
                          agent=self.path("proj/agents/triage/agent.py"))
        self.assertOk(res)
        self.assertEqual(res.outputs(), [["LABEL-1", "pkg", "agent", "agents.triage", "ABS"]])

    def test_agents_in_packages_load_as_before_and_once(self):
        # Review of the relative imports: a package's folder went on sys.path
        # before the agent's, so `import config` got the package's parent's
        # config.py, not the sibling; an agent named like its package
        # (mybot/mybot.py) could not import relatively; and a package whose
        # __init__ imports the agent ran the file twice.
        agent_src = ("from eddy import Agent, InputEvent, OutputEvent, action\n"
                     "class A(Agent):\n"
                     "    @action(InputEvent)\n"
                     "    @staticmethod\n"
                     "    def go(event, ctx):\n"
                     "        ctx.send_event(OutputEvent(output=[WHAT, __name__]))\n")
        files = {
            "shadow/config.py": "WHERE = 'parent'\n",
            "shadow/agents/__init__.py": "",
            "shadow/agents/config.py": "WHERE = 'sibling'\n",
            "shadow/agents/agent.py": "import config\nWHAT = config.WHERE\n" + agent_src,
            "samestem/mybot/__init__.py": "",
            "samestem/mybot/tools.py": "T = 'tools'\n",
            "samestem/mybot/mybot.py": "from . import tools\nWHAT = tools.T\n" + agent_src,
            "once/pkg/__init__.py": "from . import agent\n",
            "once/pkg/runs.py": "N = []\n",
            "once/pkg/agent.py": "from . import runs\nruns.N.append(1)\nWHAT = len(runs.N)\n"
                                 + agent_src,
        }
        for name, source in files.items():
            os.makedirs(os.path.dirname(self.path(name)), exist_ok=True)
            with open(self.path(name), "w") as f:
                f.write(source)
        for agent, want in (("shadow/agents/agent.py", ["sibling", "agent"]),
                            ("samestem/mybot/mybot.py", ["tools", "eddy_agent_mybot"]),
                            ("once/pkg/agent.py", [1, "pkg.agent"])):
            res = self.run_py([{"key": "k"}], agent=self.path(agent))
            self.assertOk(res)
            self.assertEqual(res.outputs(), [want], agent)
            self.assertNotIn(b"warning", res.stderr)

    def load_error_agent(self, agent, agent_class):
        """eddy run's stderr for agent run with --agent agent_class (refused)."""
        with open(self.path("in.jsonl"), "w") as f:
            f.write('{"key": "k"}\n')
        proc = subprocess.run([os.path.abspath(EDDY), "run", agent, "--agent", agent_class,
                               "--input", "in.jsonl", "--output", "out.jsonl", "--no-progress"],
                              cwd=self.dir, capture_output=True, timeout=120)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        return proc.stderr.decode()

    def load_error(self, agent, source=None):
        """eddy run's stderr for an agent that does not load, run from the
        test's folder with the agent's path as given (relative, say)."""
        if source is not None:
            with open(self.path(agent), "w") as f:
                f.write(source)
        with open(self.path("in.jsonl"), "w") as f:
            f.write('{"key": "k"}\n')
        proc = subprocess.run([os.path.abspath(EDDY), "run", agent, "--input", "in.jsonl",
                               "--output", "out.jsonl", "--no-progress"],
                              cwd=self.dir, capture_output=True, timeout=120)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        err = proc.stderr.decode()
        self.assertTrue(err.startswith("eddy: cannot load Python agent %s: " % agent), err)
        for internal in ('File "<string>"', 'File "<eddy>"', "<frozen importlib", "in _load"):
            self.assertNotIn(internal, err)
        return err

    def test_load_errors_are_uniform_and_show_only_the_agents_frames(self):
        # They began "cannot load Python agent x.py:" or "/abs/path/x.py:",
        # and carried eddy's and importlib's frames: a missing file took six
        # lines of traceback.
        self.assertEqual(self.load_error("missing.py"),
                         "eddy: cannot load Python agent missing.py: No such file or directory\n")
        os.mkdir(self.path("folder.py"))
        self.assertEqual(self.load_error("folder.py"),
                         "eddy: cannot load Python agent folder.py: Is a directory\n")
        self.assertEqual(
            self.load_error("empty.py", "import eddy\n"),
            "eddy: cannot load Python agent empty.py: no actions: decorate static methods of an "
            "Agent subclass (or module-level functions) with @action(EventType)\n")
        # A SyntaxError: file, line and caret as Python shows them, no frames.
        err = self.load_error("syntax.py", "import eddy\n\ndef f(:\n    pass\n")
        self.assertEqual(err, "eddy: cannot load Python agent syntax.py: SyntaxError: invalid "
                         "syntax (syntax.py, line 3)\n"
                         '  File "%s", line 3\n'
                         "    def f(:\n"
                         "          ^\n"
                         "SyntaxError: invalid syntax\n" % self.path("syntax.py"))
        # An exception in the agent's code (here in a module it imports, and
        # a KeyError, which once passed for eddy's own finding): its frames.
        with open(self.path("helper.py"), "w") as f:
            f.write("def boom():\n    raise KeyError('k')\nboom()\n")
        err = self.load_error("raises.py", "import eddy\nimport helper\n")
        self.assertEqual(err, "eddy: cannot load Python agent raises.py: KeyError: 'k'\n"
                         "Traceback (most recent call last):\n"
                         '  File "%s", line 2, in <module>\n'
                         "    import helper\n"
                         '  File "%s", line 3, in <module>\n'
                         "    boom()\n"
                         '  File "%s", line 2, in boom\n'
                         "    raise KeyError('k')\n"
                         "KeyError: 'k'\n" % (self.path("raises.py"), self.path("helper.py"),
                                               self.path("helper.py")))
        # eddy's own refusal from inside the agent's code: the agent's frames
        # only, the decorator's line last.
        err = self.load_error("onearg.py", "from eddy import Agent, action, InputEvent\n"
                              "class A(Agent):\n"
                              "    @action(InputEvent)\n"
                              "    def act(event):\n"
                              "        pass\n")
        self.assertIn("eddy: cannot load Python agent onearg.py: TypeError: @action A.act", err)
        self.assertIn('line 3, in A\n    @action(InputEvent)\n', err)
        self.assertTrue(err.endswith("an action is called as fn(event, ctx)\n"), err)
        # Names that cannot be actions' (set through __name__): said as such,
        # not "out of memory" (a surrogate) or a name "used already" ('').
        odd = ("from eddy import action, InputEvent\n"
               "def f(event, ctx):\n    pass\n"
               "f.__name__ = %s\n"
               "x = action(InputEvent)(f)\n"
               "del f\n")
        self.assertEqual(self.load_error("surrogate.py", odd % "'a\\udcff'"),
                         "eddy: cannot load Python agent surrogate.py: the name of its action 1 "
                         "cannot be encoded as UTF-8\n")
        self.assertEqual(self.load_error("noname.py", odd % "''"),
                         "eddy: cannot load Python agent noname.py: its action 1 has an empty "
                         "name\n")

    def test_callable_that_cannot_be_an_action_refused_where_decorated(self):
        # A functools.partial has no __name__ (the action's name): the load
        # failed in eddy's own code with "AttributeError: 'functools.partial'
        # object has no attribute '__name__'", no file, no line. A bound
        # method takes no attribute (eddy's mark of an action): an
        # AttributeError about '_eddy_listen'. Both are refused by @action,
        # on the agent's line.
        cases = (("partial.py", "import functools\n", "functools.partial(helper)",
                  "TypeError: @action takes a callable whose __name__ names the action, and "
                  "functools.partial(<function helper at "),
                 ("instance.py", "class H:\n    def __call__(self, event, ctx):\n        pass\n",
                  "H()", "TypeError: @action takes a callable whose __name__ names the action, "
                  "and <instance.H object at "),
                 ("bound.py", "class H:\n    def m(self, event, ctx):\n        pass\n",
                  "H().m", "TypeError: @action cannot mark <bound method H.m of <bound.H object "
                  "at "),
                 # A __name__ that is not a str was said to be missing.
                 ("nonstr.py", "class H:\n    __name__ = 5\n"
                  "    def __call__(self, event, ctx):\n        pass\n",
                  "H()", "TypeError: @action takes a callable whose __name__ names the action, "
                  "and <nonstr.H object at "))
        for name, head, expr, words in cases:
            source = ("from eddy import action, InputEvent\n" + head +
                      "def helper(event, ctx):\n    pass\n"
                      "go = action(InputEvent)(%s)\n" % expr)
            err = self.load_error(name, source)
            self.assertTrue(err.startswith("eddy: cannot load Python agent %s: %s"
                                           % (name, words)), err)
            if name == "nonstr.py":
                self.assertIn("> has a __name__ that is not a str (5, of type 'int'): ", err)
            elif name != "bound.py":
                self.assertIn(" has no __name__: ", err)
            self.assertIn("decorate a function (def or async def) that calls it\n"
                          "Traceback (most recent call last):\n"
                          '  File "%s", line %d, in <module>\n'
                          "    go = action(InputEvent)(%s)\n"
                          % (self.path(name), source.count("\n"), expr), err)

    def test_flink_style_mistakes_refused_at_load(self):
        # A CEL condition as trigger never matched anything, and a wrong
        # signature failed at the first event without naming the file.
        cases = {
            "cel.py": ('@action("Order && event.total > 0")',
                       "'Order && event.total > 0' is not one (CEL conditions"),
            "onearg.py": ("@action(InputEvent)", "takes (event): an action is called as "
                                                 "fn(event, ctx)"),
        }
        for name, (deco, words) in cases.items():
            path = self.path(name)
            with open(path, "w") as f:
                f.write("from eddy import Agent, action, InputEvent\n"
                        "class A(Agent):\n"
                        "    %s\n"
                        "    @staticmethod\n"
                        "    def act(event%s):\n"
                        "        pass\n" % (deco, "" if name == "onearg.py" else ", ctx"))
            res = self.run_py([{"key": "k"}], agent=path)
            self.assertEqual(res.rc, 2, res.stderr)
            self.assertIn(words, res.stderr.decode())
            self.assertIn(name, res.stderr.decode())

    def test_subclass_of_a_builtin_event_refused_at_load(self):
        # A subclass of OutputEvent was an event of its own type, routed by
        # its name: its outputs were dropped as "unhandled events".
        for base, words in (("OutputEvent", "never reach the sink; send "
                             "OutputEvent(output=value) itself"),
                            ("InputEvent", "which the actions of InputEvent never receive")):
            name = "sub_%s.py" % base.lower()
            err = self.load_error(name, "from eddy import Agent, action, %s\n"
                                  "\n"
                                  "class Mine(%s):\n"
                                  "    pass\n" % (base, base))
            self.assertIn("eddy: cannot load Python agent %s: TypeError: class Mine cannot "
                          "subclass %s: eddy routes events by their exact type name" % (name, base),
                          err)
            self.assertIn(words, err)
            self.assertIn('File "%s", line 3, in <module>\n    class Mine(%s):\n'
                          % (self.path(name), base), err)

    def test_agent_with_no_input_event_action_is_refused(self):
        # A misspelt trigger took every input and did nothing, with exit 0.
        path = self.path("typo.py")
        with open(path, "w") as f:
            f.write("from eddy import Agent, Event, action\n"
                    "class Later(Event):\n"
                    "    pass\n"
                    "class A(Agent):\n"
                    "    @action(\"InputEvnt\", Later)\n"
                    "    @staticmethod\n"
                    "    def act(event, ctx):\n"
                    "        pass\n")
        res = self.run_py([{"key": "k"}], agent=path)
        self.assertEqual(res.rc, 2, res.stderr)
        err = res.stderr.decode()
        self.assertIn("typo.py: no action listens to InputEvent", err)
        self.assertIn("listen to 'InputEvnt', 'Later' (", err)

    def test_reconciler_keyword_checked(self):
        res = self.run_py([{"key": "r", "op": "reconciler_kw", "seq": 1}])
        self.assertOk(res)
        one_arg, not_callable, sync, none_async, none_sync = res.outputs()[0]["errors"]
        self.assertIn("it is called with no arguments", one_arg)
        self.assertIn("takes a callable of no arguments, not 5", not_callable)
        self.assertIn("use await ctx.durable_execute_async", sync)
        self.assertIsNone(none_async)
        self.assertIsNone(none_sync)

    def test_reconciler_runs_in_place_of_a_call_cut_by_a_crash(self):
        # Flink Agents' reconciler=: the call's start is journaled (PENDING)
        # before it runs; after a crash in it, the reconciler runs instead,
        # once, and its outcome is journaled as the call's own.
        counter, state = self.path("counter"), self.path("state")
        crash, crash2 = self.path("crash.flag"), self.path("crash2.flag")
        rec = {"key": "r", "op": "reconciled", "seq": 1, "counter": counter, "crash": crash,
               "crash2": crash2}
        open(crash, "w").close()
        first = self.run_py([rec], "--state", state)
        self.assertEqual(first.rc, 3, first.stderr)  # died inside the call
        self.assertEqual(lines(counter), 1)
        os.unlink(crash)
        open(crash2, "w").close()
        second = self.run_py([rec], "--state", state)  # reconciles, dies after
        self.assertEqual(second.rc, 3, second.stderr)
        self.assertEqual(lines(counter + ".reconciled"), 1)
        os.unlink(crash2)
        third = self.run_py([rec], "--state", state)
        self.assertOk(third)
        self.assertEqual(third.outputs(), [{"key": "r", "seq": 1, "v": {"reconciled": True}}])
        self.assertEqual(lines(counter), 1, "the call ran again")
        self.assertEqual(lines(counter + ".reconciled"), 1, "the reconciler ran again")

    def test_reconciler_failure_is_the_calls_outcome(self):
        counter, state = self.path("counter"), self.path("state")
        crash, crash2 = self.path("crash.flag"), self.path("crash2.flag")
        rec = {"key": "r", "op": "reconciled", "seq": 1, "counter": counter, "crash": crash,
               "crash2": crash2, "reconcile_fails": True}
        open(crash, "w").close()
        self.assertEqual(self.run_py([rec], "--state", state).rc, 3)
        os.unlink(crash)
        open(crash2, "w").close()
        self.assertEqual(self.run_py([rec], "--state", state).rc, 3)
        os.unlink(crash2)
        third = self.run_py([rec], "--state", state)
        self.assertOk(third)
        self.assertEqual(third.outputs(), [{"key": "r", "seq": 1,
                                            "error": "('reconcile unavailable', 9)", "code": 9}])
        self.assertEqual(lines(counter), 1)
        self.assertEqual(lines(counter + ".reconciled"), 1)

    def test_reconciled_call_waits_for_its_start_on_disk(self):
        # The call must not start before its PENDING record is synced: were
        # the machine to lose the record, a restart would run the call again
        # rather than its reconciler. With the first sync failing, eddy
        # stops before the call ever starts.
        counter, state = self.path("counter"), self.path("state")
        rec = {"key": "r", "op": "reconciled", "seq": 1, "counter": counter}
        first = self.run_py([rec], "--state", state, extra_env={"EDDY_FAULT": "store_sync:1"})
        self.assertEqual(first.rc, 3, first.stderr)
        self.assertIn(b"syncing", first.stderr)
        self.assertEqual(lines(counter), 0, "the call started before its start was on disk")
        second = self.run_py([rec], "--state", state)
        self.assertOk(second)
        self.assertEqual(len(second.outputs()), 1)
        self.assertEqual(lines(counter) + lines(counter + ".reconciled"), 1)

    def test_reconciler_unused_without_a_crash(self):
        counter = self.path("counter")
        rec = {"key": "r", "op": "reconciled", "seq": 1, "counter": counter}
        for extra in ([], ["--state", self.path("state")]):
            res = self.run_py([rec], *extra)
            self.assertOk(res)
            self.assertEqual(res.outputs(), [{"key": "r", "seq": 1, "v": {"v": 1}}])
        self.assertEqual(lines(counter), 2)
        self.assertEqual(lines(counter + ".reconciled"), 0)

    def test_coroutine_function_refused_by_the_call_api(self):
        # An async def given to a call ran on a worker as fn(...), which only
        # made a coroutine: the result without --state, "cannot pickle
        # 'coroutine' object" with it.
        for extra in ([], ["--state", self.path("state")]):
            res = self.run_py([{"key": "c", "op": "async_fn", "seq": 1}], *extra)
            self.assertOk(res)
            (o,) = res.outputs()
            self.assertEqual(o["ok"], 3)
            errors = o["errors"]
            for name in ("execute_async", "durable_execute_async"):
                self.assertEqual(errors[name], "%s takes a plain function, which runs on a "
                                 "worker thread: pyagent.fetch_async is a coroutine function "
                                 "(async def), and calling it there would only make a "
                                 "coroutine that nothing runs; make it a def (it may block: "
                                 "it has a thread of its own)" % name, extra)
            self.assertEqual(errors["durable_execute"], "durable_execute takes a plain "
                             "function, which it calls here, on eddy's mailbox thread: "
                             "pyagent.fetch_async is a coroutine function (async def), and "
                             "calling it there would only make a coroutine that nothing runs; "
                             "make it a def", extra)
            self.assertIn("execute_async takes a plain function", errors["partial"])
            self.assertIn("worker thread: pyagent.AsyncCallable.method is a coroutine "
                          "function", errors["method"])
            self.assertIn("is a coroutine function (async def)", errors["callable"])
            self.assertIn("pyagent.stream_async is a coroutine function (async def)",
                          errors["async_generator"])
            self.assertIn("reconciler pyagent.fetch_async is a coroutine function",
                          errors["reconciler"])
            self.assertNotIn(b"never awaited", res.stderr)

    def test_iterating_a_call_is_refused(self):
        res = self.run_py([{"key": "i", "op": "iterate", "seq": 1}])
        self.assertOk(res)
        (o,) = res.outputs()
        hint = " in an async def action, or `yield from aw.__await__()` in an __await__ method"
        call = ("a call of the context is awaited, not iterated: write `await "
                "ctx.execute_async(fn, ...)`" + hint)
        self.assertEqual(o["errors"], [call, call, "ctx.gather() is awaited, not iterated: "
                                       "write `await ctx.gather(...)`" + hint])
        self.assertEqual(o["v"], 3)

    # ------------------------------------------------------------ the awaitable protocol

    def run_awaiting(self, records, *args, timeout=120, **kw):
        return self.run_py(records, *args, agent=AWAITING, timeout=timeout, **kw)

    WRAPPED = {"durable": ["wrapped", 5], "call": ["wrapped", 4],
               "nested": ["wrapped", ["wrapped", 2]],
               "gather": ["wrapped", [1, None, "ValueError('in gather')"]],
               "sleep": ["wrapped", None], "sleep0": ["wrapped", None],
               "by_hand": ["by hand", 3], "gen_coroutine": 5,
               "caught_inside": "caught in __await__: inner", "raised": "ValueError: through",
               "gather_raised": "ValueError: gathered"}

    def test_awaitables_that_delegate_with_yield_from(self):
        # `yield from aw.__await__()` in a plain generator (an awaitable's
        # __await__) was refused: "a call of the context is awaited, not
        # iterated", and a warning of calls never awaited.
        counter = self.path("counter")
        rec = {"key": "w", "op": "wrapped", "x": 5, "counter": counter, "seq": 1}
        for extra in ([], ["--state", self.path("state")]):
            res = self.run_awaiting([rec], *extra)
            self.assertOk(res)
            self.assertEqual(res.outputs(), [{"key": "w", "seq": 1, "got": self.WRAPPED}])
            self.assertNotIn(b"warning", res.stderr)
        self.assertEqual(lines(counter), 2)

    def test_durable_call_through_a_wrapper_replayed_after_a_crash(self):
        counter, crash = self.path("counter"), self.path("crash.flag")
        rec = {"key": "w", "op": "wrapped", "x": 5, "counter": counter, "crash": crash,
               "seq": 1}
        open(crash, "w").close()
        first = self.run_awaiting([rec], "--state", self.path("state"))
        self.assertEqual(first.rc, 3, first.stderr)
        self.assertEqual(lines(counter), 1)
        os.unlink(crash)
        second = self.run_awaiting([rec], "--state", self.path("state"))
        self.assertOk(second)
        self.assertEqual(lines(counter), 1, "the journaled call ran again")
        self.assertIn(b"1 durable call replayed", second.stderr)
        self.assertEqual(second.outputs(), [{"key": "w", "seq": 1, "got": self.WRAPPED}])

    def test_durable_call_through_a_wrapper_replayed_after_sigkill(self):
        # Killed while the action waits in its next call (so the durable
        # call's record is on disk): the rerun replays the call through the
        # wrapper without making it again.
        counter, reached, release = self.path("counter"), self.path("reached"), self.path("go")
        state, inp = self.path("state"), self.path("in.jsonl")
        rec = {"key": "w", "op": "wrapped", "x": 5, "counter": counter, "hold": reached,
               "release": release, "seq": 1}
        with open(inp, "w") as f:
            f.write(json.dumps(rec) + "\n")
        cmd = [EDDY, "run", AWAITING, "--input", inp, "--output", self.path("out.jsonl"),
               "--state", state, "--no-progress"]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while not os.path.exists(reached):
                self.assertIsNone(p.poll(), "eddy ended before the action held")
                self.assertLess(time.monotonic(), deadline, "the action never held")
                time.sleep(0.005)
            p.kill()
            p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
        self.assertEqual(p.returncode, -signal.SIGKILL)
        self.assertEqual(lines(counter), 1)
        open(release, "w").close()
        again = subprocess.run(cmd, capture_output=True, timeout=120)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual(lines(counter), 1, "the journaled call ran again")
        self.assertIn(b"1 durable call replayed", again.stderr)
        want = dict(self.WRAPPED, held=["wrapped", "released"])
        self.assertEqual(read_jsonl(self.path("out.jsonl")),
                         [{"key": "w", "seq": 1, "got": want}])

    def kill_while_held(self, rec, *args):
        """Runs eddy on rec with --state until the action writes
        rec["hold"], kills it there (SIGKILL) and returns the command."""
        inp = self.path("in.jsonl")
        with open(inp, "w") as f:
            f.write(json.dumps(rec) + "\n")
        cmd = [EDDY, "run", AWAITING, "--input", inp, "--output", self.path("out.jsonl"),
               "--state", self.path("state"), "--no-progress"] + list(args)
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while not os.path.exists(rec["hold"]):
                self.assertIsNone(p.poll(), "eddy ended before the action held")
                self.assertLess(time.monotonic(), deadline, "the action never held")
                time.sleep(0.005)
            p.kill()
            p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
        self.assertEqual(p.returncode, -signal.SIGKILL)
        return cmd

    def test_call_yielded_by_an_await_of_its_own_is_refused(self):
        # `def __await__(self): r = yield self.call; return r` gave the call
        # to eddy, which ran it and gave the await None, and warned that the
        # call never ran; on replay (the call done) the same code raised
        # RuntimeError('an eddy call was awaited while already running').
        # Now it is refused, nothing runs, on a first run and a replay alike.
        counter = self.path("counter")
        refused = ("TypeError: %s was yielded to eddy directly, not by the iterator of its "
                   "__await__(), which alone gives the action its result: eddy does not run "
                   "it; write `%s` in an async def action, or `yield from aw.__await__()` in "
                   "an __await__ method")
        want = {"call": refused % ("a call of the context", "await ctx.execute_async(fn, ...)"),
                "gather": refused % ("ctx.gather()", "await ctx.gather(...)")}
        warning = ("eddy: warning: action 'dispatch' for key \"y\" made 2 calls that it never "
                   "awaited")
        rec = {"key": "y", "op": "yields_itself", "x": 5, "counter": counter, "seq": 1}
        res = self.run_awaiting([rec])
        self.assertOk(res)
        self.assertEqual(res.outputs(), [{"key": "y", "seq": 1, "got": want, "v": 3}])
        self.assertEqual(lines(counter), 0)
        self.assertIn(warning.encode(), res.stderr)
        # Killed in a later call and run again: the same.
        reached, release = self.path("reached"), self.path("go")
        rec = dict(rec, hold=reached, release=release)
        cmd = self.kill_while_held(rec)
        open(release, "w").close()
        again = subprocess.run(cmd, capture_output=True, timeout=120)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual(read_jsonl(self.path("out.jsonl")),
                         [{"key": "y", "seq": 1, "got": want, "v": 3}])
        self.assertEqual(lines(counter), 0)
        self.assertIn(warning.encode(), again.stderr)
        # The call journaled (awaited properly before the kill): its replay,
        # done at once, is refused the same.
        os.unlink(reached)
        os.unlink(release)
        shutil.rmtree(self.path("state"))
        proper = self.path("proper")
        open(proper, "w").close()
        cmd = self.kill_while_held(dict(rec, proper=proper))
        self.assertEqual(lines(counter), 1)
        os.unlink(proper)
        open(release, "w").close()
        again = subprocess.run(cmd, capture_output=True, timeout=120)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertIn(b"1 durable call replayed", again.stderr)
        self.assertEqual(read_jsonl(self.path("out.jsonl")),
                         [{"key": "y", "seq": 1, "got": want, "v": 3}])
        self.assertEqual(lines(counter), 1, "the journaled call ran again")

    def test_iterating_an_awaitable_is_refused(self):
        # Iterating a call, a gather or a sleep, or what their __await__()
        # returns, is a TypeError; so is `yield from call` in a plain
        # generator, with a hint at `yield from call.__await__()`. The
        # iterator of __await__() gives its call once: list() of it took
        # the call again and again when the call was its own iterator.
        res = self.run_awaiting([{"key": "m", "op": "misuse", "seq": 1}])
        self.assertOk(res)
        (o,) = res.outputs()
        self.assertEqual(o["v"], 3)
        hint = " in an async def action, or `yield from aw.__await__()` in an __await__ method"
        went = (" is awaited, not iterated: the iterator of its __await__() gives it to eddy, "
                "which runs it, and it went to something else (list(), a for loop, next()); "
                "write `%s`" + hint)
        call = "await ctx.execute_async(fn, ...)"
        self.assertEqual(o["errors"], {
            "list": "a call of the context is awaited, not iterated: write `%s`%s" % (call, hint),
            "for": "ctx.gather() is awaited, not iterated: write `await ctx.gather(...)`" + hint,
            "list_await": "a call of the context" + went % call,
            "list_await_gather": "ctx.gather()" + went % "await ctx.gather(...)",
            "list_await_sleep": "ctx.sleep()" + went % "await ctx.sleep(seconds)",
            "yield_from_call": "a call of the context is awaited, not iterated: write `%s`%s"
                               % (call, hint)})
        # Each of the six calls never ran: the warning counts them all
        # (those whose awaiter was stepped, by list(), were taken for
        # awaited: it said 3).
        self.assertIn(b"made 6 calls that it never awaited (the first of builtins.len), so "
                      b"they never ran", res.stderr)

    def test_awaiter_throw_and_close(self):
        # The iterator of __await__() had send() only: a delegator written
        # by hand as PEP 380 says, forwarding throw(), got an AttributeError.
        counter = self.path("counter")
        res = self.run_awaiting([{"key": "f", "op": "leave_call", "seq": 1},
                                 {"key": "f", "op": "forward", "counter": counter, "seq": 2}])
        self.assertOk(res)
        self.assertEqual(res.outputs(), [{"key": "f", "seq": 2, "got": {
            "throw": "ValueError: thrown in",
            "after_throw": "the iterator of the __await__() of a call of the context was "
                           "stepped after its throw() or close() ended it; it cannot be reused",
            "throw_class": "KeyError('k')",
            "close": None,
            "forwarded": "RuntimeError: an awaitable of another action execution was awaited",
            "call": ["forwarded", 4]}}])
        # The calls thrown into and closed never ran, and are warned about.
        self.assertEqual(lines(counter), 0)
        self.assertIn(b"action 'dispatch' for key \"f\" made 3 calls that it never awaited",
                      res.stderr)

    def test_refusal_caught_and_yielded_again_fails_the_action(self):
        # A coroutine that caught the TypeError eddy raised for what it
        # yielded, and yielded again, was thrown the error again and again
        # inside one step: every key starved and SIGTERM went unseen.
        recs = [{"key": "s", "op": "swallow", "seq": 1},
                {"key": "i", "op": "instant", "seq": 2},
                {"key": "r", "op": "recovers", "seq": 3}]
        res = self.run_awaiting(recs, "--on-error", "skip", timeout=60)
        self.assertOk(res)
        outs = sorted(res.outputs(), key=lambda o: o["seq"])
        refusal = ("eddy actions can await only ctx.execute_async(), "
                   "ctx.durable_execute_async(), ctx.gather() and ctx.sleep(); the action "
                   "awaited something that yielded 42 (asyncio and other event loops are not "
                   "supported: ctx.sleep() takes the place of asyncio.sleep())")
        # One refusal caught, then a call: the action goes on.
        self.assertEqual(outs, [{"key": "i", "seq": 2},
                                {"key": "r", "seq": 3, "first": refusal, "v": 3}])
        (dead,) = res.dead()
        self.assertEqual(dead["key"], "s")
        self.assertEqual(dead["error"]["type"], "TypeError")
        msg = ("action 'dispatch' for key \"s\" caught the TypeError that eddy raised in it "
               "for what it awaited, and then yielded 42: eddy fails the action rather than "
               "raise an error in it again, which it could catch again for ever (%s)" % refusal)
        self.assertTrue(dead["error"]["message"].startswith(msg + "\n"), dead["error"])
        self.assertIn("in swallowing\n    yield 42\n", dead["error"]["message"])
        # Under --on-error stop, the run stops with it.
        res = self.run_awaiting(recs[:1], timeout=60)
        self.assertEqual(res.rc, 1, res.stderr)
        self.assertIn(msg.encode(), res.stderr)

    def test_refusal_of_another_reason_is_thrown_as_before(self):
        # A refusal caught, then another of a different reason: the action
        # failed "caught the TypeError ... and then yielded <eddy call ...>"
        # (a RuntimeError never raised); it is thrown, and caught.
        left = {"key": "o", "op": "leave_call", "seq": 1}
        res = self.run_awaiting([left, {"key": "o", "op": "other_refusal", "seq": 2}])
        self.assertOk(res)
        self.assertEqual(res.outputs(), [{"key": "o", "seq": 2, "v": 3, "got": {
            "first": "TypeError",
            "second": "RuntimeError: an awaitable of another action execution was awaited"}}])
        # Each reason is raised once in a step: the second refusal of one
        # reason (after one of another) fails the action.
        res = self.run_awaiting([left, {"key": "o", "op": "refusals_alternate", "seq": 2}],
                                "--on-error", "skip", timeout=60)
        self.assertOk(res)
        (dead,) = res.dead()
        self.assertEqual(dead["error"]["type"], "TypeError")
        self.assertTrue(dead["error"]["message"].startswith(
            "action 'dispatch' for key \"o\" caught the TypeError that eddy raised in it for "
            "what it awaited, and then yielded None: "), dead["error"])

    def test_messages_name_what_repr_cannot_show(self):
        # repr() of what an action yields or gives eddy may raise: eddy's
        # message gave way to repr()'s error, or the dead letter read
        # "TypeError (no message)".
        bad = "<BadRepr object (repr failed)>"
        res = self.run_awaiting([{"key": "b", "op": "bad_repr", "seq": 1}])
        self.assertOk(res)
        (o,) = res.outputs()
        self.assertIn("the action awaited something that yielded %s (asyncio" % bad,
                      o["got"]["yielded"])
        self.assertTrue(o["got"]["gather"].endswith(", not " + bad), o["got"]["gather"])
        self.assertEqual(o["got"]["call"], "<eddy call of %s, not started>" % bad)
        self.assertEqual(o["got"]["v"], "called")
        res = self.run_awaiting([{"key": "b", "op": "bad_repr_twice", "seq": 1}],
                                "--on-error", "skip", timeout=60)
        self.assertOk(res)
        (dead,) = res.dead()
        self.assertEqual(dead["error"]["type"], "TypeError")
        self.assertTrue(dead["error"]["message"].startswith(
            "action 'dispatch' for key \"b\" caught the TypeError that eddy raised in it for "
            "what it awaited, and then yielded %s: eddy fails the action" % bad), dead["error"])
        self.assertIn("something that yielded %s (asyncio" % bad, dead["error"]["message"])

    def test_calls_never_awaited_are_warned_about(self):
        # A call made and never awaited silently never ran.
        counter = self.path("counter")
        res = self.run_py([{"key": "w", "op": "unawaited", "counter": counter, "seq": 1}])
        self.assertOk(res)
        self.assertEqual(lines(counter), 0)
        warnings = [l for l in res.stderr.decode().splitlines() if "warning" in l]
        self.assertEqual(warnings, [
            'eddy: warning: action \'dispatch\' for key "w" made 2 calls that it never '
            "awaited (the first of pyagent.count), so they never ran (await them, or give "
            "them to ctx.gather and await that)"])
        # Nothing for an action that fails (its error says enough), nor for
        # calls awaited, through gather too, run or replayed.
        res = self.run_py([{"key": "w", "op": "unawaited", "counter": counter, "raise": True,
                            "seq": 1}], "--on-error", "skip")
        self.assertOk(res)
        self.assertNotIn(b"never awaited", res.stderr)
        rec = {"key": "a", "op": "all_awaited", "counter": counter, "seq": 1}
        res = self.run_py([rec])
        self.assertOk(res)
        self.assertEqual(res.outputs(), [{"key": "a", "seq": 1, "rs": [1, 3, 2, 4]}])
        self.assertNotIn(b"warning", res.stderr)
        crash = self.path("crash.flag")
        open(crash, "w").close()
        rec = dict(rec, crash=crash)
        self.assertEqual(self.run_py([rec], "--state", self.path("state")).rc, 3)
        os.unlink(crash)
        res = self.run_py([rec], "--state", self.path("state"))  # replays them
        self.assertOk(res)
        self.assertIn(b"2 durable calls replayed", res.stderr)
        self.assertEqual(res.outputs(), [{"key": "a", "seq": 1, "rs": [1, 3, 2, 4]}])
        self.assertNotIn(b"warning", res.stderr)

    def test_a_forked_child_keeps_no_lock_of_eddy(self):
        # A child the agent forks without an exec (os.fork, multiprocessing)
        # shares eddy's open files: it held the locks on the state and the
        # output while it lived, past eddy's exit, and kept the next eddy
        # out ("another eddy uses state directory ...").
        with open(self.path("forker.py"), "w") as f:
            f.write("import os, time\n"
                    "from eddy import Agent, InputEvent, OutputEvent, action\n"
                    "class F(Agent):\n"
                    "    @action(InputEvent)\n"
                    "    @staticmethod\n"
                    "    def go(event, ctx):\n"
                    "        if os.fork() == 0:\n"
                    "            null = os.open(os.devnull, os.O_WRONLY)\n"
                    "            os.dup2(null, 1)\n"
                    "            os.dup2(null, 2)  # the test waits for the pipes' end\n"
                    "            time.sleep(%d)\n"
                    "            os._exit(0)\n"
                    "        ctx.send_event(OutputEvent(output=event.input['n']))\n"
                    % (30 if SANITIZED else 5))
        state = self.path("st")
        res = self.run_py([{"key": "k", "n": 1}], "--state", state, agent=self.path("forker.py"))
        self.assertOk(res)
        res = self.run_py([{"key": "k", "n": 1}, {"key": "k", "n": 2}], "--state", state,
                          agent=self.path("forker.py"))
        self.assertOk(res)
        self.assertEqual(res.outputs(), [1, 2])

    def test_two_event_classes_of_one_name_are_warned_of(self):
        # Events go by type name: two classes named Step are one type, made
        # as the class defined last. A class made again under its own
        # qualified name (a function called twice) is not warned of.
        with open(self.path("shadow.py"), "w") as f:
            f.write("from eddy import Agent, Event, InputEvent, OutputEvent, action\n"
                    "class Step(Event):\n"
                    "    pass\n"
                    "def make():\n"
                    "    class Step(Event):\n"
                    "        pass\n"
                    "    return Step\n"
                    "make()\n"
                    "make()\n"
                    "class A(Agent):\n"
                    "    @action(InputEvent)\n"
                    "    @staticmethod\n"
                    "    def go(event, ctx):\n"
                    "        ctx.send_event(Step(n=1))\n"
                    "    @action(Step)\n"
                    "    @staticmethod\n"
                    "    def step(event, ctx):\n"
                    "        ctx.send_event(OutputEvent(output=type(event).__qualname__))\n")
        res = self.run_py([{"key": "k"}], agent=self.path("shadow.py"))
        self.assertOk(res)
        self.assertEqual(res.outputs(), ["make.<locals>.Step"])
        err = res.stderr.decode()
        self.assertEqual(err.count("warning"), 1, err)
        self.assertIn("eddy: warning: two event classes are named Step (shadow.Step and "
                      "shadow.make.<locals>.Step): eddy routes events by type name, so they are "
                      "one event type, and the actions of either receive the events of both, as "
                      "instances of the class defined last; give them names of their own\n", err)
        # A warning that cannot be written (stderr on a full disk) stops nothing.
        if os.path.exists("/dev/full"):
            with open(self.path("in.jsonl"), "w") as f:
                f.write('{"key": "k"}\n')
            with open("/dev/full", "w") as full:
                res = subprocess.run([EDDY, "run", self.path("shadow.py"), "--input",
                                      self.path("in.jsonl"), "--output", self.path("o.jsonl"),
                                      "--quiet"], stderr=full, timeout=120)
            self.assertEqual(res.returncode, 0)
            self.assertEqual(read_jsonl(self.path("o.jsonl")), ["make.<locals>.Step"])

    def test_dict_in_memory_set_again_in_a_later_run(self):
        # Flink Agents stores a dict as one value; eddy as nested objects,
        # which a later set of a dict replaces (it was refused: "an object
        # stands at the path").
        recs = [{"key": "m", "op": "dict_twice", "seq": i} for i in range(3)]
        for state in ((), ("--state", self.path("st"))):
            res = self.run_py(recs, *state)
            self.assertOk(res)
            self.assertEqual([(o["seq"], o["n"], o["fields"]) for o in res.outputs()],
                             [(i, i, ["n", "tag"]) for i in range(3)])

    def test_yielding_action_refused_at_load(self):
        """An action with yield never ran (async def) or ran as a broken
        coroutine (def): the decorator refuses it, naming it and why."""
        for name, words in (("yield_async.py", "@action YieldingAgent.streams is an async "
                             "generator function (an async def with yield)"),
                            ("yield_def.py", "@action produces is a generator function (a def "
                             "with yield)")):
            res = self.run_py([{"key": "k"}], agent=os.path.join(PY_AGENTS, name))
            self.assertEqual(res.rc, 2, name)
            err = res.stderr.decode()
            self.assertIn(name, err)
            self.assertIn("TypeError: " + words, err)
            self.assertIn("an action must not yield", err)

    def test_action_returning_a_generator_fails(self):
        """A callable object that returns an async generator or a generator
        fails its action; a generator-based coroutine still runs."""
        agent = os.path.join(PY_AGENTS, "yield_object.py")
        for op, what in (("async_gen", "an async generator <async_generator object"),
                         ("gen", "a generator <generator object")):
            res = self.run_py([{"key": "k", "op": op}], agent=agent)
            self.assertEqual(res.rc, 1, op)
            err = res.stderr.decode()
            self.assertIn("TypeError: action '%s_action' returned %s" % (op, what), err)
            self.assertIn("which eddy does not run", err)
            self.assertEqual(res.outputs() if os.path.exists(res.out_path) else [], [])
        res = self.run_py([{"key": "k", "op": "gen_coroutine"}], agent=agent)
        self.assertOk(res)
        self.assertEqual(res.outputs(), [{"ran": "generator-based coroutine", "v": 3}])

    def test_agent_option_chooses_the_class(self):
        path = os.path.join(PY_AGENTS, "several.py")
        res = self.run_py([{"key": "k"}], "--agent", "Second", agent=path)
        self.assertOk(res)
        self.assertEqual(res.outputs(), [{"agent": "Second", "key": "k"}])

    # ------------------------------------------------------------ the example

    def test_review_example(self):
        example = os.path.join(SOURCE, "examples", "review_agent.py")
        data = os.path.join(SOURCE, "examples", "data", "reviews.jsonl")
        with open(data, "rb") as f:
            text = f.read()
        n = sum(1 for line in text.splitlines() if line.strip())
        state = self.path("state")
        res = self.run_eddy(None, "--state", state, agent=example,
                            input_text=text)
        self.assertOk(res)
        outs = res.outputs()
        self.assertEqual(len(outs), n)
        for o in outs:
            self.assertIn(o["score"], range(1, 6))
            self.assertIn("product_id", o)
        # The last output of each product carries the running summary.
        last = {}
        for o in outs:
            last[o["product_id"]] = o
        self.assertEqual(sum(o["reviews_seen"] for o in last.values()), n)


@without_python
class WithoutPython(EddyTest):
    """An eddy built without Python (-DEDDY_WITH_PYTHON=OFF) runs C agents
    only: a Python agent is refused as it loads, with a message that names
    the file and why, exit 2, nothing touched; its texts do not offer
    Python agents."""

    REFUSED = "eddy: cannot load Python agent %s: this eddy was built without Python support\n"

    def test_a_python_agent_is_refused_and_nothing_is_touched(self):
        inp, out, state = self.path("in.jsonl"), self.path("out.jsonl"), self.path("state")
        with open(inp, "w") as f:
            f.write('{"key": "k", "op": "key", "seq": 1}\n')
        upper = self.path("agent.PY")
        shutil.copy(AGENT, upper)
        for agent in (AGENT, upper, self.path("missing.py")):
            before = None
            if os.path.exists(agent):
                with open(agent, "rb") as f:
                    before = f.read()
            for args in (["--output", out], ["--output", out, "--state", state],
                         ["--output", out, "--agent", "TestAgent"], ["--output", agent],
                         ["--output", "-"]):
                proc = subprocess.run([EDDY, "run", agent, "--input", inp, "--no-progress"] +
                                      args, capture_output=True, timeout=60)
                self.assertEqual(proc.returncode, 2, (agent, args, proc.stderr))
                self.assertEqual(proc.stderr.decode(), self.REFUSED % agent, args)
                self.assertEqual(proc.stdout, b"", args)
                self.assertFalse(os.path.exists(out), args)
                self.assertFalse(os.path.exists(state), args)
                if before is None:
                    self.assertFalse(os.path.exists(agent), args)
                else:
                    with open(agent, "rb") as f:
                        self.assertEqual(f.read(), before, args)

    def test_help_and_version_say_python_agents_cannot_run(self):
        def eddy(*args):
            proc = subprocess.run([EDDY] + list(args), capture_output=True, timeout=30,
                                  text=True)
            return proc.returncode, proc.stdout, proc.stderr
        rc, out, _ = eddy("--version")
        self.assertEqual(rc, 0)
        self.assertEqual(out.splitlines()[1],
                         "Python agents: no (this eddy was built without Python)")
        rc, out, _ = eddy("--help")
        self.assertEqual(rc, 0)
        self.assertIn("  run AGENT [options]    run an agent (a C .so file) over an input\n",
                      out)
        self.assertNotIn(".py file", out)
        self.assertIn("This eddy was built without Python: it runs C agents only, and refuses a\n"
                      "Python agent (.py).\n", out)
        rc, out, _ = eddy("run", "--help")
        self.assertEqual(rc, 0)
        self.assertIn("AGENT is a C\nagent shared object (exporting eddy_agent_init). This eddy "
                      "was built without\nPython: a Python agent (a file whose name ends in .py, "
                      "in any case) is\nrefused (exit 2).\n", out)
        self.assertNotIn("Agent subclass", out)
        self.assertNotIn("Python's exit", out)
        self.assertRegex(out, r"\n  --agent NAME +Python agents only \(unavailable: this eddy "
                              r"was built without Python\)\n")
        rc, out, err = eddy("run")
        self.assertEqual(rc, 2)
        self.assertEqual(err, "eddy: missing AGENT: a C agent (.so)\ntry 'eddy run --help'\n")

    def test_libpython_is_not_linked(self):
        ldd = subprocess.run(["ldd", EDDY], capture_output=True, text=True, timeout=30)
        self.assertEqual(ldd.returncode, 0, ldd.stderr)
        self.assertIn("libeddy.so", ldd.stdout)
        self.assertNotIn("libpython", ldd.stdout)


if __name__ == "__main__":
    unittest.main()
