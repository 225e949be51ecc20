"""Fault injection sweep: fail the n-th store write, store commit, write of the
store's WAL, disk sync of the store, sink write or allocation of a short
durable run (EDDY_FAULT, compiled with EDDY_TEST_HOOKS), check that eddy
either completes correctly or stops with a clear error, then rerun without the
fault and check that the output is exactly the expected one: every output
exactly once, memory right."""
import collections
import json
import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from eddytest import (AGENTS, EDDY, SANITIZED, SOURCE, EddyTest, needs_python, read_jsonl,  # noqa: E402
                      write_jsonl)

DURABLE = os.path.join(AGENTS, "durable_agent.so")
DURABLE_PY = os.path.join(SOURCE, "tests", "agents", "durable_agent.py")
HOOKS = os.environ.get("EDDY_HOOKS", "ON").upper() in ("ON", "1", "TRUE", "YES")

# What a clear error names, per class of fault.
WORDS = {
    "store_write": [b"state store failure", b"I/O error"],
    "store_commit": [b"state store failure while committing", b"I/O error"],
    "store_wal": [b"state store failure while committing", b"committing the schema"],
    "store_sync": [b"state store failure while syncing", b"eddy.db-wal to disk: Input/output error"],
    "sink_write": [b"cannot"],
    "alloc": [b"out of memory"],
}
# Which calls to fail: every one of the first few, then spread out to the
# end of the run (a number past the last call means no fault: a clean run).
NTH = list(range(1, 11)) + [13, 17, 25, 40, 60, 90, 140, 220, 350, 600]
# A deeper sweep on demand: EDDY_FAULT_NTH=LO:HI:STEP fails each of those
# calls instead (for example 1:900:1 under ASan, a few minutes per class).
if os.environ.get("EDDY_FAULT_NTH"):
    NTH = list(range(*(int(x) for x in os.environ["EDDY_FAULT_NTH"].split(":"))))


@unittest.skipUnless(HOOKS, "built without EDDY_TEST_HOOKS")
class FaultSweep(EddyTest):
    def setUp(self):
        super().setUp()
        self.inp = self.path("in.jsonl")
        self.out = self.path("out.jsonl")
        self.state = self.path("state")
        n, keys = (120, 12) if not SANITIZED else (60, 6)
        self.recs = [{"key": "k%d" % (i % keys), "seq": i, "v": i * 7 % 13, "ms": i % 2}
                     for i in range(n)]
        # A bad line in the middle, so that dead letters are written too.
        lines = [json.dumps(r) for r in self.recs]
        lines.insert(n // 2, '{"no key": 1}')
        with open(self.inp, "w") as f:
            f.write("\n".join(lines) + "\n")
        # Expected memory after each input: count and sum of its key so far.
        acc = collections.defaultdict(lambda: [0, 0])
        self.expect = {}
        for r in self.recs:
            a = acc[r["key"]]
            a[0] += 1
            a[1] += r["v"]
            self.expect[r["seq"]] = (a[0], a[1])

    def run_eddy_fault(self, fault):
        env = dict(os.environ)
        env.pop("EDDY_FAULT", None)
        if fault:
            env["EDDY_FAULT"] = fault
        cmd = [EDDY, "run", DURABLE, "--input", self.inp, "--output", self.out, "--state",
               self.state, "--no-progress", "--quiet", "--max-in-flight", "8",
               "--async-threads", "2", "--commit-interval-ms", "0"]
        return subprocess.run(cmd, capture_output=True, timeout=120, env=env)

    def check_output(self, what):
        outs = read_jsonl(self.out)
        seqs = sorted(o["seq"] for o in outs)
        self.assertEqual(seqs, [r["seq"] for r in self.recs], what)
        for o in outs:
            self.assertEqual((o["count"], o["sum"]), self.expect[o["seq"]], what)
        dead = read_jsonl(self.out + ".dead.jsonl")
        self.assertEqual([d["reason"] for d in dead], ["no key field"], what)

    def sweep(self, cls, sites=None):
        stopped = 0
        for site in sites or [cls]:
            for n in NTH:
                for p in (self.out, self.out + ".dead.jsonl"):
                    if os.path.exists(p):
                        os.remove(p)
                subprocess.run(["rm", "-rf", self.state], check=True)
                what = "EDDY_FAULT=%s:%d" % (site, n)
                first = self.run_eddy_fault("%s:%d" % (site, n))
                err = first.stderr
                if first.returncode == 0:
                    self.check_output(what + " (no stop)")
                    continue
                stopped += 1
                self.assertIn(first.returncode, (1, 3), what + ": " + err.decode(errors="replace"))
                self.assertTrue(err.startswith(b"eddy: "), what + ": " + err.decode())
                self.assertTrue(any(w in err for w in WORDS[cls]),
                                what + ": unclear message: " + err.decode(errors="replace"))
                again = self.run_eddy_fault(None)
                self.assertEqual(again.returncode, 0, what + ": rerun: " + again.stderr.decode())
                self.check_output(what + " then rerun")
        self.assertGreater(stopped, 0, "no fault of class %s ever fired" % cls)
        return stopped

    def test_store_write(self):
        self.sweep("store_write")

    def test_store_commit(self):
        self.sweep("store_commit")

    def test_store_wal(self):
        # The write of a commit's WAL frames (gathered into one write by
        # store/walvfs.c): the commit fails, nothing built on it is kept.
        self.sweep("store_wal")

    def test_store_sync(self):
        # The syncer thread's fdatasync of the WAL: commits written but not
        # synced survive in the file, and their outputs come out on the rerun.
        self.sweep("store_sync")

    def test_no_call_after_a_failed_sync(self):
        """The action goes on once its first call's result is written, but its
        second call waits for that result to be on disk. Failing each of the
        first syncs in turn: whichever sync covers the first result, when it
        fails the second call has not run, although the first result was
        written (the rerun replays it rather than calling again). Without
        the wait, the second call would already be running then. Every rerun
        completes with the output once."""
        self.failed_sync_sweep(DURABLE, "chain")

    def test_no_call_after_a_failed_sync_inline_first(self):
        """The same with the first call made on the mailbox thread
        (eddy_ctx_durable_execute): the action goes on once its result is
        written, and the second call still waits for its sync."""
        self.failed_sync_sweep(DURABLE, "chain_inline")

    @needs_python
    def test_no_call_after_a_failed_sync_python(self):
        """The same for a Python action: the second durable_execute_async waits
        on its worker for the first result's sync."""
        self.failed_sync_sweep(DURABLE_PY, "chain")

    @needs_python
    def test_no_local_call_after_a_failed_sync_python(self):
        """The same with the second call a durable_execute, on the mailbox
        thread: it syncs the first result before it runs."""
        self.failed_sync_sweep(DURABLE_PY, "chain_local")

    def failed_sync_sweep(self, agent, op):
        effects = self.path("effects.txt")
        # The first call sleeps, so that the syncs of the start are over when
        # its result commits. How many there were still varies from run to
        # run (one or two), so the sweep is tried a few times over.
        write_jsonl(self.inp, [{"key": "k", "op": op, "seq": 1, "ms": 300}])
        cmd = [EDDY, "run", agent, "--input", self.inp, "--output", self.out, "--state",
               self.state, "--no-progress", "--quiet"]

        def steps():
            if not os.path.exists(effects):
                return []
            with open(effects) as f:
                return sorted(json.loads(line.split(" ", 1)[1])["step"] for line in f)

        held, seen = 0, []
        for n in [n for _ in range(4) for n in range(1, 8)]:
            if held:
                break
            for p in (effects, self.out):
                if os.path.exists(p):
                    os.remove(p)
            subprocess.run(["rm", "-rf", self.state], check=True)
            env = dict(os.environ, EDDY_TEST_EFFECTS=effects, EDDY_FAULT="store_sync:%d" % n)
            first = subprocess.run(cmd, capture_output=True, timeout=120, env=env)
            self.assertIn(first.returncode, (0, 3), first.stderr)
            before = steps()
            env.pop("EDDY_FAULT")
            again = subprocess.run(cmd, capture_output=True, timeout=120, env=env)
            self.assertEqual(again.returncode, 0, again.stderr)
            self.assertEqual(len(read_jsonl(self.out)), 1, "EDDY_FAULT=store_sync:%d" % n)
            seen.append((n, first.returncode, before, steps()))
            if first.returncode == 3 and before == [1] and steps() == [1, 2]:
                held += 1
        self.assertGreater(held, 0, "no failed sync found the second call waiting: %s" % seen)

    def test_sink_write(self):
        self.sweep("sink_write")

    def test_output_failing_at_start_is_an_io_failure(self):
        # The lines an earlier run committed but never wrote are written at
        # start-up; a write failure there is an I/O failure (exit 1), not a
        # usage error (exit 2), and the next run writes them once.
        found = 0
        for n in range(2, 12):
            for p in (self.out, self.out + ".dead.jsonl"):
                if os.path.exists(p):
                    os.remove(p)
            subprocess.run(["rm", "-rf", self.state], check=True)
            if self.run_eddy_fault("store_sync:%d" % n).returncode != 3:
                continue
            insp = subprocess.run([EDDY, "inspect", "--state", self.state, "--json"],
                                  capture_output=True, timeout=60)
            if json.loads(insp.stdout)["counts"]["outbox"] == 0:
                continue
            found += 1
            failed = self.run_eddy_fault("sink_write.write:1")
            self.assertEqual(failed.returncode, 1, failed.stderr)
            self.assertIn(b"cannot write to " + self.out.encode(), failed.stderr)
            again = self.run_eddy_fault(None)
            self.assertEqual(again.returncode, 0, again.stderr)
            self.check_output("store_sync:%d, then a failed write at start" % n)
        self.assertGreater(found, 0, "no failed sync left lines to write")

    # ---------------------------------------------------------------- fan-out

    def run_fanout(self, inp, fault, extra_env=None):
        env = dict(os.environ, **(extra_env or {}))
        env.pop("EDDY_FAULT", None)
        if fault:
            env["EDDY_FAULT"] = fault
        cmd = [EDDY, "run", DURABLE, "--input", inp, "--output", self.out, "--state",
               self.state, "--no-progress", "--quiet", "--async-threads", "2"]
        return subprocess.run(cmd, capture_output=True, timeout=120, env=env)

    def fanout_outputs(self):
        return sorted((o["seq"], o["kind"], o.get("i", -1)) for o in read_jsonl(self.out))

    def test_alloc_around_events_sent_before_an_output(self):
        # An action that sends events and then its output: an allocation
        # failing while the finished action's events are handed on must
        # not leave its completion committed without its output line.
        inp = self.path("fanout.jsonl")
        write_jsonl(inp, [{"key": "k%d" % (i % 3), "op": "fanout", "seq": i, "k": 3}
                          for i in range(6)])
        want = sorted([(i, "main", -1) for i in range(6)] +
                      [(i, "echo", j) for i in range(6) for j in range(3)])
        stopped = 0
        for site in ("alloc.task", "alloc.event"):
            for n in list(range(1, 16)) + [20, 30]:
                if os.path.exists(self.out):
                    os.remove(self.out)
                subprocess.run(["rm", "-rf", self.state], check=True)
                what = "EDDY_FAULT=%s:%d" % (site, n)
                first = self.run_fanout(inp, "%s:%d" % (site, n))
                if first.returncode != 0:
                    stopped += 1
                    self.assertIn(first.returncode, (1, 3), what + ": " + first.stderr.decode())
                    again = self.run_fanout(inp, None)
                    self.assertEqual(again.returncode, 0, what + ": " + again.stderr.decode())
                self.assertEqual(self.fanout_outputs(), want, what)
        self.assertGreater(stopped, 0)

    def test_alloc_while_replaying_a_finished_action(self):
        # The run dies in its last Echo, after the action that sent them
        # finished: the restart replays that action's events. An allocation
        # failing there stops eddy (it used to drop the events silently,
        # exit 0, their outputs lost); the next run gives every output once.
        inp = self.path("fanout.jsonl")
        flag = self.path("crash.flag")
        write_jsonl(inp, [{"key": "a", "op": "fanout", "seq": 0, "k": 4, "crash_flag": flag}])
        want = sorted([(0, "main", -1)] + [(0, "echo", j) for j in range(4)])
        open(flag, "w").close()
        effects = {"EDDY_TEST_EFFECTS": self.path("effects.txt")}
        self.assertEqual(self.run_fanout(inp, None, effects).returncode, 137)
        saved, saved_out = self.path("saved"), self.path("saved.jsonl")
        shutil.copytree(self.state, saved)
        shutil.copy(self.out, saved_out)
        stopped = 0
        for n in range(1, 10):
            subprocess.run(["rm", "-rf", self.state], check=True)
            shutil.copytree(saved, self.state)
            shutil.copy(saved_out, self.out)
            what = "EDDY_FAULT=alloc.event:%d" % n
            first = self.run_fanout(inp, "alloc.event:%d" % n, effects)
            if first.returncode != 0:
                stopped += 1
                self.assertEqual(first.returncode, 1, what + ": " + first.stderr.decode())
                self.assertIn(b"out of memory", first.stderr)
                again = self.run_fanout(inp, None, effects)
                self.assertEqual(again.returncode, 0, what + ": " + again.stderr.decode())
            self.assertEqual(self.fanout_outputs(), want, what)
        self.assertGreater(stopped, 0)

    def test_outcome_of_a_call_whose_commit_failed_never_reaches_the_action(self):
        # The action goes on with a durable call's outcome only once it is
        # committed: when the commit fails, the call returns canceled, and
        # no call whose outcome the action got runs again after a restart.
        effects = self.path("effects.txt")
        env = {"EDDY_TEST_EFFECTS": effects, "EDDY_TEST_GOT": "1"}
        seen = 0
        for n in range(2, 9):
            for p in (self.out, self.out + ".dead.jsonl", effects):
                if os.path.exists(p):
                    os.remove(p)
            subprocess.run(["rm", "-rf", self.state], check=True)
            first = self.run_fanout(self.inp, "store_commit:%d" % n, env)
            lines = []
            if os.path.exists(effects):  # (the failed commit may come before any call)
                with open(effects) as f:
                    lines = f.readlines()
            got = {json.loads(l.split(" ", 1)[1])["seq"] for l in lines if l.startswith("got ")}
            if first.returncode == 3:
                seen += 1
            again = self.run_fanout(self.inp, None, env)
            self.assertEqual(again.returncode, 0, again.stderr)
            with open(effects) as f:
                rerun = f.readlines()[len(lines):]
            ran_again = {json.loads(l.split(" ", 1)[1]).get("seq") for l in rerun
                         if l.startswith("effect ")}
            self.assertEqual(got & ran_again, set(), "store_commit:%d" % n)
            self.check_output("store_commit:%d then rerun" % n)
        self.assertGreater(seen, 0)

    def test_output_directory_synced(self):
        # A new output file survives a power cut only with its directory
        # entry: the first sync of each file also syncs its directory, and
        # a failure there stops eddy like a failed sync of the file.
        first = self.run_eddy_fault("sink_write.dirsync:1")
        self.assertEqual(first.returncode, 1, first.stderr)
        self.assertIn(b"cannot sync the directory of " + self.out.encode(), first.stderr)
        again = self.run_eddy_fault(None)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.check_output("sink_write.dirsync:1 then rerun")

    def test_alloc(self):
        self.sweep("alloc", ["alloc.input", "alloc.key", "alloc.task", "alloc.event",
                             "alloc.scratch", "alloc.emit"])

    def test_digest_alloc_stops(self):
        # The canonical text of a durable call's arguments could not be
        # written (its buffer could not grow): the digest of "null" was
        # taken instead, which the journal's then differed from on a resume,
        # and the committed call ran again. It stops eddy now.
        first = self.run_eddy_fault("alloc.digest:3")
        self.assertEqual(first.returncode, 1, first.stderr)
        self.assertIn(b"eddy: out of memory", first.stderr)
        again = self.run_eddy_fault(None)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertNotIn(b"non-deterministic", again.stderr)
        self.check_output("alloc.digest:3 then rerun")

    def test_json_alloc_while_parsing_an_input_line(self):
        # jansson reports running out of memory as a parse error ("invalid
        # token near ...") or drops a character of a string and goes on: a
        # valid line parsed so was dead-lettered "not JSON", exit 0, and the
        # state read past it, the input lost. It stops eddy (the first
        # allocations of jansson's are the reader's, parsing the line), and
        # the next run takes the line.
        self.inp = self.path("one.jsonl")
        rec = {"key": "a", "seq": 0, "v": 5, "ms": 0, "text": "a string longer than 16 bytes"}
        write_jsonl(self.inp, [rec])
        for n in range(1, 8):
            what = "EDDY_FAULT=alloc.json:%d" % n
            for p in (self.out, self.out + ".dead.jsonl"):
                if os.path.exists(p):
                    os.remove(p)
            subprocess.run(["rm", "-rf", self.state], check=True)
            first = self.run_eddy_fault("alloc.json:%d" % n)
            self.assertEqual(first.returncode, 1, what + ": " + first.stderr.decode())
            self.assertIn(b"cannot read " + self.inp.encode() + b": out of memory", first.stderr,
                          what)
            self.assertFalse(os.path.exists(self.out + ".dead.jsonl"), what)
            again = self.run_eddy_fault(None)
            self.assertEqual(again.returncode, 0, what + ": rerun: " + again.stderr.decode())
            self.assertEqual([(o["seq"], o["count"], o["sum"]) for o in read_jsonl(self.out)],
                             [(0, 1, 5)], what)
            self.assertFalse(os.path.exists(self.out + ".dead.jsonl"), what)

    def test_disk_full_on_output_is_an_error(self):
        """ENOSPC while writing the output: exit 1 naming the file and the
        cause, never a silently short file; the rerun completes it."""
        first = self.run_eddy_fault("sink_write.write:1:ENOSPC")
        self.assertEqual(first.returncode, 1, first.stderr)
        self.assertIn(b"eddy: cannot write to " + self.out.encode(), first.stderr)
        self.assertIn(b"No space left on device", first.stderr)
        again = self.run_eddy_fault(None)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.check_output("after ENOSPC")

    def test_disk_full_without_state(self):
        cmd = [EDDY, "run", DURABLE, "--input", self.inp, "--output", self.out, "--no-progress",
               "--quiet"]
        res = subprocess.run(cmd, capture_output=True, timeout=120,
                             env=dict(os.environ, EDDY_FAULT="sink_write.write:1:ENOSPC"))
        self.assertEqual(res.returncode, 1, res.stderr)
        self.assertIn(b"No space left on device", res.stderr)

    def test_failed_standard_stream_is_named(self):
        # Dead letters to stderr (-) that cannot be written: the message
        # names standard error, not standard output.
        bad = self.path("bad.jsonl")
        with open(bad, "w") as f:
            f.write('{"no key": 1}\n')
        res = subprocess.run([EDDY, "run", DURABLE, "--input", bad, "--output", self.out,
                              "--dead-letter", "-", "--quiet"], capture_output=True,
                             timeout=120, env=dict(os.environ, EDDY_FAULT="sink_write.write:1:ENOSPC"))
        self.assertEqual(res.returncode, 1, res.stderr)
        self.assertIn(b"eddy: cannot write to standard error: No space left on device",
                      res.stderr)
        # A failed sync of stdout (a file, with --state) names it too.
        with open(self.path("stdout"), "wb") as f:
            res = subprocess.run([EDDY, "run", DURABLE, "--input", self.inp, "--state",
                                  self.state, "--quiet"], stdout=f, stderr=subprocess.PIPE,
                                 timeout=120, env=dict(os.environ, EDDY_FAULT="sink_write.sync:1"))
        self.assertEqual(res.returncode, 1, res.stderr)
        self.assertIn(b"eddy: cannot sync standard output: Input/output error", res.stderr)

    def test_standard_stream_directory_not_synced(self):
        # stdout redirected to a file, with --state: the file is synced, but
        # "-" names no directory, and the shell's is not eddy's to sync
        # (it may not even be readable): the dirsync site is never reached.
        with open(self.path("stdout"), "wb") as f:
            res = subprocess.run([EDDY, "run", DURABLE, "--input", self.inp, "--state",
                                  self.state, "--quiet"], stdout=f, stderr=subprocess.PIPE,
                                 timeout=120,
                                 env=dict(os.environ, EDDY_FAULT="sink_write.dirsync:1"))
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(len(read_jsonl(self.path("stdout"))), len(self.recs))


if __name__ == "__main__":
    unittest.main(verbosity=2)
