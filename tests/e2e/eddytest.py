"""Helpers shared by the end-to-end tests: run the eddy binary on real files."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

EDDY = os.environ.get("EDDY_BIN", "build/eddy")
AGENTS = os.environ.get("EDDY_TEST_AGENTS", "build/tests/agents")
EXAMPLES = os.environ.get("EDDY_EXAMPLES", "build/examples")
SOURCE = os.environ.get("EDDY_SOURCE_DIR", ".")
SANITIZED = bool(os.environ.get("EDDY_SANITIZE"))
TEST_AGENT = os.path.join(AGENTS, "testagent.so")


def runs_python_agents():
    """Whether EDDY runs Python agents, as the binary itself says: the second
    line of `eddy --version` is "Python agents: yes", or "Python agents: no
    (...)" in an eddy built without Python. Only a "no" counts as no: a binary
    that cannot be run, or that says neither, leaves the Python tests to run
    (and fail), never skipped for nothing."""
    try:
        proc = subprocess.run([EDDY, "--version"], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return True
    return not any(line.startswith(b"Python agents: no") for line in proc.stdout.splitlines())


PYTHON = runs_python_agents()
# For a test (or a class of them) that runs a Python agent.
needs_python = unittest.skipUnless(PYTHON, "this eddy was built without Python (eddy --version "
                                   "says so): it cannot run Python agents")
# For a test of what an eddy built without Python does.
without_python = unittest.skipIf(PYTHON, "this eddy runs Python agents")


class Result:
    def __init__(self, proc, out_path, dead_path):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.out_path = out_path
        self.dead_path = dead_path

    def outputs(self):
        return read_jsonl(self.out_path)

    def dead(self):
        if not os.path.exists(self.dead_path):
            return []
        return read_jsonl(self.dead_path)


def read_jsonl(path):
    with open(path, "rb") as f:
        return [json.loads(line) for line in f if line.strip()]


def lines_written(path):
    """Whole lines in path so far (0 when it does not exist): for polling a
    file eddy is writing, whose last line may be half written."""
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def write_jsonl(path, records):
    with open(path, "w") as f:
        for r in records:
            f.write(r if isinstance(r, str) else json.dumps(r))
            f.write("\n")


class EddyTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="eddy-e2e-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def run_eddy(self, records, *args, agent=TEST_AGENT, timeout=300, name="in.jsonl",
                 extra_env=None, input_text=None):
        inp = self.path(name)
        if input_text is not None:
            with open(inp, "wb") as f:
                f.write(input_text)
        else:
            write_jsonl(inp, records)
        out = self.path("out.jsonl")
        cmd = [EDDY, "run", agent, "--input", inp, "--output", out, "--no-progress"]
        cmd += list(args)
        env = dict(os.environ)
        if extra_env:
            env.update(extra_env)
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env)
        return Result(proc, out, out + ".dead.jsonl")

    def assertOk(self, res):
        self.assertEqual(res.rc, 0, "eddy failed: %s" % res.stderr.decode(errors="replace"))
