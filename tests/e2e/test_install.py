"""make install gives a library, header, pkg-config file and binary that build
and run the README's agent."""
import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from eddytest import EDDY, SOURCE, EddyTest  # noqa: E402

BUILD_DIR = os.path.dirname(EDDY)


class InstallTest(EddyTest):
    def test_install_and_build_the_readme_agent(self):
        prefix = self.path("prefix")
        inst = subprocess.run(["cmake", "--install", BUILD_DIR, "--prefix", prefix],
                              capture_output=True, timeout=120)
        self.assertEqual(inst.returncode, 0, inst.stderr)
        libdir = os.path.dirname(
            next(os.path.join(d, f) for d, _, fs in os.walk(prefix) for f in fs
                 if f == "eddy.pc"))
        env = dict(os.environ, PKG_CONFIG_PATH=libdir)
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "eddy"], env=env,
                               capture_output=True, text=True, timeout=30)
        self.assertEqual(flags.returncode, 0, flags.stderr)
        incs = [os.path.realpath(f[2:]) for f in flags.stdout.split() if f.startswith("-I")]
        self.assertIn(os.path.realpath(os.path.join(prefix, "include")), incs)

        with open(os.path.join(SOURCE, "README.md")) as f:
            code = re.findall(r"```c\n(.*?)```", f.read(), re.S)[0]
        src = self.path("greet.c")
        with open(src, "w") as f:
            f.write(code)
        so = self.path("greet.so")
        cc = subprocess.run(["cc", "-shared", "-fPIC", src, "-o", so] + flags.stdout.split(),
                            capture_output=True, timeout=120)
        self.assertEqual(cc.returncode, 0, cc.stderr)

        eddy = os.path.join(prefix, "bin", "eddy")
        # The installed binary finds its library relative to itself.
        run = subprocess.run([eddy, "run", so, "--quiet"],
                             input=b'{"key":"u1","name":"ada"}\n{"key":"u1","name":"grace"}\n',
                             capture_output=True, timeout=60)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stdout.decode().splitlines(),
                         ['{"name":"ada","length":3,"visits":1}',
                          '{"name":"grace","length":5,"visits":2}'])


    def test_readme_python_agent(self):
        with open(os.path.join(SOURCE, "README.md")) as f:
            code = re.findall(r"```python\n(.*?)```", f.read(), re.S)[0]
        agent = self.path("readme_agent.py")
        with open(agent, "w") as f:
            f.write(code)
        run = subprocess.run([EDDY, "run", agent, "--quiet"],
                             input=b'{"key":"p1","id":"r1","review":"good"}\n'
                                   b'{"key":"p1","id":"r2","review":"bad stuff"}\n',
                             capture_output=True, timeout=60)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stdout.decode().splitlines(),
                         ['{"id":"r1","score":5}', '{"id":"r2","score":5}'])


if __name__ == "__main__":
    unittest.main(verbosity=2)
