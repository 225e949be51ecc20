"""One short end-to-end run under valgrind memcheck, with zero errors: the
durable agent with --state (async and durable calls, group commit, recovery
path on a second run) and the test agent in memory (chained and parallel
async calls, fan-out, memory). Coroutine stacks are registered with valgrind
(src/exec/coro.c, VALGRIND_STACK_REGISTER). Run by ctest (label "valgrind")
in the normal build only: valgrind and the sanitizers do not mix."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

EDDY = os.environ["EDDY_BIN"]
AGENTS = os.environ["EDDY_TEST_AGENTS"]
VG = ["valgrind", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite",
      "--track-fds=no", "-q"]


def run(args, what):
    p = subprocess.run(VG + [EDDY, "run"] + args + ["--no-progress", "--quiet"],
                       capture_output=True, timeout=600)
    err = p.stderr.decode(errors="replace")
    if p.returncode != 0 or "==" in err:
        sys.exit("%s: exit %d under valgrind:\n%s" % (what, p.returncode, err))
    print("%s: clean" % what)


def main():
    d = tempfile.mkdtemp(prefix="eddy-vg-")
    try:
        inp = os.path.join(d, "in.jsonl")
        with open(inp, "w") as f:
            for i in range(150):
                f.write(json.dumps({"key": "k%d" % (i % 12), "seq": i, "v": i, "ms": 1}) + "\n")
            f.write("not json\n")
        durable = [os.path.join(AGENTS, "durable_agent.so"), "--input", inp, "--output",
                   os.path.join(d, "out.jsonl"), "--state", os.path.join(d, "state"),
                   "--async-threads", "3"]
        run(durable, "durable run")
        with open(inp, "a") as f:
            for i in range(150, 200):
                f.write(json.dumps({"key": "k%d" % (i % 12), "seq": i, "v": i}) + "\n")
        run(durable, "durable resume")

        inp2 = os.path.join(d, "in2.jsonl")
        ops = ["chain", "chain_async", "many", "fanout", "count", "memory", "echo"]
        with open(inp2, "w") as f:
            for i in range(140):
                f.write(json.dumps({"key": "u%d" % (i % 9), "seq": i, "x": i, "n": 3, "ms": 1,
                                    "op": ops[i % len(ops)]}) + "\n")
        run([os.path.join(AGENTS, "testagent.so"), "--input", inp2, "--output",
             os.path.join(d, "out2.jsonl"), "--async-threads", "2"], "in-memory run")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
