"""Damaged state files: a corrupted or truncated database, journal, pending
and memory records that do not decode, a state directory from a newer eddy.
Each gives a clear error naming the file and what is wrong, exit code 3, and
leaves the state file exactly as it was (checksums before and after)."""
import hashlib
import json
import os
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from eddytest import AGENTS, EDDY, EddyTest, read_jsonl, write_jsonl  # noqa: E402

DURABLE = os.path.join(AGENTS, "durable_agent.so")


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class StateFiles(EddyTest):
    def setUp(self):
        super().setUp()
        self.inp = self.path("in.jsonl")
        self.out = self.path("out.jsonl")
        self.state = self.path("state")
        self.db = os.path.join(self.state, "eddy.db")
        self.effects = self.path("effects.txt")

    def run_cmd(self, plan=None):
        """plan: a variant of the agent's plan (EDDY_TEST_PLAN, see durable_agent.c)."""
        cmd = [EDDY, "run", DURABLE, "--input", self.inp, "--output", self.out, "--state",
               self.state, "--no-progress", "--quiet"]
        env = dict(os.environ, EDDY_TEST_EFFECTS=self.effects)
        env.pop("EDDY_TEST_PLAN", None)
        if plan is not None:
            env["EDDY_TEST_PLAN"] = plan
        return subprocess.run(cmd, capture_output=True, timeout=120, env=env)

    def finished_state(self, n=400):
        """A real state made by a real run that completed (keys with memory)."""
        write_jsonl(self.inp, [{"key": "k%d" % (i % 20), "seq": i, "v": i, "pad": "p" * 200}
                               for i in range(n)])
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)

    def crashed_state(self):
        """A real state with runs in flight: journal records (a finished
        action and a durable call) and pending inputs, left by a crash."""
        flag = self.path("crash")
        open(flag, "w").close()
        write_jsonl(self.inp, [{"key": "k", "op": "finished_then_crash", "seq": 1,
                                "crash_flag": flag}, {"key": "k", "seq": 2, "v": 3}])
        res = self.run_cmd()
        self.assertEqual(res.returncode, 137, res.stderr)

    def assert_resumes_replaying(self):
        """The crashed state (crashed_state) resumes to the end with its
        finished action and durable call replayed, not run again."""
        with open(self.effects) as f:
            before = f.read()
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(sorted(o["seq"] for o in read_jsonl(self.out)), [1, 2])
        with open(self.effects) as f:
            after = f.read()
        self.assertTrue(after.startswith(before))
        self.assertNotIn("finished_then_crash", after[len(before):])  # replayed, not run
        self.assertNotIn('"later"', after[len(before):])

    def assert_refused(self, *words, plan=None):
        """Refused (exit 3, one line) with eddy.db and its WAL, when there
        is one, as they were: a refusal of the state's own checks (those
        that run here) checkpoints nothing."""
        wal = self.db + "-wal"
        before = digest(self.db)
        wal_before = digest(wal) if os.path.exists(wal) else None
        res = self.run_cmd(plan)
        err = res.stderr.decode(errors="replace")
        self.assertEqual(res.returncode, 3, err)
        self.assertTrue(err.startswith("eddy: "), err)
        self.assertEqual(err.count("\n"), 1, "one line: " + err)
        for w in words:
            self.assertIn(w, err)
        self.assertEqual(digest(self.db), before, "the failed start changed " + self.db)
        self.assertEqual(digest(wal) if os.path.exists(wal) else None, wal_before,
                         "the failed start changed " + wal)
        return err

    # The journal log's rows (src/store/jlog.h): entries 'p' (put), 'C'
    # (cut) and 'P' (a put as format 5 and older wrote it). In 'p', integers
    # are varints (idx zigzag-coded) and strings their length + 1 as a varint,
    # the bytes and a NUL, or 0 for none; in 'C' and 'P', integers are 8
    # bytes, little-endian, and strings a 4-byte length, the bytes and a NUL,
    # or 0xffffffff for none.
    @staticmethod
    def jlog_decode(data):
        out, i = [], 0

        def varint():
            nonlocal i
            v, shift = 0, 0
            while True:
                c = data[i]
                i += 1
                v |= (c & 0x7F) << shift
                shift += 7
                if c < 0x80:
                    return v

        def s(compact):
            nonlocal i
            if compact:
                n = varint()
                if n == 0:
                    return None
                n -= 1
            else:
                (n,) = struct.unpack_from("<I", data, i)
                i += 4
                if n == 0xFFFFFFFF:
                    return None
            v = data[i:i + n].decode()
            i += n + 1
            return v

        def q(compact, zigzag=False):
            nonlocal i
            if compact:
                v = varint()
                return (v >> 1) ^ -(v & 1) if zigzag else v
            (v,) = struct.unpack_from("<q", data, i)
            i += 8
            return v

        while i < len(data):
            tag = chr(data[i])
            i += 1
            c = tag == "p"
            e = {"tag": tag, "key": s(c), "seq": q(c), "event_id": s(c), "action": s(c),
                 "idx": q(c, True)}
            if tag in "pP":
                e["kind"], e["status"] = data[i], data[i + 1]
                i += 2
                for f in ("fn_id", "digest", "payload", "err_type", "err_msg"):
                    e[f] = s(c)
            out.append(e)
        return out

    @staticmethod
    def jlog_encode(entries):
        """Each entry in the encoding its tag names."""
        b = bytearray()

        def varint(v):
            while v >= 0x80:
                b.append((v & 0x7F) | 0x80)
                v >>= 7
            b.append(v)

        def s(v, compact):
            raw = v.encode() if v is not None else None
            if compact:
                varint(len(raw) + 1 if raw is not None else 0)
            else:
                b.extend(struct.pack("<I", len(raw) if raw is not None else 0xFFFFFFFF))
            if raw is not None:
                b.extend(raw + b"\0")

        def q(v, compact, zigzag=False):
            if compact:
                varint(((v << 1) ^ (v >> 63)) & (2**64 - 1) if zigzag else v)
            else:
                b.extend(struct.pack("<q", v))

        for e in entries:
            c = e["tag"] == "p"
            b.extend(e["tag"].encode())
            s(e["key"], c)
            q(e["seq"], c)
            s(e["event_id"], c)
            s(e["action"], c)
            q(e["idx"], c, True)
            if e["tag"] in "pP":
                b.extend(bytes([e["kind"], e["status"]]))
                for f in ("fn_id", "digest", "payload", "err_type", "err_msg"):
                    s(e[f], c)
        return bytes(b)

    def set_journal_payload(self, kind, payload):
        """Set the payload of every journal record of this kind, in place."""
        c = sqlite3.connect(self.db)
        n = 0
        for rowid, data in c.execute("SELECT id, data FROM jlog").fetchall():
            entries = self.jlog_decode(data)
            for e in entries:
                if e["tag"] in "pP" and e["kind"] == kind:
                    e["payload"] = payload
                    n += 1
            c.execute("UPDATE jlog SET data = ? WHERE id = ?", (self.jlog_encode(entries), rowid))
        c.commit()
        c.close()
        self.assertGreater(n, 0, "no journal record of kind %d" % kind)

    def sql(self, stmt, *args):
        c = sqlite3.connect(self.db)
        c.execute(stmt, args)
        c.commit()
        c.close()

    # Rows of pending inputs (src/store/sqlite_store.c, "pending"): per
    # input seq and line number (8 bytes each), the key's length (4), the
    # key and a NUL, the record's length (4), the record and a NUL;
    # little-endian.
    @staticmethod
    def inputs_decode(data):
        out, i = [], 0
        while i < len(data):
            seq, line_no, kl = struct.unpack_from("<QQI", data, i)
            i += 20
            key = data[i:i + kl].decode()
            i += kl + 1
            (rl,) = struct.unpack_from("<I", data, i)
            i += 4
            out.append({"seq": seq, "line_no": line_no, "key": key,
                        "record": data[i:i + rl].decode()})
            i += rl + 1
        return out

    @staticmethod
    def inputs_encode(entries):
        b = bytearray()
        for e in entries:
            k, r = e["key"].encode(), e["record"].encode()
            b.extend(struct.pack("<QQI", e["seq"], e["line_no"], len(k)) + k + b"\0")
            b.extend(struct.pack("<I", len(r)) + r + b"\0")
        return bytes(b)

    def set_inputs(self, change):
        """Rewrite every pending input as change(entry) gives it."""
        c = sqlite3.connect(self.db)
        for rowid, data in c.execute("SELECT id, data FROM inputs").fetchall():
            entries = [change(e) for e in self.inputs_decode(data)]
            c.execute("UPDATE inputs SET data = ? WHERE id = ?", (self.inputs_encode(entries), rowid))
        c.commit()
        c.close()

    # ------------------------------------------------------------ the file

    def test_truncated_database(self):
        self.finished_state()
        with open(self.db, "r+b") as f:
            f.truncate(os.path.getsize(self.db) // 3)
        self.assert_refused(self.db, "is not an eddy state database or is corrupted",
                            "malformed")

    def test_overwritten_middle(self):
        """Garbage over the cells of a page in use (the keys table's). Bytes
        in free pages or free space are harmless and go unnoticed: eddy does
        not run PRAGMA quick_check, but reads every live record it uses (a
        key's memory when a run of the key starts: here every key has one)."""
        self.finished_state()
        c = sqlite3.connect(self.db)
        (root,) = c.execute("SELECT rootpage FROM sqlite_master WHERE name = 'keys'").fetchone()
        (page,) = c.execute("PRAGMA page_size").fetchone()
        c.close()
        with open(self.db, "r+b") as f:
            f.seek(root * page - 600)  # the cells sit at the end of the page
            f.write(b"\xde\xad\xbe\xef" * 64)
        with open(self.inp, "a") as f:
            for i in range(20):
                f.write(json.dumps({"key": "k%d" % i, "seq": 400 + i, "v": i}) + "\n")
        err = self.assert_refused(self.db)
        self.assertTrue("corrupted" in err or "the state is damaged" in err, err)

    def test_not_a_database(self):
        self.finished_state()
        with open(self.db, "r+b") as f:
            f.write(b"this is not sqlite" * 8)
        self.assert_refused(self.db, "file is not a database")

    def test_newer_format(self):
        self.finished_state()
        self.sql("UPDATE meta SET v = 99 WHERE k = 'format_version'")
        self.assert_refused(self.state, "written by a newer eddy (format 99, this eddy reads "
                            "formats 2 to 7)")

    def query(self, stmt):
        c = sqlite3.connect(self.db)
        (v,) = c.execute(stmt).fetchone()
        c.close()
        return v

    def test_format_2_is_upgraded(self):
        """A state of format 2 kept one run counter per key, in its row: it is
        taken as it is, the format becomes the current one (7), and new runs are numbered past
        every key's counter (no run number of a key is used twice)."""
        self.finished_state(40)
        self.sql("UPDATE meta SET v = 2 WHERE k = 'format_version'")
        self.sql("DELETE FROM meta WHERE k = 'next_run'")
        self.sql("UPDATE keys SET next_seq = 1000 WHERE key = '\"k3\"'")
        write_jsonl(self.inp, [{"key": "k%d" % (i % 20), "seq": i, "v": i, "pad": "p" * 200}
                               for i in range(45)])
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(len(read_jsonl(self.out)), 45)
        self.assertEqual(self.query("SELECT v FROM meta WHERE k = 'format_version'"), 7)
        self.assertEqual(self.query("SELECT v FROM meta WHERE k = 'next_run'"), 1005)

    def test_format_4_pending_table_is_upgraded(self):
        """Formats 2 to 4 kept a row per pending input in a pending table:
        an inspection reads it as it is, and a run converts it to rows of
        inputs in the same order and resumes every run once."""
        flag = self.path("crash")
        open(flag, "w").close()
        write_jsonl(self.inp, [{"key": "k", "op": "finished_then_crash", "seq": 1,
                                "crash_flag": flag}, {"key": "k", "seq": 2, "v": 3}]
                    + [{"key": "j%d" % (i % 3), "seq": 10 + i, "v": i} for i in range(40)])
        res = self.run_cmd()
        self.assertEqual(res.returncode, 137, res.stderr)
        c = sqlite3.connect(self.db)
        entries = []
        for (data,) in c.execute("SELECT data FROM inputs ORDER BY id").fetchall():
            entries += self.inputs_decode(data)
        self.assertGreater(len(entries), 32)  # more than one row of inputs
        c.execute("CREATE TABLE pending(id INTEGER PRIMARY KEY, key TEXT NOT NULL, seq INTEGER "
                  "NOT NULL, line_no INTEGER NOT NULL, record TEXT NOT NULL)")
        # Ids as an older eddy left them: increasing, with gaps.
        c.executemany("INSERT INTO pending(id, key, seq, line_no, record) VALUES (?, ?, ?, ?, ?)",
                      [(5 + 3 * i, e["key"], e["seq"], e["line_no"], e["record"])
                       for i, e in enumerate(entries)])
        c.execute("DROP TABLE inputs")
        c.execute("UPDATE meta SET v = 4 WHERE k = 'format_version'")
        c.commit()
        c.close()
        insp = subprocess.run([EDDY, "inspect", "--state", self.state, "--json"],
                              capture_output=True, timeout=60)
        self.assertEqual(insp.returncode, 0, insp.stderr)
        self.assertEqual(json.loads(insp.stdout)["counts"]["pending"], len(entries))
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(self.query("SELECT v FROM meta WHERE k = 'format_version'"), 7)
        self.assertEqual(self.query("SELECT count(*) FROM sqlite_master WHERE name = 'pending'"),
                         0)
        self.assertEqual(self.query("SELECT count(*) FROM inputs"), 0)
        outs = read_jsonl(self.out)
        self.assertEqual(sorted(o["seq"] for o in outs), [1, 2] + list(range(10, 50)))
        # Each key's runs in input order: its memory's count grows with seq.
        for r in range(3):
            mine = sorted((o["seq"], o["count"]) for o in outs
                          if o["seq"] >= 10 and (o["seq"] - 10) % 3 == r)
            counts = [c for _, c in mine]
            self.assertEqual(counts, sorted(counts), mine)
            self.assertEqual(len(set(counts)), len(counts), mine)

    def test_key_field_name_recorded_and_older_states_kept(self):
        """The refusal of another --key names the state's key field. A state
        an older eddy made holds only a hash of it: it gets the name from a
        run with the same --key, and until then the refusal says what it
        can."""
        self.finished_state(40)
        name = "SELECT v FROM meta WHERE k = 'key_field_name'"
        self.assertEqual(self.query(name), "key")
        self.sql("DELETE FROM meta WHERE k = 'key_field_name'")
        cmd = [EDDY, "run", DURABLE, "--input", self.inp, "--output", self.out, "--state",
               self.state, "--no-progress", "--quiet"]
        before = digest(self.db)
        res = subprocess.run(cmd + ["--key", "seq"], capture_output=True, timeout=120)
        self.assertEqual(res.returncode, 3, res.stderr)
        self.assertIn(b"was filled with another key field than --key seq", res.stderr)
        self.assertEqual(digest(self.db), before)
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(self.query(name), "key")
        res = subprocess.run(cmd + ["--key", "seq"], capture_output=True, timeout=120)
        self.assertEqual(res.returncode, 3, res.stderr)
        self.assertIn(b"was filled with --key key, not --key seq", res.stderr)
        # A name that does not match the hash is not believed.
        self.sql("UPDATE meta SET v = 'other' WHERE k = 'key_field_name'")
        res = subprocess.run(cmd + ["--key", "seq"], capture_output=True, timeout=120)
        self.assertEqual(res.returncode, 3, res.stderr)
        self.assertIn(b"was filled with another key field than --key seq", res.stderr)

    def test_other_plan_says_what_differs(self):
        """A state made for another plan is refused with what differs: actions
        added, removed, listening to other event types, in another order. The
        state keeps its plan's actions beside the fingerprint, which alone
        decides. A state an older eddy made lacks them: a run of the same plan
        adds them, and until then the refusal gives the fingerprints and says
        why."""
        self.finished_state(40)
        actions = "SELECT v FROM meta WHERE k = 'plan_actions'"
        described = ('[{"name":"step1","event_types":["InputEvent"]},'
                     '{"name":"step2","event_types":["Mid"]},'
                     '{"name":"probe","event_types":["InputEvent"]},'
                     '{"name":"later","event_types":["Later"]},'
                     '{"name":"echo","event_types":["Echo"]}]')
        then = "; use another --state directory, or remove %s to start over\n" % self.state
        err = self.assert_refused(plan="changed")
        self.assertEqual(err, "eddy: state directory %s belongs to another agent plan (action "
                         "'probe' listens to InputEvent, Echo instead of InputEvent; action "
                         "'score' is new; action 'later' was removed)" % self.state + then)
        err = self.assert_refused(plan="reordered")
        self.assertEqual(err, "eddy: state directory %s belongs to another agent plan (the "
                         "actions are in another order: 'step2', 'step1', 'probe', 'later', "
                         "'echo' instead of 'step1', 'step2', 'probe', 'later', 'echo')"
                         % self.state + then)
        self.assertEqual(self.query(actions), described)

        self.sql("DELETE FROM meta WHERE k = 'plan_actions'")
        fingerprints = ("eddy: state directory %s belongs to another agent plan \\(its plan "
                        "fingerprint is [0-9a-f]{16}, this plan's is [0-9a-f]{16}"
                        % re.escape(self.state))
        err = self.assert_refused(plan="changed")
        self.assertRegex(err, "^" + fingerprints + "; an older eddy made the state without "
                         "recording its plan's actions, so what changed is not known\\)")
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(self.query(actions), described)
        err = self.assert_refused(plan="changed")
        self.assertIn("(action 'probe' listens to InputEvent, Echo instead of", err)
        # A description that does not give the state's fingerprint is not believed.
        self.sql("UPDATE meta SET v = ? WHERE k = 'plan_actions'",
                 described.replace('"later"', '"sooner"'))
        err = self.assert_refused(plan="changed")
        self.assertRegex(err, "^" + fingerprints + "\\); use another")

    def test_not_an_eddy_database(self):
        os.makedirs(self.state)
        c = sqlite3.connect(self.db)
        c.execute("CREATE TABLE t(x)")
        c.commit()
        c.close()
        write_jsonl(self.inp, [{"key": "k", "seq": 1}])
        self.assert_refused(self.db, "is not an eddy state database: it holds other tables")
        # eddy inspect says the same (it said "no such table: meta").
        res = subprocess.run([EDDY, "inspect", "--state", self.state], capture_output=True,
                             timeout=60)
        self.assertEqual(res.returncode, 3, res.stderr)
        self.assertEqual(res.stderr.decode(), "eddy: %s is not an eddy state database: it holds "
                         "other tables\n" % self.db)

    def test_inspect_a_directory_that_holds_no_state(self):
        # An existing directory without eddy.db (`--state /tmp`) was said to
        # be "(No such file or directory)", which named no file.
        os.makedirs(self.state)
        for files in ((), ("notes.txt",)):
            for f in files:
                open(os.path.join(self.state, f), "w").close()
            before = sorted(os.listdir(self.state))
            res = subprocess.run([EDDY, "inspect", "--state", self.state], capture_output=True,
                                 timeout=60)
            self.assertEqual(res.returncode, 3, res.stderr)
            self.assertEqual(res.stderr.decode(), "eddy: %s: no eddy state here: the directory "
                             "holds no eddy.db (give the --state directory of a run)\n"
                             % self.state)
            self.assertEqual(sorted(os.listdir(self.state)), before)
        # One that is not there at all says so.
        missing = self.path("missing")
        res = subprocess.run([EDDY, "inspect", "--state", missing], capture_output=True,
                             timeout=60)
        self.assertEqual(res.returncode, 3, res.stderr)
        self.assertEqual(res.stderr.decode(), "eddy: %s: no eddy state here (No such file or "
                         "directory)\n" % missing)

    def test_inspect_a_state_whose_name_is_not_utf8(self):
        # A run takes the directory's name as bytes; the report, JSON, took
        # it as text, and jansson's refusal of it was said "out of memory".
        state = os.fsencode(self.path("s")) + b"\xff\xc3("
        write_jsonl(self.inp, [{"key": "k", "seq": 1, "v": 2}])
        res = subprocess.run([EDDY, "run", DURABLE, "--input", self.inp, "--output", self.out,
                              "--state", state, "--quiet"], capture_output=True, timeout=120,
                             env=dict(os.environ, EDDY_TEST_EFFECTS=self.effects))
        self.assertEqual(res.returncode, 0, res.stderr)
        shown = self.path("s") + "\\xff\\xc3("
        res = subprocess.run([EDDY, "inspect", "--state", state], capture_output=True, timeout=60)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(res.stdout.decode().splitlines()[0], "state " + shown)
        res = subprocess.run([EDDY, "inspect", "--state", state, "--json"], capture_output=True,
                             timeout=60)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(json.loads(res.stdout)["state"], shown)
        self.assertEqual(json.loads(res.stdout)["source"]["line"], 1)

    def test_directory_of_other_files_is_not_adopted(self):
        # `--state .` or a mistyped path: a directory holding files but no
        # eddy.db is refused, and nothing is written into it.
        os.makedirs(self.state)
        with open(os.path.join(self.state, "notes.txt"), "w") as f:
            f.write("mine\n")
        write_jsonl(self.inp, [{"key": "k", "seq": 1}])
        res = self.run_cmd()
        self.assertEqual(res.returncode, 3, res.stderr)
        self.assertEqual(res.stderr.decode(), "eddy: state directory %s holds other files "
                         "(notes.txt) and no eddy state: give a new or empty directory, or the "
                         "one an earlier run filled\n" % self.state)
        self.assertEqual(sorted(os.listdir(self.state)), ["notes.txt"])
        # Hidden files and lost+found are fine, and so is a state made there.
        os.remove(os.path.join(self.state, "notes.txt"))
        for name in (".gitignore", "lost+found"):
            open(os.path.join(self.state, name), "w").close()
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        with open(os.path.join(self.state, "notes.txt"), "w") as f:
            f.write("added later\n")
        res = self.run_cmd()  # a state's own directory may hold more
        self.assertEqual(res.returncode, 0, res.stderr)

    # ------------------------------------------------------------ files gone

    def refused_files(self, *words, inspect_reads=False):
        """Refused by a run and by eddy inspect (exit 3, one line), with no
        file of the state directory changed or made, nor the output.
        inspect_reads: eddy inspect refuses once it read the database, which
        leaves an empty WAL and its index beside it (as its read of a state
        stopped cleanly does)."""
        def snapshot():
            files = {}
            for name in sorted(os.listdir(self.state)):
                files[name] = digest(os.path.join(self.state, name))
            return files
        before = snapshot()
        with open(self.out, "rb") as f:
            out_before = f.read()
        effects_before = os.path.getsize(self.effects)
        res = self.run_cmd()
        err = res.stderr.decode(errors="replace")
        self.assertEqual(res.returncode, 3, err)
        self.assertTrue(err.startswith("eddy: "), err)
        self.assertEqual(err.count("\n"), 1, "one line: " + err)
        for w in words:
            self.assertIn(w, err)
        self.assertEqual(snapshot(), before, "the refused start changed the state directory")
        res = subprocess.run([EDDY, "inspect", "--state", self.state], capture_output=True,
                             timeout=60)
        self.assertEqual(res.returncode, 3, res.stderr)
        self.assertEqual(res.stderr.decode(), err)
        after = snapshot()
        if inspect_reads:
            self.assertEqual(after.pop("eddy.db-wal"), hashlib.sha256(b"").hexdigest())
            after.pop("eddy.db-shm")
        self.assertEqual(after, before, "the refused inspection changed the state directory")
        with open(self.out, "rb") as f:
            self.assertEqual(f.read(), out_before)
        self.assertEqual(os.path.getsize(self.effects), effects_before, "a durable call ran")
        return err

    def test_database_emptied_or_removed(self):
        """A state stopped cleanly holds everything in eddy.db: emptied or
        removed, the rerun would start afresh and run every input and every
        durable call again. LOCK says that the directory held a state."""
        self.finished_state(40)
        with open(self.db, "r+b") as f:
            f.truncate(0)
        self.refused_files("eddy: state database %s is empty (0 bytes), but %s/LOCK says that "
                           "the directory held a state: the state is damaged, and starting "
                           "afresh would read every input and run every durable call again; "
                           "put eddy.db back (from a backup: one that lacks the last commits "
                           "made durable is refused unless %s/LOCK is removed too), or remove "
                           "the directory %s (or give another --state directory) to start over\n"
                           % (self.db, self.state, self.state, self.state))
        os.remove(self.db)
        self.refused_files("eddy: state database %s is missing, but %s/LOCK says" %
                           (self.db, self.state))
        # A file of the user's beside it (the output kept in the state
        # directory) does not make it "a directory of other files": LOCK
        # says it held a state.
        with open(os.path.join(self.state, "notes.txt"), "w") as f:
            f.write("mine\n")
        self.refused_files("eddy: state database %s is missing, but %s/LOCK says" %
                           (self.db, self.state))

    def test_database_removed_after_crash(self):
        """After a crash the WAL holds the last commits: eddy.db removed or
        emptied beside it is refused (SQLite would delete the WAL), also in
        a state whose LOCK has no mark (an older eddy's)."""
        self.crashed_state()
        wal = self.db + "-wal"
        self.assertGreater(os.path.getsize(wal), 0)
        with open(os.path.join(self.state, "LOCK"), "w"):
            pass  # as an older eddy left it
        os.remove(self.db)
        self.refused_files("eddy: state database %s is missing, but its write-ahead log %s "
                           "(%d bytes) is there: the state is damaged" %
                           (self.db, wal, os.path.getsize(wal)))
        open(self.db, "w").close()
        self.refused_files("eddy: state database %s is empty (0 bytes), but its write-ahead log"
                           % self.db)

    def test_wal_removed_after_crash(self):
        """After a crash, eddy.db-wal removed (or cut short) while its index
        eddy.db-shm says that it held frames not yet in eddy.db: refused with
        what is missing, rather than "database corrupted" or a state as it
        was at the last checkpoint."""
        self.crashed_state()
        wal = self.db + "-wal"
        shutil.copy(wal, self.path("wal"))
        with open(wal, "r+b") as f:
            f.truncate(1000)
        self.refused_files("eddy: %s is cut short (1000 bytes), but %s-shm says that it holds "
                           % (wal, self.db), "of them not yet copied into %s: the state is "
                           "damaged (was the write-ahead log removed or cut after eddy was "
                           "killed?); put %s back, or remove the directory %s" %
                           (self.db, wal, self.state))
        os.remove(wal)
        self.refused_files("eddy: %s is missing, but %s-shm says that it holds " % (wal, self.db))
        shutil.copy(self.path("wal"), wal)  # put back, the state resumes
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(sorted(o["seq"] for o in read_jsonl(self.out)), [1, 2])

    def lock_synced(self):
        """The count of LOCK's second line: the commits made durable."""
        with open(os.path.join(self.state, "LOCK"), "rb") as f:
            data = f.read()
        m = re.fullmatch(rb"eddy state: eddy\.db holds it; do not remove eddy\.db alone\n"
                         rb"synced (\d{20})\n", data)
        self.assertIsNotNone(m, data)
        return int(m.group(1))

    def db_commits(self):
        """The count of commits eddy.db holds by itself (read from a copy)."""
        copy = self.path("copy.db")
        shutil.copy(self.db, copy)
        c = sqlite3.connect(copy)
        (v,) = c.execute("SELECT coalesce((SELECT v FROM meta WHERE k = 'commits'), 0)").fetchone()
        c.close()
        os.remove(copy)
        return v

    def lost_commits(self, has, synced):
        lost = synced - has
        return ("eddy: %s holds the state as of its commit %d, but %s/LOCK says that commit %d "
                "was made durable: %d commit%s lost and the state is damaged (were eddy.db-wal "
                "and eddy.db-shm removed after eddy was killed, eddy.db-wal damaged, or eddy.db "
                "replaced by an older copy?); put back what was removed or replaced, or remove "
                "%s/LOCK to go on from eddy.db as it is (the "
                "durable calls of the lost commits run again), or remove the directory %s (or "
                "give another --state directory) to start over\n"
                % (self.db, has, self.state, synced, lost, " is" if lost == 1 else "s are",
                   self.state, self.state))

    def test_wal_and_index_removed_after_crash(self):
        """After a crash, eddy.db-wal and eddy.db-shm both removed: eddy.db
        alone looks like a clean stop's, as the last checkpoint left it.
        LOCK counts the commits made durable and eddy.db those it holds:
        refused, rather than running again the durable calls committed
        since. With LOCK removed, the run goes on from eddy.db as it is (and
        runs them again)."""
        self.finished_state(40)  # stopped cleanly: eddy.db holds every commit
        with open(self.out, "rb") as f:
            out40 = f.read()
        flag = self.path("crash")
        open(flag, "w").close()
        with open(self.inp, "a") as f:
            f.write(json.dumps({"key": "k", "op": "finished_then_crash", "seq": 40,
                                "crash_flag": flag}) + "\n")
            f.write(json.dumps({"key": "k", "seq": 41, "v": 3}) + "\n")
        res = self.run_cmd()
        self.assertEqual(res.returncode, 137, res.stderr)
        synced = self.lock_synced()
        os.remove(self.db + "-wal")
        os.remove(self.db + "-shm")
        has = self.db_commits()
        self.assertGreater(has, 0)
        self.assertGreater(synced, has)
        self.refused_files(self.lost_commits(has, synced), inspect_reads=True)
        os.remove(os.path.join(self.state, "LOCK"))
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        with open(self.out, "rb") as f:
            out = f.read()
        self.assertTrue(out.startswith(out40))  # cut back to the checkpoint's length
        self.assertEqual(sorted(o["seq"] for o in read_jsonl(self.out)), list(range(42)))
        with open(self.effects) as f:
            self.assertEqual(f.read().count('"finished_then_crash"'), 2)  # run again, as said
        # LOCK made again; the count went on from eddy.db's.
        self.assertEqual(self.lock_synced(), self.query("SELECT v FROM meta WHERE k = 'commits'"))
        self.assertGreater(self.lock_synced(), has)

    def test_damaged_wal_left_as_it_was(self):
        """After a crash, a frame of the WAL damaged: SQLite reads the WAL up
        to it, and the commits from it on are lost. Refused, with eddy.db,
        the WAL and LOCK as they were (closing the refused database used to
        copy the frames before the damage into eddy.db and delete the WAL,
        the frames past it too), so that the WAL put back resumes; a refused
        plan change on a crashed state keeps its WAL as well."""
        self.crashed_state()
        self.assert_refused(plan="changed")
        with open(self.db + "-wal", "rb") as f:
            wal = f.read()
        with open(self.db + "-shm", "rb") as f:
            frames = struct.unpack("=I", f.read(20)[16:20])[0]  # mxFrame of WalIndexHdr
        page = struct.unpack(">I", wal[8:12])[0]
        self.assertGreater(frames, 2)
        at = 32 + 1 * (24 + page) + 24 + 100  # the data of the second frame
        with open(self.db + "-wal", "r+b") as f:
            f.seek(at)
            f.write(bytes(b ^ 0xFF for b in wal[at:at + 16]))
        self.assertGreater(self.lock_synced(), 0)
        lock = digest(os.path.join(self.state, "LOCK"))
        err = self.assert_refused("eddy.db-wal damaged")
        self.assertIn("but %s/LOCK says that commit %d was made durable" %
                      (self.state, self.lock_synced()), err)
        self.assertEqual(digest(os.path.join(self.state, "LOCK")), lock)
        with open(self.db + "-wal", "r+b") as f:
            f.seek(at)
            f.write(wal[at:at + 16])
        self.assert_resumes_replaying()

    def test_wal_merged_by_sqlite_after_crash(self):
        """After a crash, another SQLite program (Python's sqlite3 here)
        opened the state and closed it: every frame is in eddy.db, and the
        WAL and its index are gone. Not refused: it resumes with no durable
        call run again."""
        self.crashed_state()
        synced = self.lock_synced()
        c = sqlite3.connect(self.db)
        c.execute("SELECT count(*) FROM meta").fetchone()
        c.close()
        self.assertFalse(os.path.exists(self.db + "-wal"))
        self.assertFalse(os.path.exists(self.db + "-shm"))
        self.assertGreaterEqual(self.db_commits(), synced)
        self.assert_resumes_replaying()

    def test_commit_count_of_a_clean_stop(self):
        """A clean stop leaves eddy.db with every commit, and LOCK says as
        many were made durable: the rerun goes on. A state an older eddy
        left (no count in eddy.db, LOCK with its first line alone) goes on
        too, and gets both."""
        self.finished_state(40)
        commits = self.query("SELECT v FROM meta WHERE k = 'commits'")
        self.assertGreater(commits, 0)
        self.assertEqual(self.lock_synced(), commits)
        with open(self.inp, "a") as f:
            f.write(json.dumps({"key": "k1", "seq": 40, "v": 1}) + "\n")
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(len(read_jsonl(self.out)), 41)
        self.assertGreater(self.query("SELECT v FROM meta WHERE k = 'commits'"), commits)
        # As an older eddy left it.
        self.sql("DELETE FROM meta WHERE k = 'commits'")
        with open(os.path.join(self.state, "LOCK"), "r+b") as f:
            f.truncate(len(b"eddy state: eddy.db holds it; do not remove eddy.db alone\n"))
        with open(self.inp, "a") as f:
            f.write(json.dumps({"key": "k2", "seq": 41, "v": 1}) + "\n")
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(len(read_jsonl(self.out)), 42)
        commits = self.query("SELECT v FROM meta WHERE k = 'commits'")
        self.assertGreater(commits, 0)
        self.assertEqual(self.lock_synced(), commits)

    def test_crash_at_creation_starts_afresh(self):
        """What a kill while the first eddy makes the state leaves (the
        directory, LOCK, an empty eddy.db, a database of one page in WAL mode
        with no tables, an empty WAL) holds no commit: the run starts
        afresh, as for a new state; and so it does after a kill -9 at any
        moment of the first run's first milliseconds."""
        write_jsonl(self.inp, [{"key": "k%d" % (i % 3), "seq": i, "v": i} for i in range(20)])

        def make(step):
            shutil.rmtree(self.state, ignore_errors=True)
            os.makedirs(self.state)
            if step >= 1:
                open(os.path.join(self.state, "LOCK"), "w").close()
            if step >= 2:
                open(self.db, "w").close()
            if step == 3:
                c = sqlite3.connect(self.db)
                c.execute("PRAGMA journal_mode=WAL")
                c.close()
            if step == 4:
                open(self.db + "-wal", "w").close()

        for step in range(5):
            with self.subTest(step=step):
                make(step)
                if os.path.exists(self.out):
                    os.remove(self.out)
                res = self.run_cmd()
                self.assertEqual(res.returncode, 0, res.stderr)
                self.assertEqual(res.stderr, b"")
                self.assertEqual(len(read_jsonl(self.out)), 20)
        cmd = [EDDY, "run", DURABLE, "--input", self.inp, "--output", self.out, "--state",
               self.state, "--no-progress", "--quiet"]
        for i in range(12):
            shutil.rmtree(self.state, ignore_errors=True)
            if os.path.exists(self.out):
                os.remove(self.out)
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(i * 0.0015)
            p.kill()
            p.wait()
            res = self.run_cmd()
            self.assertEqual(res.returncode, 0, res.stderr)
            self.assertEqual(len(read_jsonl(self.out)), 20)

    # ------------------------------------------------------------ records

    def test_journal_done_record_garbage(self):
        self.crashed_state()
        self.set_journal_payload(2, "garbage{")
        self.assert_refused(self.db + ": a journal record of the run of key \"k\" does not "
                            "decode; the state is damaged")

    def test_journal_done_record_wrong_shape(self):
        self.crashed_state()
        self.set_journal_payload(2, '{"order":0,"events":{}}')
        self.assert_refused(self.db, "journal record", "does not decode; the state is damaged")

    def test_journal_call_result_garbage(self):
        self.crashed_state()
        self.set_journal_payload(1, '{"v":')
        self.assert_refused(self.db + ": the journaled result of call 0 (effect) of action "
                            "'later' for key \"k\" does not decode; the state is damaged")

    def test_journal_row_garbage(self):
        self.crashed_state()
        c = sqlite3.connect(self.db)
        (rowid, data) = c.execute("SELECT id, data FROM jlog ORDER BY id LIMIT 1").fetchone()
        c.close()
        self.sql("UPDATE jlog SET data = ? WHERE id = ?", data[:len(data) - 3], rowid)
        self.assert_refused(self.db + ": journal row %d does not decode; the state is damaged"
                            % rowid)

    def test_pending_record_garbage(self):
        self.crashed_state()
        self.set_inputs(lambda e: dict(e, record="[1,2") if e["seq"] == 1 else e)
        self.assert_refused(self.db + ": the pending input 1 of key \"k\" does not decode; "
                            "the state is damaged")

    def test_inputs_row_garbage(self):
        self.crashed_state()
        c = sqlite3.connect(self.db)
        (rowid, data) = c.execute("SELECT id, data FROM inputs ORDER BY id LIMIT 1").fetchone()
        c.close()
        self.sql("UPDATE inputs SET data = ? WHERE id = ?", data[:len(data) - 2], rowid)
        self.assert_refused(self.db + ": the row of pending inputs %d does not decode; the state "
                            "is damaged" % rowid)

    def test_outbox_rows_overlap(self):
        """A commit's output lines are one outbox row whose id is the last
        line's: rows whose lines would share ids are refused."""
        self.finished_state(40)
        c = sqlite3.connect(self.db)
        (top,) = c.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()
        c.close()
        self.sql("INSERT INTO outbox(id, line) VALUES (?, ?), (?, ?)", top + 5, b"{}\n{}",
                 top + 6, b"{}\n{}\n{}")
        self.assert_refused(self.db + ": the outbox row %d holds 3 lines, which do not fit "
                            "after the row %d before it; the state is damaged"
                            % (top + 6, top + 5))

    def test_memory_record_garbage(self):
        """A key's memory is read when a run of the key starts (not at start:
        a state may hold millions of keys), and refused there."""
        self.finished_state(40)
        self.sql("UPDATE keys SET stm = 'not json' WHERE key = '\"k3\"'")
        res = self.run_cmd()  # no run of k3: nothing reads its memory
        self.assertEqual(res.returncode, 0, res.stderr)
        with open(self.inp, "a") as f:
            f.write(json.dumps({"key": "k3", "seq": 40, "v": 1}) + "\n")
        self.assert_refused(self.db + ": the short-term memory of key \"k3\" does not decode; "
                            "the state is damaged")

    def test_memory_read_fails(self):
        """A store failure reading a key's memory (a page of the keys table
        that does not read) stops eddy with a message naming the key, exit 3,
        and nothing written."""
        write_jsonl(self.inp, [{"key": "k%d" % i, "seq": i, "v": i} for i in range(2000)])
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        c = sqlite3.connect(self.db)
        (last,) = c.execute("SELECT max(key) FROM keys").fetchone()
        (page,) = c.execute("PRAGMA page_size").fetchone()
        # The last leaf page of the table holds the greatest key; the first
        # one, which the start reads, stays intact.
        (leaf,) = c.execute("SELECT pageno FROM dbstat WHERE name = 'keys' AND pagetype = 'leaf' "
                            "ORDER BY path DESC LIMIT 1").fetchone()
        (leaves,) = c.execute("SELECT count(*) FROM dbstat WHERE name = 'keys' "
                              "AND pagetype = 'leaf'").fetchone()
        c.close()
        self.assertGreater(leaves, 2)
        with open(self.db, "r+b") as f:
            f.seek((leaf - 1) * page)
            f.write(b"\xde\xad\xbe\xef" * (page // 4))
        with open(self.inp, "a") as f:
            f.write(json.dumps({"key": json.loads(last), "seq": 2000, "v": 1}) + "\n")
        self.assert_refused("eddy: state store failure while reading the short-term memory of "
                            "key %s: reading a key failed on %s: database corrupted"
                            % (last, self.db))

    def test_damaged_meta_values(self):
        """Every meta value eddy reads is checked when the state opens: one of
        the wrong type or out of range is refused (exit 3), by a run and by
        eddy inspect, naming the entry and the value found, rather than used
        (a sink_offset of -10 lost committed lines; a NULL source_offset
        read the whole input again)."""
        self.finished_state(40)
        with open(self.out, "rb") as f:
            out_before = f.read()
        cases = [
            ("sink_offset", -10, "the meta entry sink_offset holds -10, not a byte offset (an "
             "integer, 0 or more)"),
            ("source_offset", None, "the meta entry source_offset holds NULL, not a byte offset"),
            ("source_offset", -5, "the meta entry source_offset holds -5, not a byte offset"),
            ("outbox_next", -5, "the meta entry outbox_next holds -5, not an outbox id (an "
             "integer, 1 or more)"),
            ("next_run", "7", "the meta entry next_run holds '7', not a run number"),
            ("format_version", "abc", "the meta entry format_version holds 'abc', not a format "
             "version (an integer, 1 or more)"),
            ("format_version", -1, "the meta entry format_version holds -1, not a format version"),
            ("plan", b"\x00\xff", "the meta entry plan holds x'00ff' (a blob), not a plan "
             "fingerprint"),
            ("key_field_name", 3, "the meta entry key_field_name holds 3, not text"),
        ]
        c = sqlite3.connect(self.db)
        keep = c.execute("SELECT k, v FROM meta").fetchall()
        c.close()
        for k, v, want in cases:
            with self.subTest(k=k, v=v):
                self.sql("UPDATE meta SET v = ? WHERE k = ?", v, k)
                try:
                    err = self.assert_refused("eddy: %s: " % self.db, want,
                                              "; the state is damaged\n")
                    res = subprocess.run([EDDY, "inspect", "--state", self.state],
                                         capture_output=True, timeout=60)
                    self.assertEqual(res.returncode, 3, res.stderr)
                    self.assertEqual(res.stderr.decode(), err)
                    self.assertEqual(res.stdout, b"")
                finally:
                    self.sql("UPDATE meta SET v = ? WHERE k = ?", dict(keep)[k], k)
        with open(self.out, "rb") as f:
            self.assertEqual(f.read(), out_before, "a refused run changed the output")
        res = self.run_cmd()  # put back, the state resumes
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(len(read_jsonl(self.out)), 40)

    def test_damaged_row_values(self):
        """Values of the other tables of the wrong type: a pending row that
        is not bytes is refused at start; a key's run counter that is not a
        number, when the key's memory is read."""
        self.crashed_state()
        self.sql("INSERT INTO inputs(id, data) VALUES (999, 12)")
        self.assert_refused("eddy: %s: the row 999 of the inputs table holds 12, not bytes; the "
                            "state is damaged\n" % self.db)
        self.sql("DELETE FROM inputs WHERE id = 999")
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        self.sql("UPDATE keys SET next_seq = -3 WHERE key = '\"k\"'")
        with open(self.inp, "a") as f:
            f.write(json.dumps({"key": "k", "seq": 3, "v": 1}) + "\n")
        self.assert_refused("eddy: %s: the row of key \"k\" in the keys table holds -3 as its run "
                            "counter, not an integer of 0 or more; the state is damaged\n"
                            % self.db)

    def test_intact_state_still_resumes(self):
        """The control: the same crashed state, untouched, resumes."""
        self.crashed_state()
        res = self.run_cmd()
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(sorted(o["seq"] for o in read_jsonl(self.out)), [1, 2])

    def test_format_5_journal_is_read(self):
        """Format 5 wrote its journal entries as 'P' (8-byte integers, 4-byte
        lengths): a state of format 5 with runs in flight resumes from those
        entries, with no durable call run again, and becomes format 7."""
        self.crashed_state()
        c = sqlite3.connect(self.db)
        n = 0
        for rowid, data in c.execute("SELECT id, data FROM jlog").fetchall():
            entries = self.jlog_decode(data)
            for e in entries:
                if e["tag"] == "p":
                    e["tag"] = "P"
                    n += 1
            c.execute("UPDATE jlog SET data = ? WHERE id = ?", (self.jlog_encode(entries), rowid))
        c.execute("UPDATE meta SET v = 5 WHERE k = 'format_version'")
        c.commit()
        c.close()
        self.assertGreaterEqual(n, 3)  # two calls and a finished action
        self.assert_resumes_replaying()
        self.assertEqual(self.query("SELECT v FROM meta WHERE k = 'format_version'"), 7)

    def test_format_6_state_resumes(self):
        """Format 7 added the record of a run's failure (--on-error skip) to
        the journal, which a state of format 6 cannot hold: a state of format
        6 with runs in flight resumes as it is, with no durable call run
        again, and becomes format 7 (an older eddy then refuses it)."""
        self.crashed_state()
        self.sql("UPDATE meta SET v = 6 WHERE k = 'format_version'")
        self.assert_resumes_replaying()
        self.assertEqual(self.query("SELECT v FROM meta WHERE k = 'format_version'"), 7)


if __name__ == "__main__":
    unittest.main(verbosity=2)
