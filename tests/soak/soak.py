"""Soak: run eddy on a long input generated on the fly (a pipe into stdin),
with async and durable calls and --state, sample its resident memory and
open file descriptors every second from /proc, and check that they stop
growing after warm-up: the peak of the second half of the samples (after the
warm-up) within TOLERANCE of the peak of the first half.

  soak.py --inputs 5000000 --keys 50000 [--tolerance 0.10] [--warmup 0.2]
          [--key-cache N]

With --key-cache N smaller than --keys, most runs find their key let go and
read its memory back from the state: memory must stay flat through that too.

Prints the samples' summary; exit 1 when memory or descriptors grew, or eddy
failed, or not every input gave its output."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

EDDY = os.environ.get("EDDY_BIN", "build/eddy")
AGENTS = os.environ.get("EDDY_TEST_AGENTS", "build/tests/agents")


def feed(pipe, n, keys):
    try:
        batch = []
        for i in range(n):
            batch.append('{"key":"k%d","seq":%d,"v":%d}\n' % (i * 7919 % keys, i, i % 1000))
            if len(batch) == 4096:
                pipe.write("".join(batch).encode())
                batch = []
        pipe.write("".join(batch).encode())
    except BrokenPipeError:
        pass
    finally:
        try:
            pipe.close()
        except BrokenPipeError:
            pass


def sample(pid):
    rss = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    fds = len(os.listdir("/proc/%d/fd" % pid))
    return rss, fds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", type=int, default=5000000)
    ap.add_argument("--keys", type=int, default=50000)
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--warmup", type=float, default=0.2, help="fraction of samples skipped")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--key-cache", type=int, default=None, help="eddy's --key-cache")
    a = ap.parse_args()

    d = tempfile.mkdtemp(prefix="eddy-soak-")
    out = os.path.join(d, "out.jsonl")
    cmd = [EDDY, "run", os.path.join(AGENTS, "durable_agent.so"), "--input", "-", "--output", out,
           "--state", os.path.join(d, "state"), "--no-progress", "--async-threads", "4"]
    if a.key_cache is not None:
        cmd += ["--key-cache", str(a.key_cache)]
    t0 = time.time()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    feeder = threading.Thread(target=feed, args=(p.stdin, a.inputs, a.keys), daemon=True)
    feeder.start()
    samples = []
    while p.poll() is None:
        try:
            samples.append((time.time() - t0,) + sample(p.pid))
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(a.interval)
    err = p.stderr.read().decode(errors="replace")
    p.wait()
    elapsed = time.time() - t0
    n_out = 0
    with open(out, "rb") as f:
        for _ in f:
            n_out += 1
    subprocess.run(["rm", "-rf", d])

    ok = p.returncode == 0 and n_out == a.inputs
    if not ok:
        print("eddy exit %d, %d outputs of %d inputs\n%s" % (p.returncode, n_out, a.inputs, err))
    body = samples[int(len(samples) * a.warmup):]
    if len(body) < 4:
        print("too few samples (%d) after warm-up: make the run longer" % len(body))
        return 1
    half = len(body) // 2
    first, second = body[:half], body[half:]
    rss1, rss2 = max(s[1] for s in first), max(s[1] for s in second)
    fd1, fd2 = max(s[2] for s in first), max(s[2] for s in second)
    report = {
        "inputs": a.inputs, "keys": a.keys, "key_cache": a.key_cache,
        "seconds": round(elapsed, 1),
        "inputs_per_s": round(a.inputs / elapsed), "samples": len(samples),
        "rss_kb_peak": max(s[1] for s in samples), "rss_kb_first_half": rss1,
        "rss_kb_second_half": rss2, "rss_growth": round(rss2 / rss1 - 1, 4),
        "fds_first_half": fd1, "fds_second_half": fd2,
    }
    print("soak: " + json.dumps(report))
    if rss2 > rss1 * (1 + a.tolerance):
        print("resident memory grew: %d kB -> %d kB (tolerance %.0f%%)"
              % (rss1, rss2, a.tolerance * 100))
        ok = False
    if fd2 > fd1:
        print("open file descriptors grew: %d -> %d" % (fd1, fd2))
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
