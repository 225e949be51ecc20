"""make install gives a library, header, pkg-config file and binary that build
and run the README's agent, and programs that embed libeddy, shared or
static, as the README says to build them."""
import os
import re
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from eddytest import EDDY, PYTHON, SOURCE, EddyTest, needs_python  # noqa: E402

BUILD_DIR = os.path.dirname(EDDY)
# A program linked with a sanitized libeddy needs the sanitizer's runtime.
SAN_FLAGS = {"address": ["-fsanitize=address,undefined"],
             "thread": ["-fsanitize=thread"]}.get(os.environ.get("EDDY_SANITIZE", ""), [])

# A program that embeds libeddy: it runs the agent named by its argument (a
# .py file or a C shared object), or without one an action of its own, over
# stdin, its outputs to stdout.
EMBEDDER = r"""
#include <eddy/eddy.h>
#include <stdio.h>
#include <string.h>

static int echo(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    json_t *in = json_object_get(eddy_event_attrs(ev), "input");
    return eddy_ctx_send_output(ctx, json_pack("{s:O}", "name", json_object_get(in, "name")));
}

int main(int argc, char **argv)
{
    static const char *const on[] = {EDDY_INPUT_EVENT, NULL};
    eddy_error *err = NULL;
    eddy_plan *plan = eddy_plan_new();
    eddy_config *conf = eddy_config_new();
    eddy_runtime *rt = NULL;
    size_t n = argc > 1 ? strlen(argv[1]) : 0;
    int rc;
    if (plan == NULL || conf == NULL)
        rc = EDDY_ENOMEM;
    else if (argc < 2)
        rc = eddy_plan_add_action(plan, "echo", on, echo, NULL);
    else if (n > 3 && strcmp(argv[1] + n - 3, ".py") == 0)
        rc = eddy_plan_load_python(plan, argv[1], NULL, &err);
    else
        rc = eddy_plan_load_shared(plan, argv[1], &err);
    if (rc == EDDY_OK && (rt = eddy_runtime_new(plan, conf, &err)) == NULL)
        rc = EDDY_EINVAL;
    if (rt != NULL) {
        plan = NULL; /* the runtime's */
        rc = eddy_runtime_run(rt);
        if (rc != EDDY_OK && eddy_runtime_error(rt) != NULL)
            fprintf(stderr, "%s\n", eddy_error_message(eddy_runtime_error(rt)));
    }
    if (err != NULL)
        fprintf(stderr, "%s\n", eddy_error_message(err));
    else if (rc != EDDY_OK)
        fprintf(stderr, "%s\n", eddy_strerror(rc));
    eddy_error_free(err);
    eddy_runtime_free(rt);
    eddy_plan_free(plan);
    eddy_config_free(conf);
    return rc == EDDY_OK ? 0 : 1;
}
"""


def readme_python_agent():
    with open(os.path.join(SOURCE, "README.md")) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)[0]


class InstallTest(EddyTest):
    def install(self):
        """Install into a new prefix; the prefix and pkg-config's environment."""
        prefix = self.path("prefix")
        inst = subprocess.run(["cmake", "--install", BUILD_DIR, "--prefix", prefix],
                              capture_output=True, timeout=120)
        self.assertEqual(inst.returncode, 0, inst.stderr)
        pcdir = os.path.dirname(
            next(os.path.join(d, f) for d, _, fs in os.walk(prefix) for f in fs
                 if f == "eddy.pc"))
        return prefix, dict(os.environ, PKG_CONFIG_PATH=pcdir)

    def pkg_config(self, env, *args):
        res = subprocess.run(["pkg-config"] + list(args) + ["eddy"], env=env,
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(res.returncode, 0, res.stderr)
        return res.stdout.split()

    def cc(self, args):
        res = subprocess.run(["cc"] + args, capture_output=True, text=True, timeout=120)
        self.assertEqual(res.returncode, 0, " ".join(args) + "\n" + res.stderr)

    def embedder(self, name):
        src = self.path(name + ".c")
        with open(src, "w") as f:
            f.write(EMBEDDER)
        return src, self.path(name)

    def run_embedder(self, prog, *args, agent_input=b'{"key":"u1","name":"ada"}\n'):
        return subprocess.run([prog] + list(args), input=agent_input, capture_output=True,
                              timeout=60)

    def readme_agent(self, env):
        """The README's C agent, built as it says: without -leddy (and
        with the warnings a careful user turns on)."""
        with open(os.path.join(SOURCE, "README.md")) as f:
            code = re.findall(r"```c\n(.*?)```", f.read(), re.S)[0]
        src = self.path("greet.c")
        with open(src, "w") as f:
            f.write(code)
        so = self.path("greet.so")
        jansson = subprocess.run(["pkg-config", "--libs", "jansson"], capture_output=True,
                                 text=True, timeout=30)
        self.assertEqual(jansson.returncode, 0, jansson.stderr)
        self.cc(["-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", src, "-o", so]
                + self.pkg_config(env, "--cflags") + jansson.stdout.split())
        return so

    def test_install_and_build_the_readme_agent(self):
        prefix, env = self.install()
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "eddy"], env=env,
                               capture_output=True, text=True, timeout=30)
        self.assertEqual(flags.returncode, 0, flags.stderr)
        incs = [os.path.realpath(f[2:]) for f in flags.stdout.split() if f.startswith("-I")]
        self.assertIn(os.path.realpath(os.path.join(prefix, "include")), incs)

        so = self.readme_agent(env)
        eddy = os.path.join(prefix, "bin", "eddy")
        # The installed binary finds its library relative to itself.
        run = subprocess.run([eddy, "run", so, "--quiet"],
                             input=b'{"key":"u1","name":"ada"}\n{"key":"u1","name":"grace"}\n',
                             capture_output=True, timeout=60)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stdout.decode().splitlines(),
                         ['{"name":"ada","length":3,"visits":1}',
                          '{"name":"grace","length":5,"visits":2}'])


    def test_shared_embedder(self):
        # Linked with libeddy.so, found through the rpath the README gives
        # (the prefix is no system directory), it runs the README's agent,
        # built without -leddy, on its own copy of libeddy.
        _, env = self.install()
        src, prog = self.embedder("embed_shared")
        libdir = self.pkg_config(env, "--variable=libdir")[0]
        self.cc(["-Wall", "-Wextra", "-Werror", src, "-o", prog, "-Wl,-rpath," + libdir]
                + self.pkg_config(env, "--cflags", "--libs") + SAN_FLAGS)
        run = self.run_embedder(prog, self.readme_agent(env))
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stdout.decode().splitlines(),
                         ['{"name":"ada","length":3,"visits":1}'])

    def test_multiarch_libdir(self):
        # eddy.pc as a build configured for Debian's /usr gets it (libdir
        # lib/x86_64-linux-gnu, three levels below the prefix), laid out
        # with the installed files in a tree of that shape elsewhere: the
        # paths it gives are that tree's, and a program builds with them.
        _, installed = self.install()
        inst_lib = os.path.dirname(installed["PKG_CONFIG_PATH"])
        inst_inc = self.pkg_config(installed, "--variable=includedir")[0]
        build = self.path("multiarch-build")
        cfg = subprocess.run(["cmake", "-S", SOURCE, "-B", build, "-DEDDY_TESTS=OFF",
                              "-DEDDY_WITH_PYTHON=OFF", "-DCMAKE_INSTALL_PREFIX=/usr",
                              "-DCMAKE_INSTALL_LIBDIR=lib/x86_64-linux-gnu"],
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(cfg.returncode, 0, cfg.stderr)
        tree = self.path("multiarch")
        libdir = os.path.join(tree, "lib", "x86_64-linux-gnu")
        os.makedirs(os.path.join(libdir, "pkgconfig"))
        for f in os.listdir(inst_lib):
            if f.startswith("libeddy.so"):
                shutil.copy2(os.path.join(inst_lib, f), libdir, follow_symlinks=False)
        shutil.copytree(inst_inc, os.path.join(tree, "include"))
        shutil.copy(os.path.join(build, "eddy.pc"), os.path.join(libdir, "pkgconfig"))
        env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(libdir, "pkgconfig"))

        real = os.path.realpath
        self.assertEqual(real(self.pkg_config(env, "--variable=prefix")[0]), real(tree))
        flags = self.pkg_config(env, "--cflags", "--libs")
        self.assertIn(real(os.path.join(tree, "include")),
                      [real(f[2:]) for f in flags if f.startswith("-I")])
        self.assertIn(real(libdir), [real(f[2:]) for f in flags if f.startswith("-L")])
        libdir_var = self.pkg_config(env, "--variable=libdir")[0]
        self.assertEqual(real(libdir_var), real(libdir))
        src, prog = self.embedder("embed_multiarch")
        self.cc([src, "-o", prog, "-Wl,-rpath," + libdir_var] + flags + SAN_FLAGS)
        run = self.run_embedder(prog)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stdout.decode().splitlines(), ['{"name":"ada"}'])

    def test_static_embedder(self):
        # As the README says: pkg-config --static gives what libeddy.a needs
        # (Boost.Context, libpython when built with Python), and -l:libeddy.a
        # takes the archive where -leddy would take the shared library.
        _, env = self.install()
        libs = ["-l:libeddy.a" if f == "-leddy" else f
                for f in self.pkg_config(env, "--static", "--libs")]
        src, prog = self.embedder("embed_static")
        self.cc(["-Wall", "-Wextra", "-Werror", src, "-o", prog]
                + self.pkg_config(env, "--cflags") + libs + SAN_FLAGS)
        needed = subprocess.run(["readelf", "-d", prog], capture_output=True, text=True,
                                timeout=30).stdout
        self.assertNotIn("libeddy", needed)
        run = self.run_embedder(prog)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stdout.decode().splitlines(), ['{"name":"ada"}'])

        # A C agent built without -leddy finds no eddy_* symbols in a
        # static program that exports none: it is refused as it loads,
        # rather than running on a second copy of libeddy.
        so = self.readme_agent(env)
        run = self.run_embedder(prog, so)
        self.assertEqual(run.returncode, 1)
        self.assertIn(b"undefined symbol: eddy_", run.stderr)
        # The README's program that loads C agents: all of libeddy.a,
        # exported.
        whole = []
        for f in libs:
            whole += ["-Wl,--whole-archive", f, "-Wl,--no-whole-archive"] \
                if f == "-l:libeddy.a" else [f]
        src, prog_rd = self.embedder("embed_static_rdynamic")
        self.cc([src, "-o", prog_rd, "-rdynamic"] + self.pkg_config(env, "--cflags") + whole
                + SAN_FLAGS)
        run = self.run_embedder(prog_rd, so)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stdout.decode().splitlines(),
                         ['{"name":"ada","length":3,"visits":1}'])

        # libpython is in eddy.pc's static libraries as eddy was built
        # with Python, and runs the README's Python agent; a libeddy.a
        # built without refuses it, naming the file.
        self.assertEqual(any(f.startswith("-lpython") for f in libs), PYTHON, libs)
        agent = self.path("readme_agent.py")
        with open(agent, "w") as f:
            f.write(readme_python_agent())
        run = self.run_embedder(prog, agent,
                                agent_input=b'{"key":"p1","id":"r1","review":"good"}\n')
        if not PYTHON:
            self.assertEqual(run.returncode, 1, run.stderr)
            self.assertEqual(run.stderr.decode(), "cannot load Python agent %s: this eddy was "
                             "built without Python support\n" % agent)
            return
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stdout.decode().splitlines(), ['{"id":"r1","score":5}'])

    @needs_python
    def test_readme_python_agent(self):
        agent = self.path("readme_agent.py")
        with open(agent, "w") as f:
            f.write(readme_python_agent())
        run = subprocess.run([EDDY, "run", agent, "--quiet"],
                             input=b'{"key":"p1","id":"r1","review":"good"}\n'
                                   b'{"key":"p1","id":"r2","review":"bad stuff"}\n',
                             capture_output=True, timeout=60)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stdout.decode().splitlines(),
                         ['{"id":"r1","score":5}', '{"id":"r2","score":5}'])


if __name__ == "__main__":
    unittest.main(verbosity=2)
