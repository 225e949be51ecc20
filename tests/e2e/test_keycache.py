"""The key cache (--key-cache N, with --state): idle keys beyond N are let go
and their short-term memory read back from the state when their next run
starts; a restart reads only the keys it resumes or that come again. The
memory each output reports must be as if every key had stayed in memory:
after eviction and reload, across SIGKILL and rerun, in a new process."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from eddytest import (AGENTS, EDDY, SANITIZED, SOURCE, EddyTest, lines_written, needs_python,  # noqa
                      read_jsonl, write_jsonl)

DURABLE = os.path.join(AGENTS, "durable_agent.so")
DURABLE_PY = os.path.join(SOURCE, "tests", "agents", "durable_agent.py")


def records(n_keys, rounds, first=0, ms=0):
    """rounds x n_keys inputs, the keys in turn: each key comes again n_keys
    inputs later, long after its run ended."""
    return [{"key": "k%03d" % k, "seq": first + r * n_keys + k, "v": 7 * k + r, "ms": ms}
            for r in range(rounds) for k in range(n_keys)]


class KeyCache(EddyTest):
    def setUp(self):
        super().setUp()
        self.inp = self.path("in.jsonl")
        self.out = self.path("out.jsonl")
        self.state = self.path("state")

    def cmd(self, agent=DURABLE, *extra):
        return [EDDY, "run", agent, "--input", self.inp, "--output", self.out, "--state",
                self.state, "--no-progress", "--async-threads", "4"] + list(extra)

    def run_ok(self, *args, agent=DURABLE):
        res = subprocess.run(self.cmd(agent, *args), capture_output=True, timeout=300,
                             env=dict(os.environ, EDDY_TEST_EFFECTS=self.path("effects")))
        self.assertEqual(res.returncode, 0, res.stderr.decode(errors="replace"))
        return res.stderr.decode()

    def keys_read(self, summary):
        """The summary's "N reads of keys' memory from the state" (0 when absent)."""
        m = re.search(r", ([0-9]+) reads? of keys' memory from the state", summary)
        return int(m.group(1)) if m else 0

    def check_memory(self, recs):
        """Each output's count and sum follow from all earlier inputs of its
        key, and each input has exactly one output; the state holds each
        key's final memory."""
        outs = read_jsonl(self.out)
        self.assertEqual(sorted(o["seq"] for o in outs), sorted(r["seq"] for r in recs))
        by_seq = {o["seq"]: o for o in outs}
        total = {}
        for r in recs:
            c, s = total.get(r["key"], (0, 0))
            total[r["key"]] = (c + 1, s + r["v"])
            o = by_seq[r["seq"]]
            self.assertEqual((o["key"], o["count"], o["sum"]), (r["key"], c + 1, s + r["v"]),
                             "seq %d" % r["seq"])
        for key in (recs[0]["key"], recs[-1]["key"]):
            insp = subprocess.run([EDDY, "inspect", "--state", self.state, "--json", "--key",
                                   json.dumps(key)], capture_output=True, timeout=60)
            self.assertEqual(insp.returncode, 0, insp.stderr)
            mem = json.loads(insp.stdout)["key"]["short_term_memory"]
            self.assertEqual((mem["count"], mem["sum"]), total[key])

    def evict_and_reload(self, agent):
        recs = records(30, 4)
        write_jsonl(self.inp, recs)
        summary = self.run_ok("--key-cache", "2", "--max-in-flight", "3", agent=agent)
        self.check_memory(recs)
        # Each key's later runs read its memory back: at most one key in
        # flight, or idle among the two kept, when it comes again.
        self.assertGreaterEqual(self.keys_read(summary), 3 * 30 - 5, summary)

    def test_memory_right_after_eviction_and_reload(self):
        self.evict_and_reload(DURABLE)

    def test_the_cache_bounded_by_bytes(self):
        # The count alone let 20,000 keys of 50 KB each stay resident (1.19
        # GB). Here no bound on the count, and 50 bytes: less than one idle
        # key weighs (768 and its memory, {"count":N,"sum":M}), so each is
        # let go and read back at its next input.
        recs = records(30, 4)
        write_jsonl(self.inp, recs)
        summary = self.run_ok("--key-cache", "0", "--key-cache-bytes", "50",
                              "--max-in-flight", "3")
        self.check_memory(recs)
        self.assertGreaterEqual(self.keys_read(summary), 3 * 30 - 5, summary)
        # Neither bound: every key stays.
        os.remove(self.out)
        shutil.rmtree(self.state)
        summary = self.run_ok("--key-cache", "0", "--key-cache-bytes", "0",
                              "--max-in-flight", "3")
        self.check_memory(recs)
        self.assertEqual(self.keys_read(summary), 0, summary)

    @needs_python
    def test_memory_right_after_eviction_and_reload_python(self):
        self.evict_and_reload(DURABLE_PY)

    def test_revisited_key_in_a_new_process(self):
        """A restart reads no key's memory until a run of the key starts;
        then the key sees its saved memory (default --key-cache)."""
        recs = records(40, 2)
        write_jsonl(self.inp, recs)
        summary = self.run_ok()
        self.assertEqual(self.keys_read(summary), 0, summary)
        more = [{"key": "k%03d" % k, "seq": 80 + k, "v": 1, "ms": 0} for k in (3, 17, 39)]
        with open(self.inp, "a") as f:
            for r in more:
                f.write(json.dumps(r) + "\n")
        summary = self.run_ok()
        self.assertEqual(self.keys_read(summary), 3, summary)
        self.assertIn("3 inputs", summary)
        self.check_memory(recs + more)

    def test_sigkill_and_rerun(self):
        """SIGKILL while keys are let go and read back, rerun until done:
        every output once, with the memory as if nothing had happened."""
        n_keys, rounds = (24, 8) if not SANITIZED else (12, 6)
        recs = records(n_keys, rounds, ms=3)
        write_jsonl(self.inp, recs)
        cmd = self.cmd(DURABLE, "--key-cache", "2", "--max-in-flight", "4")
        env = dict(os.environ, EDDY_TEST_EFFECTS=self.path("effects"))
        kills = 0
        for stage in (0.2, 0.45, 0.7):
            p = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
            deadline = time.time() + 60
            while time.time() < deadline and p.poll() is None:
                done = lines_written(self.out)
                if done >= stage * len(recs):
                    break
                time.sleep(0.005)
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                kills += 1
            p.communicate(timeout=60)
        self.assertGreaterEqual(kills, 2)
        res = subprocess.run(cmd, env=env, capture_output=True, timeout=300)
        self.assertEqual(res.returncode, 0, res.stderr)
        summary = res.stderr.decode()
        # More than one read per key: keys came again after they were let go.
        self.assertGreater(self.keys_read(summary), n_keys, summary)
        self.check_memory(recs)

    def test_without_state_nothing_changes(self):
        recs = records(30, 3)
        write_jsonl(self.inp, recs)
        res = subprocess.run([EDDY, "run", DURABLE, "--input", self.inp, "--output", self.out,
                              "--no-progress", "--key-cache", "2", "--max-in-flight", "1"],
                             capture_output=True, timeout=300)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertNotIn(b"read from the state", res.stderr)
        outs = read_jsonl(self.out)
        self.assertEqual([o["count"] for o in outs], [1 + i // 30 for i in range(90)])

    def test_option(self):
        res = subprocess.run([EDDY, "run", "--help"], capture_output=True, timeout=30,
                             text=True)
        self.assertIn("--key-cache N", res.stdout)
        self.assertIn("(default: 100000)", res.stdout.split("--key-cache N")[1][:300])
        write_jsonl(self.inp, records(2, 1))
        res = subprocess.run(self.cmd(DURABLE, "--key-cache", "-1"), capture_output=True,
                             timeout=30)
        self.assertEqual(res.returncode, 2)
        self.assertIn(b"invalid value '-1' for option 'key-cache'", res.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
