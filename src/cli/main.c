/*
 * eddy: the command-line program.
 *
 * It uses only the public API (eddy.h), like any other program linked with
 * libeddy. The options of `eddy run` are one table, used both to parse the
 * command line and to print `eddy run --help`, so that the two never disagree;
 * options that configure the runtime have the same name as the eddy_config
 * option they set, and the defaults --help shows come from the library itself
 * wherever a plain value can say it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif
#include <time.h>
#include <unistd.h>

#include "eddy/eddy.h"

/*
 * Whether this eddy runs Python agents: EDDY_WITH_PYTHON is defined for all
 * that links libeddy when the library embeds CPython (CMake's option of that
 * name). Without it, a .py AGENT is refused as it loads, and the texts below
 * say so rather than offer Python agents. `eddy --version` says which.
 */
#ifdef EDDY_WITH_PYTHON
#define WITH_PYTHON   1
#define AGENT_KINDS   "a C .so or a Python .py file"
#define PYTHON_AGENTS "Python agents: yes"
#else
#define WITH_PYTHON   0
#define AGENT_KINDS   "a C .so file"
#define PYTHON_AGENTS "Python agents: no (this eddy was built without Python)"
#endif

/* Exit codes, as `eddy run --help` documents them. Interrupted: 128 + signal. */
#define EXIT_OK    0
#define EXIT_FAIL  1 /* an action failed, or input/output failed */
#define EXIT_USAGE 2
#define EXIT_STATE 3

/* Helpers return an exit code, or CONTINUE when the command goes on. */
#define CONTINUE (-1)

#define PROGRESS_INTERVAL_MS 500

/* ---------------------------------------------------------------- options of `eddy run` */

enum opt_kind {
    OPT_CONFIG,      /* sets the eddy_config option of the same name to its value */
    OPT_CONFIG_FLAG, /* sets the eddy_config option of the same name to "true" */
    OPT_AGENT,
    OPT_PROGRESS,
    OPT_NO_PROGRESS,
    OPT_QUIET,
    OPT_HELP,
};

struct run_option {
    const char *name;    /* without the leading "--" */
    const char *metavar; /* what the value looks like; NULL for a flag */
    enum opt_kind kind;
    /* The default as --help shows it; NULL for a config option means the
     * library's own default (eddy_config_get on a new config). */
    const char *shown_default;
    const char *help;
};

static const struct run_option run_options[] = {
    {"input", "PATH", OPT_CONFIG, NULL, "JSONL input, one record per line; - is stdin"},
    {"output", "PATH", OPT_CONFIG, NULL, "JSONL output, one line per OutputEvent; - is stdout"},
    {"dead-letter", "PATH", OPT_CONFIG,
     "OUTPUT.dead.jsonl, or stderr when output is stdout or not a file",
     "where bad input lines (and skipped runs) go; - is stderr"},
    {"key", "FIELD", OPT_CONFIG, NULL, "top-level field of each input record that holds its key"},
    {"async-threads", "N", OPT_CONFIG, "2 x online cores",
     "worker threads for async calls, 1..1024"},
    {"max-in-flight", "N", OPT_CONFIG, NULL,
     "runs in flight (keys with a run going), at most, >= 1"},
    {"max-pending", "N", OPT_CONFIG, NULL,
     "inputs admitted that wait behind their key's run, at most, >= 1"},
    {"max-run-actions", "N", OPT_CONFIG, NULL,
     "action executions one input's run may start (events sent in a cycle), 0: no limit"},
    {"on-error", "stop|skip", OPT_CONFIG, NULL,
     "when an action fails: stop, or dead-letter its run and go on"},
    {"max-line-bytes", "N", OPT_CONFIG, NULL,
     "longest accepted input line in bytes, 1024..1099511627776 (1 TiB)"},
    {"max-depth", "N", OPT_CONFIG, NULL,
     "deepest nesting of arrays/objects in an input line (the record is 1), 1..2047"},
    {"state", "DIR", OPT_CONFIG, "none, state in memory",
     "state directory; the same command resumes after a stop or crash"},
    {"key-cache", "N", OPT_CONFIG, NULL,
     "with --state: idle keys whose memory stays resident, at most; the others' is read "
     "from the state when their next run starts; 0: no bound on the count"},
    {"key-cache-bytes", "N", OPT_CONFIG, NULL,
     "with --state: bytes those keys weigh, at most, each its memory as stored (its JSON) "
     "and 768 for the key; 0: no bound"},
    {"commit-interval-ms", "N", OPT_CONFIG, NULL,
     "longest wait before a group commit of the state, and longest a loop turn runs "
     "actions (1 ms at least), 0..10000"},
    {"strict-determinism", NULL, OPT_CONFIG_FLAG, "off",
     "fail an action whose durable calls differ from its journal"},
    {"retry-failed-calls", NULL, OPT_CONFIG_FLAG, "off",
     "with --state: a durable call whose journaled outcome is an exception runs again when "
     "its unfinished action resumes, instead of raising it again"},
    {"stack-size", "BYTES", OPT_CONFIG, NULL,
     "stack of each C action's coroutine, 16384..67108864"},
    {"agent", "NAME", OPT_AGENT, WITH_PYTHON ? "the file's one Agent subclass" : NULL,
     WITH_PYTHON ? "Python agents only: the Agent subclass to run"
                 : "Python agents only (unavailable: this eddy was built without Python)"},
    {"progress", NULL, OPT_PROGRESS,
     "on when stderr is a terminal, unless dead letters go there too, as with --output -",
     "rewrite one progress line on stderr every 0.5 s"},
    {"no-progress", NULL, OPT_NO_PROGRESS, NULL, "no progress line"},
    {"quiet", NULL, OPT_QUIET, NULL, "no summary line at the end (nor default progress)"},
    {"help", NULL, OPT_HELP, NULL, "show this help"},
};

#define RUN_OPTION_COUNT (sizeof(run_options) / sizeof(run_options[0]))

/* What `eddy run` was asked to do. */
struct run_args {
    eddy_config *conf;       /* the runtime options, set as they are parsed */
    const char *agent_path;  /* AGENT */
    const char *agent_class; /* --agent, or NULL */
    int progress;            /* -1 automatic, 0 off, 1 on */
    int quiet;
    /* The value each option with one was given, by index in run_options:
     * each takes one value, and a second one is refused rather than let
     * silently replace the first. */
    const char *given[RUN_OPTION_COUNT];
};

/* ---------------------------------------------------------------- help texts */

static void print_usage(FILE *out)
{
    fputs("usage: eddy COMMAND [options]\n"
          "\n"
          "Runs event-driven agents over keyed JSONL event streams.\n"
          "\n"
          "commands:\n"
          "  run AGENT [options]    run an agent (" AGENT_KINDS ") over an input\n"
          "  inspect --state DIR [--key K] [--json]\n"
          "                         show what a state directory holds\n"
          "  --version              print the version\n"
          "  help, --help, -h       show this help\n"
          "\n"
          "'eddy run --help' lists the options of run.\n"
#ifndef EDDY_WITH_PYTHON
          "\n"
          "This eddy was built without Python: it runs C agents only, and refuses a\n"
          "Python agent (.py).\n"
#endif
          ,
          out);
}

static void print_run_option(FILE *out, const struct run_option *o, const eddy_config *defaults)
{
    char left[64];
    if (o->metavar != NULL)
        snprintf(left, sizeof(left), "--%s %s", o->name, o->metavar);
    else
        snprintf(left, sizeof(left), "--%s", o->name);

    const char *dflt = o->shown_default;
    if (dflt == NULL && o->kind == OPT_CONFIG && defaults != NULL)
        dflt = eddy_config_get(defaults, o->name);
    if (dflt == NULL)
        fprintf(out, "  %-26s %s\n", left, o->help);
    else
        fprintf(out, "  %-26s %s\n  %-26s (default: %s)\n", left, o->help, "", dflt);
}

static void print_run_help(FILE *out)
{
    fputs("usage: eddy run AGENT [options]\n"
          "\n"
          "Runs AGENT over a keyed JSONL event stream until the input ends. AGENT is a C\n"
#ifdef EDDY_WITH_PYTHON
          "agent shared object (exporting eddy_agent_init) or a Python file (its name\n"
          "ending in .py, in any case) defining an Agent subclass.\n"
#else
          "agent shared object (exporting eddy_agent_init). This eddy was built without\n"
          "Python: a Python agent (a file whose name ends in .py, in any case) is\n"
          "refused (exit 2).\n"
#endif
          "\n"
          "options (--opt VALUE and --opt=VALUE are the same; a VALUE that starts with\n"
          "-- must be given as --opt=VALUE; an option that takes a value takes it once,\n"
          "and is refused when given twice):\n",
          out);
    eddy_config *defaults = eddy_config_new();
    for (size_t i = 0; i < RUN_OPTION_COUNT; i++)
        print_run_option(out, &run_options[i], defaults);
    eddy_config_free(defaults);
    fputs("\n"
          "Delivery: with --output to a file and --state DIR, output is exactly-once: after\n"
          "an interruption or a crash, the same command resumes where it stopped and each\n"
          "input's outputs appear in the file exactly once. Output to stdout is\n"
          "at-least-once: after a resume some outputs may be written again. Without\n"
          "--state, state is kept in memory and lost when eddy stops.\n"
          "\n"
          "What agents print to stdout goes to stderr when the output (or the\n"
          "dead-letter file) is stdout, so that stdout holds only the JSONL lines.\n"
          "\n"
          "Bad input: a line that is not JSON or has no key goes to the dead-letter file\n"
          "as a JSON line with its line number, the reason and the raw text, and\n"
          "processing goes on. With --on-error skip, a failed run goes there too.\n"
          "\n"
          "exit codes:\n"
          "  0        every input was processed\n"
          "  1        an action failed (with --on-error stop), or reading the input or\n"
          "           writing the output failed\n"
          "  2        usage error: a bad option or value, an agent that does not load, or\n"
          "           an input, output or dead-letter file that cannot be opened\n"
          "  3        state store error: the state directory cannot be opened or used, or\n"
          "           another process holds it\n"
          "  129, 130, 143\n"
          "           interrupted by SIGHUP (the terminal closed), SIGINT or SIGTERM\n"
          "           (128 + signal); with --state, run the same command again to resume.\n"
          "           A second SIGINT or SIGTERM ends eddy at once (a second SIGHUP does\n"
          "           not). A signal counts from when the agent starts loading; one that\n"
          "           comes after the run ended (while the state closes) interrupts\n"
          "           nothing: the exit code is the run's, with a note. SIGQUIT dumps core\n"
          "           at once, committing nothing; the state is safe, as after a crash.\n"
          "           eddy keeps these handlers: an agent's own is refused or replaced,\n"
          "           with a warning."
#ifdef EDDY_WITH_PYTHON
          " Once the run has ended and the state is closed,\n"
          "           Python's exit (waiting for a Python agent's threads, its atexit\n"
          "           handlers) that lasts over a second is said in a note, and a signal\n"
          "           then ends eddy at once; the exit code is the run's."
#endif
          "\n",
          out);
}

/* ---------------------------------------------------------------- errors */

static int usage_error(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* "eddy: <message>" and a pointer to the help, on stderr; returns EXIT_USAGE. */
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("eddy: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\ntry 'eddy run --help'\n", stderr);
    va_end(ap);
    return EXIT_USAGE;
}

/* Print err's message, or the text of code when there is none. */
static void print_error(int code, const eddy_error *err)
{
    const char *msg = err != NULL ? eddy_error_message(err) : "";
    fprintf(stderr, "eddy: %s\n", *msg != '\0' ? msg : eddy_strerror(code));
}

static int out_of_memory(void)
{
    fprintf(stderr, "eddy: %s\n", eddy_strerror(EDDY_ENOMEM));
    return EXIT_FAIL;
}

/* ---------------------------------------------------------------- parsing */

static const struct run_option *find_run_option(const char *name, size_t len)
{
    for (size_t i = 0; i < RUN_OPTION_COUNT; i++)
        if (strlen(run_options[i].name) == len && strncmp(run_options[i].name, name, len) == 0)
            return &run_options[i];
    return NULL;
}

/* Apply one option whose value (NULL for a flag) is known. */
static int apply_run_option(struct run_args *a, const struct run_option *o, const char *value)
{
    eddy_error *err = NULL;
    int rc;
    switch (o->kind) {
    case OPT_CONFIG:
    case OPT_CONFIG_FLAG:
        /* The library takes "" for no state directory; on the command line
         * it is an unset variable ($DIR), never a wish to lose the state. */
        if (o->kind == OPT_CONFIG && *value == '\0' && strcmp(o->name, "state") == 0) {
            usage_error("--state needs a directory (an empty value would keep the state in "
                        "memory; leave --state out for that)");
            return EXIT_USAGE;
        }
        /* Likewise "" for the dead-letter file means "follow the output" to
         * the library: on the command line, an unset variable. */
        if (o->kind == OPT_CONFIG && *value == '\0' && strcmp(o->name, "dead-letter") == 0) {
            usage_error("--dead-letter needs a path, or - for stderr (leave it out for the "
                        "default beside the output)");
            return EXIT_USAGE;
        }
        rc = eddy_config_set(a->conf, o->name, o->kind == OPT_CONFIG ? value : "true", &err);
        if (rc == EDDY_ENOMEM) {
            eddy_error_free(err);
            return out_of_memory();
        }
        if (rc != EDDY_OK) {
            usage_error("%s", err != NULL ? eddy_error_message(err) : eddy_strerror(rc));
            eddy_error_free(err);
            return EXIT_USAGE;
        }
        return CONTINUE;
    case OPT_AGENT:
        a->agent_class = value;
        return CONTINUE;
    case OPT_PROGRESS:
        a->progress = 1;
        return CONTINUE;
    case OPT_NO_PROGRESS:
        a->progress = 0;
        return CONTINUE;
    case OPT_QUIET:
        a->quiet = 1;
        return CONTINUE;
    case OPT_HELP:
        print_run_help(stdout);
        return EXIT_OK;
    }
    return CONTINUE;
}

/* Whether a command-line word is an option rather than a value: it starts
 * with "--". Such a value must be given as --name=value. */
static int is_option_like(const char *word)
{
    return strncmp(word, "--", 2) == 0;
}

/* Parse "--name", "--name=value" or "--name value" at argv[*i]. */
static int parse_long_option(struct run_args *a, int argc, char **argv, int *i)
{
    const char *arg = argv[*i] + 2;
    const char *eq = strchr(arg, '=');
    size_t len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
    const struct run_option *o = find_run_option(arg, len);

    if (o == NULL)
        return usage_error("unknown option '--%.*s'", (int)len, arg);
    if (o->metavar == NULL) {
        if (eq != NULL)
            return usage_error("option '--%s' takes no value", o->name);
        return apply_run_option(a, o, NULL);
    }
    const char *value = eq != NULL ? eq + 1 : NULL;
    if (value == NULL) {
        if (*i + 1 >= argc)
            return usage_error("option '--%s' needs a value (%s)", o->name, o->metavar);
        /* "--output --quiet" forgot the value: taking the next option as
         * one would make files named "--quiet". A lone "-" is a value. */
        if (is_option_like(argv[*i + 1]))
            return usage_error("option '--%s' needs a value (%s), not the option '%s' (write "
                               "--%s=%s for a value that starts with --)",
                               o->name, o->metavar, argv[*i + 1], o->name, argv[*i + 1]);
        value = argv[++*i];
    }
    const char **given = &a->given[o - run_options];
    if (*given != NULL)
        return usage_error("option '--%s' given twice, as '%s' and as '%s'; it takes one value",
                           o->name, *given, value);
    *given = value;
    return apply_run_option(a, o, value);
}

/* A Python agent's file: its name ends in .py, in any case (agent.PY). */
static int is_python_path(const char *path)
{
    size_t n = strlen(path);
    return n >= 3 && strcasecmp(path + n - 3, ".py") == 0;
}

static int parse_run_args(struct run_args *a, int argc, char **argv)
{
    int only_positional = 0;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        int code = CONTINUE;
        if (!only_positional && strcmp(arg, "--") == 0) {
            only_positional = 1;
        } else if (!only_positional && strcmp(arg, "-h") == 0) {
            print_run_help(stdout);
            return EXIT_OK;
        } else if (!only_positional && strncmp(arg, "--", 2) == 0) {
            code = parse_long_option(a, argc, argv, &i);
        } else if (!only_positional && arg[0] == '-' && arg[1] != '\0') {
            code = usage_error("unknown option '%s'", arg);
        } else if (a->agent_path == NULL) {
            a->agent_path = arg;
        } else {
            code = usage_error("unexpected argument '%s' (AGENT is '%s')", arg, a->agent_path);
        }
        if (code != CONTINUE)
            return code;
    }
    if (a->agent_path == NULL)
        return usage_error(WITH_PYTHON ? "missing AGENT: a C agent (.so) or a Python agent (.py)"
                                       : "missing AGENT: a C agent (.so)");
    if (a->agent_class != NULL && !is_python_path(a->agent_path))
        return usage_error("option '--agent' applies to Python agents (.py) only");
    return CONTINUE;
}

/* ---------------------------------------------------------------- loading the agent */

/* Whether an action before action i (or type j of action i) listens to type. */
static int type_seen_before(const eddy_plan *plan, size_t i, size_t j, const char *type)
{
    const char *t;
    for (size_t pi = 0; pi <= i; pi++) {
        size_t end = pi < i ? SIZE_MAX : j;
        for (size_t pj = 0; pj < end && (t = eddy_plan_action_event_type(plan, pi, pj)) != NULL;
             pj++)
            if (strcmp(t, type) == 0)
                return 1;
    }
    return 0;
}

/*
 * Inputs reach an agent only as InputEvents: an agent none of whose actions
 * listens to InputEvent would take every input and drop it (counted only as
 * "unhandled events" in the summary), which is a mistyped event type far more
 * often than a wish. The library allows such a plan (a program may load an
 * agent and add the action that listens to InputEvent itself); the command
 * refuses it, naming the types that the actions do listen to.
 */
static int check_input_listener(const eddy_plan *plan, const char *path)
{
    size_t n = eddy_plan_action_count(plan);
    const char *t;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; (t = eddy_plan_action_event_type(plan, i, j)) != NULL; j++)
            if (strcmp(t, EDDY_INPUT_EVENT) == 0)
                return CONTINUE;
    fprintf(stderr,
            "eddy: %s: no action listens to " EDDY_INPUT_EVENT
            ", so every input would be dropped; its actions listen to",
            path);
    /* Each type once: said holds the types named (an agent may list 100,000,
     * which a look through the earlier ones took minutes to tell apart); out
     * of memory, said is NULL and the earlier ones are looked through. */
    const char *sep = " ";
    json_t *said = json_object();
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; (t = eddy_plan_action_event_type(plan, i, j)) != NULL; j++) {
            if (said != NULL ? json_object_get(said, t) != NULL : type_seen_before(plan, i, j, t))
                continue;
            fprintf(stderr, "%s'%s'", sep, t);
            sep = ", ";
            if (said != NULL && json_object_set_new(said, t, json_true()) != 0) {
                json_decref(said);
                said = NULL;
            }
        }
    json_decref(said);
    fputs(" (is an event type misspelt?)\n", stderr);
    return EXIT_USAGE;
}

/* Whether path is a regular file that can be read and is no ELF file (a
 * shared object starts with "\x7fELF"). */
static int not_elf(const char *path)
{
    static const unsigned char elf[4] = {0x7f, 'E', 'L', 'F'};
    unsigned char magic[4];
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC); /* a FIFO: no waiting */
    if (fd < 0)
        return 0;
    struct stat st;
    ssize_t n = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? read(fd, magic, sizeof(magic)) : -1;
    close(fd);
    return n >= 0 && (n < (ssize_t)sizeof(magic) || memcmp(magic, elf, sizeof(elf)) != 0);
}

static int load_agent(eddy_plan *plan, const struct run_args *a)
{
    eddy_error *err = NULL;
    int rc;
    if (is_python_path(a->agent_path)) {
        rc = eddy_plan_load_python(plan, a->agent_path, a->agent_class, &err);
    } else {
        /* A bare "agent.so" means the file here, not a library-path lookup:
         * eddy_plan_load_shared() sees to that. */
        rc = eddy_plan_load_shared(plan, a->agent_path, &err);
    }
    if (rc == EDDY_OK)
        return check_input_listener(plan, a->agent_path);
    /* A file that is no shared object: dlopen's "invalid ELF header" does
     * not say what AGENT may be (a Python agent named without .py, say). */
    if (rc == EDDY_EPLAN && !is_python_path(a->agent_path) && not_elf(a->agent_path)) {
        fprintf(stderr,
                "eddy: cannot load agent %s: it is not a shared object (no ELF header); "
                "AGENT must be a C agent's shared object%s\n",
                a->agent_path,
                WITH_PYTHON ? " or a Python agent's file, whose name ends in .py"
                            : " (this eddy was built without Python: it runs no Python agent)");
        eddy_error_free(err);
        return EXIT_USAGE;
    }
    /* The file or its initialisation is at fault: a usage error. */
    print_error(rc, err);
    eddy_error_free(err);
    return rc == EDDY_ENOMEM ? EXIT_FAIL : EXIT_USAGE;
}

/*
 * eddy_runtime_new() says why it failed only through its error object, whose
 * type is the one thing a program can branch on. A state store failure, a
 * state directory in use by another process, or state that cannot be used is
 * exit 3; an output that cannot be written (the lines an earlier run left
 * unwritten) or memory running out is a failure, exit 1; anything else (a
 * bad option, an input file that does not exist) is the command's fault,
 * exit 2. The type is matched both as the code's symbolic name
 * ("EDDY_ESTORE") and as the short word ("store"), as eddy.h documents for
 * eddy_runtime_new().
 */
static int runtime_new_exit_code(const eddy_error *err)
{
    static const int state_codes[] = {EDDY_ESTORE, EDDY_ESTATE, EDDY_EBUSY};
    static const char *const state_words[] = {"store", "state", "busy"};
    const char *type = eddy_error_type(err);
    for (size_t i = 0; i < sizeof(state_codes) / sizeof(state_codes[0]); i++)
        if (strcmp(type, eddy_err_name(state_codes[i])) == 0 || strcmp(type, state_words[i]) == 0)
            return EXIT_STATE;
    if (strcmp(type, "output") == 0 || strcmp(type, "memory") == 0 || strcmp(type, "nomem") == 0 ||
        strcmp(type, eddy_err_name(EDDY_ENOMEM)) == 0)
        return EXIT_FAIL;
    return EXIT_USAGE;
}

/* ---------------------------------------------------------------- stdio */

/* Which of stdin, stdout and stderr were closed when eddy started. */
static int stdio_closed[3];

/*
 * A closed fd 0, 1 or 2 is given /dev/null: the next descriptor opened
 * (libuv's epoll, the state's database) would take its number otherwise,
 * and the agents' prints, eddy's messages or a library's stray write would
 * land in it (libuv also asserts on closing it). An input or output that
 * names the closed stream is refused (stdio_refused), not read or written
 * as /dev/null.
 */
static void stdio_fill(void)
{
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
            continue;
        stdio_closed[fd] = 1;
        int n = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
        if (n >= 0 && n != fd) { /* not the lowest free number: cannot be */
            dup2(n, fd);
            close(n);
        }
    }
}

/* A usage error when the input, the output or the dead-letter file is a
 * standard stream that was closed; CONTINUE otherwise. */
static int stdio_refused(const struct run_args *a)
{
    const char *in = eddy_config_get(a->conf, "input");
    const char *out = eddy_config_get(a->conf, "output");
    const char *dead = eddy_config_get(a->conf, "dead-letter");
    int out_std = out == NULL || strcmp(out, "-") == 0;
    if (stdio_closed[0] && (in == NULL || strcmp(in, "-") == 0))
        return usage_error("the input is standard input, which is closed; give --input FILE");
    if (stdio_closed[1] && out_std)
        return usage_error("the output is standard output, which is closed; give --output FILE");
    if (stdio_closed[2] && ((dead != NULL && strcmp(dead, "-") == 0) || (dead == NULL && out_std)))
        return usage_error("the dead letters would go to standard error, which is closed; give "
                           "--dead-letter FILE");
    return CONTINUE;
}

/* ---------------------------------------------------------------- stdout */

/*
 * What agents print to stdout (print() in Python, printf in C, what the
 * programs they start write there) would land among the output lines when
 * those go to stdout. Then eddy keeps stdout for its lines and points fd 1
 * at stderr for everything else, from before the agent is loaded. The
 * library opens its files in eddy_runtime_new(), where "-" and a path such
 * as /dev/stdout must still reach the real stdout (the sink writes to its
 * own close-on-exec duplicate of it): fd 1 is given back for that call only.
 */

/* Whether path, as the output (or, with dash_is_stderr, the dead-letter
 * file), is the process's stdout: "-", or the file fd 1 is (/dev/stdout,
 * /dev/fd/1, the file stdout was redirected to); not /dev/null. */
static int is_stdout(const char *path, int dash_is_stderr)
{
    if (path == NULL)
        return 0;
    if (strcmp(path, "-") == 0)
        return !dash_is_stderr;
    struct stat p, o;
    return stat(path, &p) == 0 && fstat(STDOUT_FILENO, &o) == 0 && p.st_dev == o.st_dev &&
           p.st_ino == o.st_ino && (!S_ISCHR(o.st_mode) || isatty(STDOUT_FILENO));
}

/* fd 1 to stderr (to /dev/null when stderr is closed). 0 or -1. */
static int stdout_to_stderr(void)
{
    if (dup2(STDERR_FILENO, STDOUT_FILENO) >= 0)
        return 0;
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    int rc = null >= 0 && dup2(null, STDOUT_FILENO) >= 0 ? 0 : -1;
    if (null >= 0)
        close(null);
    return rc;
}

/* When a's output or dead-letter file is stdout: a close-on-exec duplicate
 * of it, with fd 1 pointed at stderr, and the C library's stdout
 * line-buffered (so that what C agents print comes out in order with
 * eddy's messages). -1 when not, or when stdout is closed. */
static int stdout_keep(const struct run_args *a)
{
    if (!is_stdout(eddy_config_get(a->conf, "output"), 0) &&
        !is_stdout(eddy_config_get(a->conf, "dead-letter"), 1))
        return -1;
    /* A closed fd 1 is left closed: the library may open a file there. */
    int saved = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
    if (saved < 0)
        return -1;
    if (stdout_to_stderr() != 0) {
        close(saved);
        return -1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    return saved;
}

/* ---------------------------------------------------------------- signals */

/* The runtime a signal stops, while it runs (NULL before and after). The
 * handlers are in place from before the agent loads until eddy exits, and
 * may run on any thread: signal_handling counts those using signal_runtime,
 * so that it is not freed under them. */
static _Atomic(eddy_runtime *) signal_runtime;
static atomic_int signal_handling;
/* The flags a handler shares with other threads are atomic (lock-free
 * ints: async-signal-safe), sequentially consistent: see on_signal. */
static atomic_int signal_caught;
/* signal_caught when the run ended (-1 until then): a signal after that
 * stops nothing and changes nothing of the run's outcome. */
static int signal_at_run_end = -1;
/*
 * The Python interpreter's finalisation, once the run has ended and the
 * state is closed (see on_finalize): EXIT_QUIET for its first
 * EXIT_QUIET_MS, a signal being kept for then (exit_signal); EXIT_SAID once
 * a note said that it takes longer, a signal then ending eddy at once with
 * exit_code_at_end, the code it was to exit with.
 */
enum { EXIT_NONE, EXIT_QUIET, EXIT_SAID };
static atomic_int exit_phase;
static atomic_int exit_signal;
static atomic_int exit_code_at_end;
static atomic_int exit_ending; /* one note only when two threads end eddy at once */
/* With a state directory (for what the note of a second signal says). */
static int stop_durable;
/* A progress line on a terminal: a note then begins on a line of its own. */
static atomic_int progress_on_tty;
/* Posted by the first signal that stops the run, for the watchdog of the
 * stop (watch_stop); stop_sem_ready once it is initialised. */
static sem_t stop_sem;
static atomic_int stop_sem_ready;

/* The name of a signal that stops eddy. */
static const char *signal_name(int signo)
{
    switch (signo) {
    case SIGHUP:
        return "SIGHUP";
    case SIGINT:
        return "SIGINT";
    default:
        return "SIGTERM";
    }
}

/* write(2) all of s, as a signal handler may. */
static void write_all(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* The line of a second signal, which ends eddy at once: one write (a line
 * of its own beside the watchdog's note), on a line of its own after a
 * progress line. Async-signal-safe. */
static void say_second_signal(int signo)
{
    static const char *const tail[] = {
        " again: ended before the stop finished (in-memory state was lost)\n",
        " again: ended before the stop finished (the state is safe: run the same command "
        "again to resume)\n"};
    char line[256];
    size_t n = 0;
    const char *parts[] = {atomic_load(&progress_on_tty) ? "\neddy: " : "eddy: ",
                           signal_name(signo), tail[stop_durable != 0]};
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
        for (const char *c = parts[i]; *c != '\0' && n < sizeof(line) - 1; c++)
            line[n++] = *c;
    line[n] = '\0';
    write_all(STDERR_FILENO, line);
}

/*
 * The waits that last as long as another process chooses (see
 * eddy_set_wait_hook, on_wait). An open of a FIFO waits for its other end
 * before anything has run, and no stop reaches it: a signal then ends eddy
 * at once (end_open_wait), with wait_open_line. WAIT_OPEN while one waits,
 * WAIT_OPEN_ENDING once a signal ends eddy. A write to an output whose
 * reader does not read holds the stop: the watchdog's note names it
 * (wait_write, EDDY_WAIT_WRITE_* or 0; its name, and when it began).
 */
enum { WAIT_OPEN_NONE, WAIT_OPEN, WAIT_OPEN_ENDING };
static atomic_int wait_open;
static char wait_open_line[1536];
static atomic_int wait_write;
static _Atomic(const char *) wait_write_name;
static atomic_llong wait_write_ms;

/* ms on CLOCK_MONOTONIC (the watchdogs' clock). */
static long long monotonic_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* A stop asked for by signo while an open of a FIFO waits: nothing has run
 * (the runtime is being made), so nothing is left to stop or commit, and
 * eddy ends now, with the code of a stop. Returns when no open waits. Async-
 * signal-safe. */
static void end_open_wait(int signo)
{
    int waiting = WAIT_OPEN;
    if (atomic_compare_exchange_strong(&wait_open, &waiting, WAIT_OPEN_ENDING)) {
        write_all(STDERR_FILENO, wait_open_line); /* one write: a line of its own */
        _exit(128 + signo);
    }
    if (waiting == WAIT_OPEN_ENDING)
        for (;;)
            pause(); /* the other thread ends eddy */
}

/* The wait hook: marks the waits (on the waiting thread). Keeps errno. */
static void on_wait(int what, const char *name, void *arg)
{
    (void)arg;
    int saved = errno;
    if (what == EDDY_WAIT_OPEN_READ || what == EDDY_WAIT_OPEN_WRITE) {
        int reading = what == EDDY_WAIT_OPEN_READ;
        snprintf(wait_open_line, sizeof(wait_open_line),
                 "eddy: interrupted while waiting to open the FIFO %s for %s (no process had "
                 "opened it for %s); nothing had run%s\n",
                 name, reading ? "reading" : "writing", reading ? "writing" : "reading",
                 stop_durable ? ", the state is safe: run the same command again to resume" : "");
        /* on_signal sets signal_caught, then reads wait_open: with both
         * sequentially consistent, one of the two sees the other, and a
         * stop asked for before the open (as the state opened) ends it too. */
        atomic_store(&wait_open, WAIT_OPEN);
        int signo = atomic_load(&signal_caught);
        if (signo != 0)
            end_open_wait(signo);
    } else if (what == EDDY_WAIT_WRITE_OUTPUT || what == EDDY_WAIT_WRITE_DEAD_LETTER) {
        atomic_store(&wait_write, 0);
        atomic_store(&wait_write_name, name);
        atomic_store(&wait_write_ms, monotonic_ms());
        atomic_store(&wait_write, what);
    } else {
        int waiting = WAIT_OPEN;
        if (!atomic_compare_exchange_strong(&wait_open, &waiting, WAIT_OPEN_NONE) &&
            waiting == WAIT_OPEN_ENDING)
            for (;;)
                pause(); /* a signal handler ends eddy */
        atomic_store(&wait_write, 0);
    }
    errno = saved;
}

/* A signal while Python finished the agent's exit, after the note that it
 * takes long: nothing is left to stop or commit (the state is closed), so
 * eddy ends now, with the code it was to exit with. What had not run of the
 * agent's exit (atexit handlers, the join of its threads or children) is
 * lost. Async-signal-safe. */
static void end_the_exit(int signo)
{
    if (atomic_exchange(&exit_ending, 1) != 0)
        for (;;)
            pause(); /* the other thread ends eddy */
    write_all(STDERR_FILENO, "eddy: note: ");
    write_all(STDERR_FILENO, signal_name(signo));
    write_all(STDERR_FILENO, " ended eddy before Python finished the agent's exit (what had not "
                             "run of it is lost; the exit code is the run's)\n");
    _exit(atomic_load(&exit_code_at_end));
}

/* A signal during the finalisation: kept until the note, then ends eddy. */
static void signal_in_exit(int signo)
{
    int none = 0;
    /* For the note that it came after the run, if eddy ends normally. */
    atomic_compare_exchange_strong(&signal_caught, &none, signo);
    /* The watchdog sets EXIT_SAID, then reads exit_signal: one of the two
     * sees the other (seq_cst), and the signal is not lost. */
    atomic_store(&exit_signal, signo);
    if (atomic_load(&exit_phase) == EXIT_SAID)
        end_the_exit(signo);
}

static void handle_signal(int signo)
{
    if (atomic_load(&exit_phase) != EXIT_NONE) {
        signal_in_exit(signo);
        return;
    }
    /* A hangup comes twice, from the kernel to the terminal's foreground
     * process group and from the shell to its jobs as it exits: a second
     * SIGHUP is no user insisting, and must not kill the stop underway. */
    if (atomic_load(&signal_caught) != 0 && signo == SIGHUP)
        return;
    if (atomic_load(&signal_caught) != 0) {
        /* A second signal: the user insists. End now with the default action;
         * the state store is safe against a kill at any instant. The signal is
         * blocked while this handler runs, so it lands as soon as we return. */
        say_second_signal(signo);
        struct sigaction dfl;
        memset(&dfl, 0, sizeof(dfl));
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        sigaction(signo, &dfl, NULL);
        raise(signo);
        return;
    }
    atomic_store(&signal_caught, signo);
    /* on_finalize sets exit_phase, then reads signal_caught: with both
     * sequentially consistent, one of the two sees the other, and a signal
     * is never lost between the end of the state and the finalisation. */
    if (atomic_load(&exit_phase) != EXIT_NONE) {
        signal_in_exit(signo);
        return;
    }
    /* Waiting to open a FIFO, before anything ran: nothing to stop. */
    if (atomic_load(&wait_open) != WAIT_OPEN_NONE)
        end_open_wait(signo);
    atomic_fetch_add(&signal_handling, 1);
    eddy_runtime_stop(atomic_load(&signal_runtime));
    atomic_fetch_sub(&signal_handling, 1);
    if (atomic_load(&stop_sem_ready))
        sem_post(&stop_sem); /* the watchdog of the stop, while the run runs */
}

/* The interrupted code finds errno as it left it: the handler's write(2),
 * sigaction(2), write to the runtime's async handle and sem_post may set
 * it. */
static void on_signal(int signo)
{
    int saved = errno;
    handle_signal(signo);
    errno = saved;
}

/* No signal stops the runtime from here on; it may be freed on return. */
static void detach_signal_runtime(void)
{
    atomic_store(&signal_runtime, NULL);
    while (atomic_load(&signal_handling) != 0)
        sched_yield(); /* a handler on another thread, about to return */
}

/*
 * The signals eddy handles itself, and what it does with each: SIGINT,
 * SIGTERM and SIGHUP stop it cleanly (a SIGHUP that eddy was started
 * ignoring, under nohup, stays ignored), and SIGPIPE is ignored (a reader of
 * the output that goes away is an I/O error). An agent must not take them
 * over: a handler of its own for SIGTERM made eddy run on to the end,
 * deaf to the stop. A Python agent's signal.signal() for one of them is
 * refused as it is made (on_python_signal); a handler installed otherwise
 * (sigaction(2) in a C agent or an extension module) is found and replaced
 * by eddy's own after the agent loads and after the run (reclaim_signals),
 * and never by polling. Each gets one warning naming the agent.
 */
struct owned_signal {
    int signo;
    const char *name;
    int ignored; /* eddy ignores it rather than handling it */
    int warned;  /* the warning for it was printed */
};

static struct owned_signal owned_signals[] = {
    {SIGINT, "SIGINT", 0, 0},
    {SIGTERM, "SIGTERM", 0, 0},
    {SIGHUP, "SIGHUP", 0, 0},
    {SIGPIPE, "SIGPIPE", 1, 0},
};

#define OWNED_SIGNAL_COUNT (sizeof(owned_signals) / sizeof(owned_signals[0]))

static const char *agent_file; /* AGENT, as the warnings name it */

static struct owned_signal *owned_signal(int signo)
{
    for (size_t i = 0; i < OWNED_SIGNAL_COUNT; i++)
        if (owned_signals[i].signo == signo)
            return &owned_signals[i];
    return NULL;
}

/* What eddy installs for o. */
static struct sigaction owned_action(const struct owned_signal *o)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = o->ignored ? SIG_IGN : on_signal;
    sigemptyset(&sa.sa_mask);
    if (!o->ignored) {
        sigaddset(&sa.sa_mask, SIGINT);
        sigaddset(&sa.sa_mask, SIGTERM);
        sigaddset(&sa.sa_mask, SIGHUP);
        sa.sa_flags = SA_RESTART;
    }
    return sa;
}

/* When a replaced handler was found: as the agent loaded (or as it asked,
 * from Python), after its run, or at the end of an eddy whose run never
 * came (the agent failed to load, the state to open). */
enum { FOUND_AT_LOAD, FOUND_AFTER_RUN, FOUND_AT_END };

/* The warning for an agent that replaced eddy's handling of o, asking for
 * action (EDDY_PYTHON_SIG_*), once. */
static void warn_replaced(struct owned_signal *o, int when, int action)
{
    if (o->warned)
        return;
    o->warned = 1;
    const char *what = !o->ignored          ? "eddy's own handles it%s (stops cleanly)"
                       : o->signo == SIGHUP ? "eddy ignores it%s, as it was started doing (nohup)"
                                            : "eddy ignores it%s (a reader of the output that "
                                              "goes away is an I/O error)";
    const char *did = action == EDDY_PYTHON_SIG_DFL   ? "set %s to its default action"
                      : action == EDDY_PYTHON_SIG_IGN ? "set %s to be ignored"
                                                      : "installed a handler for %s";
    fprintf(stderr, "eddy: warning: %s ", agent_file);
    fprintf(stderr, did, o->name);
    if (when == FOUND_AFTER_RUN)
        fprintf(stderr, " while it ran, in place of eddy's (until now a %s went to the agent's)",
                o->name);
    else if (when == FOUND_AT_END)
        fputs(", in place of eddy's", stderr);
    fputs("; ", stderr);
    fprintf(stderr, what, when != FOUND_AT_LOAD ? " again" : "");
    fputc('\n', stderr);
}

/* Put eddy's handling back on every signal it owns whose handler the agent
 * replaced, with a warning; when as for warn_replaced. */
static void reclaim_signals(int when)
{
    for (size_t i = 0; i < OWNED_SIGNAL_COUNT; i++) {
        struct owned_signal *o = &owned_signals[i];
        struct sigaction cur, want = owned_action(o);
        if (sigaction(o->signo, NULL, &cur) != 0 ||
            ((cur.sa_flags & SA_SIGINFO) == 0 && cur.sa_handler == want.sa_handler))
            continue;
        int action = (cur.sa_flags & SA_SIGINFO) != 0 ? EDDY_PYTHON_SIG_HANDLER
                     : cur.sa_handler == SIG_DFL      ? EDDY_PYTHON_SIG_DFL
                     : cur.sa_handler == SIG_IGN      ? EDDY_PYTHON_SIG_IGN
                                                      : EDDY_PYTHON_SIG_HANDLER;
        if (sigaction(o->signo, &want, NULL) == 0)
            warn_replaced(o, when, action);
    }
}

/* The signals eddy handles that the agent blocked in this thread (Python's
 * signal.pthread_sigmask() at its import, a C agent's init): the threads
 * the run starts inherit the mask, and eddy would be deaf to a stop. They
 * are unblocked, with a warning. Those blocked before the agent loaded
 * (by the program that started eddy: the mask is inherited) are its
 * choice, and stay. Called on the thread that loaded the agent, once it has
 * loaded, with the mask it had before (before_load). */
static void unblock_signals(const sigset_t *before_load)
{
    sigset_t cur, unblock;
    if (pthread_sigmask(SIG_BLOCK, NULL, &cur) != 0)
        return;
    sigemptyset(&unblock);
    for (size_t i = 0; i < OWNED_SIGNAL_COUNT; i++) {
        struct owned_signal *o = &owned_signals[i];
        if (o->ignored || sigismember(&cur, o->signo) != 1 ||
            sigismember(before_load, o->signo) == 1)
            continue;
        sigaddset(&unblock, o->signo);
        fprintf(stderr, "eddy: warning: %s blocked %s; eddy unblocks it (a stop must reach eddy)\n",
                agent_file, o->name);
    }
    pthread_sigmask(SIG_UNBLOCK, &unblock, NULL);
}

/* A Python agent's signal.signal(signo, ...): refused for a signal eddy
 * owns (its handler is never installed), with the warning, unless the
 * agent asks for what eddy does already (SIG_IGN for SIGPIPE): that is
 * kept without a word. */
static int on_python_signal(int signo, int action, void *arg)
{
    (void)arg;
    struct owned_signal *o = owned_signal(signo);
    if (o == NULL)
        return 0;
    if (!(o->ignored && action == EDDY_PYTHON_SIG_IGN))
        warn_replaced(o, FOUND_AT_LOAD, action);
    return 1;
}

static void print_signal_after_run_note(void);

static int run_ran; /* the runtime ran (for the warnings at the end) */

/* A finalisation shorter than this goes unsaid: the idle workers of a
 * ThreadPoolExecutor, say, end as soon as Python's exit asks them to, and a
 * note on every run would be noise. */
#define EXIT_QUIET_MS 1000

/* The watchdog of the finalisation (see on_finalize). */
static pthread_mutex_t exit_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t exit_cond;
static int exit_done;
static pthread_t exit_watchdog;
static int exit_watchdog_started;
/* The threads Python waits for (none when their join is skipped). */
#define EXIT_THREADS_MAX 8
static size_t exit_nthreads; /* of them, those named below (at most the max) */
static size_t exit_nthreads_all;
static char exit_thread_names[EXIT_THREADS_MAX][64];
static long exit_thread_ids[EXIT_THREADS_MAX];

/* Whether the thread of native id id is alive (0 when that cannot be told:
 * the note names only threads known to be alive). On Linux, tgkill(2) with
 * signal 0 asks; a thread id reused within the second is not guarded. */
static int thread_alive(long id)
{
#if defined(__linux__) && defined(SYS_tgkill)
    return id > 0 && syscall(SYS_tgkill, (long)getpid(), id, 0L) == 0;
#else
    (void)id;
    return 0;
#endif
}

/* "a, b, c, ..." into list: the first three of the n names given (named of
 * them), "..." for the rest; cut short with "..." when it does not fit. */
static void name_list(char *list, size_t size, const char *const *names, size_t named, size_t n)
{
    size_t len = 0;
    list[0] = '\0';
    for (size_t i = 0; i < named && i < 3 && len < size; i++) {
        int w = snprintf(list + len, size - len, "%s%s", i > 0 ? ", " : "", names[i]);
        len += w > 0 ? (size_t)w : 0;
    }
    if (n > 3 || named < n)
        len += (size_t)snprintf(list + (len < size ? len : size - 1),
                                size - (len < size ? len : size - 1), "%s...", len > 0 ? ", " : "");
    if (len >= size)
        memcpy(list + size - 4, "...", 4);
}

/* The note, when the finalisation has taken EXIT_QUIET_MS, naming the
 * threads waited for that are still alive then. */
static void say_slow_exit(void)
{
    const char *names[EXIT_THREADS_MAX];
    size_t alive = 0;
    for (size_t i = 0; i < exit_nthreads; i++)
        if (thread_alive(exit_thread_ids[i]))
            names[alive++] = exit_thread_names[i];
    size_t named = alive;
    /* Those past the ones kept are counted as alive: not checked. */
    alive += exit_nthreads_all - exit_nthreads;
    char list[256];
    name_list(list, sizeof(list), names, named, alive);
    char note[512];
    if (alive > 0)
        snprintf(note, sizeof(note),
                 "eddy: note: Python has not finished the agent's exit after %d s: it waits for "
                 "%zu thread%s the agent started (%s) to end; SIGINT or SIGTERM ends eddy now\n",
                 EXIT_QUIET_MS / 1000, alive, alive == 1 ? "" : "s", list);
    else
        snprintf(note, sizeof(note),
                 "eddy: note: Python has not finished the agent's exit after %d s (its atexit "
                 "handlers, the child processes it waits for); SIGINT or SIGTERM ends eddy now\n",
                 EXIT_QUIET_MS / 1000);
    write_all(STDERR_FILENO, note); /* one write: a line of its own */
}

/* until = ms from now, on CLOCK_MONOTONIC (the watchdogs' clock). */
static void deadline_after(struct timespec *until, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, until);
    until->tv_sec += ms / 1000;
    until->tv_nsec += (ms % 1000) * 1000000L;
    if (until->tv_nsec >= 1000000000L) {
        until->tv_sec++;
        until->tv_nsec -= 1000000000L;
    }
}

/* A condition variable whose timed waits count on CLOCK_MONOTONIC. */
static int monotonic_cond_init(pthread_cond_t *cond)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        return -1;
    int rc =
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 && pthread_cond_init(cond, &ca) == 0
            ? 0
            : -1;
    pthread_condattr_destroy(&ca);
    return rc;
}

/* Start a watchdog thread that takes no signal of eddy's: a handler that
 * finds eddy already being ended waits for the thread ending it, which
 * must not be a watchdog (it would never reach _exit). A thread inherits
 * the mask it is created with. 1 when it started. */
static int start_watchdog(pthread_t *t, void *(*fn)(void *))
{
    sigset_t owned, old;
    sigemptyset(&owned);
    for (size_t i = 0; i < OWNED_SIGNAL_COUNT; i++)
        sigaddset(&owned, owned_signals[i].signo);
    /* It waits, formats a line and writes it: a small stack, not the
     * default 8 MiB of address space (which counts against RLIMIT_AS). */
    pthread_attr_t attr;
    int have_attr = pthread_attr_init(&attr) == 0;
    if (have_attr)
        (void)pthread_attr_setstacksize(&attr, 128 * 1024);
    pthread_sigmask(SIG_BLOCK, &owned, &old);
    int started = pthread_create(t, have_attr ? &attr : NULL, fn, NULL) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (have_attr)
        pthread_attr_destroy(&attr);
    return started;
}

/* The watchdog: a timed wait for the end of the finalisation, then the
 * note (a thread of its own: the main thread is in Python's finalisation). */
static void *watch_exit(void *arg)
{
    (void)arg;
    struct timespec until;
    deadline_after(&until, EXIT_QUIET_MS);
    pthread_mutex_lock(&exit_mutex);
    while (!exit_done && pthread_cond_timedwait(&exit_cond, &exit_mutex, &until) != ETIMEDOUT) {
    }
    if (!exit_done) {
        atomic_store(&exit_phase, EXIT_SAID);
        int signo = atomic_load(&exit_signal);
        if (signo != 0)
            end_the_exit(signo); /* it came in the quiet second */
        say_slow_exit();
    }
    pthread_mutex_unlock(&exit_mutex);
    return NULL;
}

/* The finalisation has ended (or never began): the watchdog goes. */
static void end_exit_watch(void)
{
    if (!exit_watchdog_started)
        return;
    pthread_mutex_lock(&exit_mutex);
    exit_done = 1;
    pthread_cond_signal(&exit_cond);
    pthread_mutex_unlock(&exit_mutex);
    pthread_join(exit_watchdog, NULL);
    exit_watchdog_started = 0;
}

/* A stop that waits longer than this for what is in flight is said. */
#define STOP_QUIET_MS 1000

/* The watchdog of the run's stop (see on_signal), while the run runs. */
static pthread_mutex_t stop_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stop_cond;
static int stop_done;
static pthread_t stop_watchdog;
static int stop_watchdog_started;

/* Woken by the signal that stops the run: when the run has not ended
 * STOP_QUIET_MS later (it waits for the calls in flight to return, and for
 * the action running, which may never return; or for a write to an output
 * whose reader does not read), a note says so and how to end eddy at once.
 * Nothing is said of a stop that ends sooner. */
static void *watch_stop(void *arg)
{
    (void)arg;
    while (sem_wait(&stop_sem) != 0 && errno == EINTR) {
    }
    struct timespec until;
    deadline_after(&until, STOP_QUIET_MS);
    pthread_mutex_lock(&stop_mutex);
    while (!stop_done && pthread_cond_timedwait(&stop_cond, &stop_mutex, &until) != ETIMEDOUT) {
    }
    int ended = stop_done;
    /* The note is written unlocked (no I/O under a lock); the run's end
     * joins this thread all the same, so it comes before what follows. */
    pthread_mutex_unlock(&stop_mutex);
    if (!ended) {
        char note[1536], waits[1024];
        /* A write under way for half the wait or more waits on its reader
         * (one that goes on takes a pipe's 64 KiB in far less). */
        int what = atomic_load(&wait_write);
        const char *name = atomic_load(&wait_write_name);
        if (what != 0 && name != NULL &&
            monotonic_ms() - atomic_load(&wait_write_ms) >= STOP_QUIET_MS / 2)
            snprintf(waits, sizeof(waits),
                     "for a write to the %s %s, blocked: a reader that does not read (a pipe, "
                     "FIFO or terminal whose reader never reads holds it for good)",
                     what == EDDY_WAIT_WRITE_DEAD_LETTER ? "dead-letter file" : "output", name);
        else
            snprintf(waits, sizeof(waits),
                     "for the actions running and the calls in flight to finish (an action "
                     "that never returns holds it for good)");
        snprintf(note, sizeof(note),
                 "%seddy: note: %s: the stop has waited %d s %s; a second SIGINT or SIGTERM ends "
                 "eddy now\n",
                 atomic_load(&progress_on_tty) ? "\n" : "",
                 signal_name(atomic_load(&signal_caught)), STOP_QUIET_MS / 1000, waits);
        write_all(STDERR_FILENO, note); /* one write: a line of its own */
    }
    return NULL;
}

static void start_stop_watch(void)
{
    if (sem_init(&stop_sem, 0, 0) != 0)
        return;
    stop_done = 0;
    if (monotonic_cond_init(&stop_cond) == 0)
        stop_watchdog_started = start_watchdog(&stop_watchdog, watch_stop);
    if (stop_watchdog_started)
        atomic_store(&stop_sem_ready, 1);
    else
        sem_destroy(&stop_sem);
}

/* The run has ended: its stop is no longer watched. */
static void end_stop_watch(void)
{
    if (!stop_watchdog_started)
        return;
    atomic_store(&stop_sem_ready, 0);
    pthread_mutex_lock(&stop_mutex);
    stop_done = 1;
    pthread_cond_signal(&stop_cond);
    pthread_mutex_unlock(&stop_mutex);
    sem_post(&stop_sem); /* when no signal came */
    pthread_join(stop_watchdog, NULL);
    stop_watchdog_started = 0;
    pthread_cond_destroy(&stop_cond);
    /* A handler that read stop_sem_ready before it was cleared may post
     * still: the semaphore is not destroyed (eddy exits soon). */
}

/*
 * The interpreter of a Python agent is about to be finalised: the run has
 * ended and the state is closed. Python waits for the n non-daemon threads
 * the agent left, as it does at exit, then runs the atexit handlers (which
 * may wait too: multiprocessing joins its children). eddy does not wait for
 * the threads when a signal came (it stopped the run, or came after it):
 * their join is skipped, and the rest of the finalisation runs. A
 * finalisation that lasts more than EXIT_QUIET_MS is said, by the watchdog,
 * and a SIGINT, SIGTERM or SIGHUP then ends eddy at once (end_the_exit), with
 * the code eddy was to exit with; one in the quiet second does so at its end.
 */
static int on_finalize(size_t n, const char *const *names, const long *ids, void *arg)
{
    (void)arg;
    reclaim_signals(run_ran ? FOUND_AFTER_RUN : FOUND_AT_END); /* a signal must end it */
    fflush(stdout);
    fflush(stderr);
    atomic_store(&exit_phase, EXIT_QUIET);
    int signo = atomic_load(&signal_caught);
    if (signo != 0 && n > 0) {
        char list[256];
        name_list(list, sizeof(list), names, n, n);
        fprintf(stderr,
                "eddy: note: not waiting for %zu thread%s the agent started (%s) to end: %s "
                "came\n",
                n, n == 1 ? "" : "s", list, signal_name(signo));
        fflush(stderr);
    }
    exit_nthreads = 0;
    exit_nthreads_all = signo == 0 ? n : 0;
    for (size_t i = 0; signo == 0 && i < n && i < EXIT_THREADS_MAX; i++) {
        snprintf(exit_thread_names[i], sizeof(exit_thread_names[i]), "%s", names[i]);
        exit_thread_ids[i] = ids[i];
        exit_nthreads++;
    }
    exit_done = 0;
    if (monotonic_cond_init(&exit_cond) == 0)
        exit_watchdog_started = start_watchdog(&exit_watchdog, watch_exit);
    /* Without a watchdog, no note: a signal ends eddy at once. */
    if (!exit_watchdog_started)
        atomic_store(&exit_phase, EXIT_SAID);
    return signo != 0;
}

/* What SIGPIPE was when eddy started, for the processes it forks. */
static struct sigaction sigpipe_at_start;
/* The forking thread's signal mask, while eddy's signals are blocked. */
static _Thread_local sigset_t mask_before_fork;

/* Before a fork: eddy's signals are blocked until the child has its own
 * handlers (a Process.terminate() right after the fork would otherwise find
 * eddy's handler in the child). */
static void block_signals_for_fork(void)
{
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &block, &mask_before_fork);
}

static void unblock_signals_after_fork(void)
{
    pthread_sigmask(SIG_SETMASK, &mask_before_fork, NULL);
}

/* In a child that the agent forks (multiprocessing): eddy's handlers are
 * not the child's. SIGINT and SIGTERM get their default action back (a
 * Process.terminate() ends the child), SIGHUP too unless it was ignored at
 * start (nohup), and SIGPIPE what it was at start; then a signal that came
 * since the fork is delivered. Async-signal-safe. */
static void reset_signals_in_child(void)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGINT, &dfl, NULL);
    sigaction(SIGTERM, &dfl, NULL);
    if (!owned_signal(SIGHUP)->ignored)
        sigaction(SIGHUP, &dfl, NULL);
    sigaction(SIGPIPE, &sigpipe_at_start, NULL);
    unblock_signals_after_fork();
}

/*
 * SIGINT, SIGTERM and SIGHUP (the terminal closed: an ssh session that
 * ends) stop eddy cleanly. A SIGHUP that eddy was started ignoring (nohup)
 * stays ignored. SIGPIPE is ignored: a closed reader of the output must not
 * kill eddy; the sink sees EPIPE and reports it as an I/O error, and the
 * state stays consistent. SIGQUIT keeps its default action, a core dump at
 * once: it is the signal that asks for one, and the state is safe against
 * it as against any crash. agent names the agent in the warnings.
 */
static int install_signal_handlers(const char *agent)
{
    struct sigaction hup;
    agent_file = agent;
    if (sigaction(SIGHUP, NULL, &hup) != 0)
        return -1;
    owned_signal(SIGHUP)->ignored = hup.sa_handler == SIG_IGN;
    if (sigaction(SIGPIPE, NULL, &sigpipe_at_start) != 0 ||
        pthread_atfork(block_signals_for_fork, unblock_signals_after_fork,
                       reset_signals_in_child) != 0)
        return -1;
    for (size_t i = 0; i < OWNED_SIGNAL_COUNT; i++) {
        struct sigaction sa = owned_action(&owned_signals[i]);
        if (sigaction(owned_signals[i].signo, &sa, NULL) != 0)
            return -1;
    }
    eddy_python_set_signal_hook(on_python_signal, NULL);
    eddy_python_set_finalize_hook(on_finalize, NULL);
    eddy_set_wait_hook(on_wait, NULL);
    return 0;
}

/* ---------------------------------------------------------------- progress and summary */

struct progress {
    size_t shown_len; /* length of the line on the terminal; 0 when none */
};

/*
 * The rate of inputs, as both the progress line and the summary say it:
 * inputs accepted per second of the run so far (the summary's figure is the
 * last one), so that the two can be compared. 0 before there is a rate.
 */
static double inputs_per_s(const eddy_stats *st)
{
    return st->inputs > 0 && st->elapsed_s > 0 ? (double)st->inputs / st->elapsed_s : 0;
}

/* Runs on the mailbox thread every PROGRESS_INTERVAL_MS. */
static void on_progress(const eddy_stats *st, void *arg)
{
    struct progress *p = arg;
    char line[256];
    int n = snprintf(line, sizeof(line),
                     "eddy: %" PRIu64 " inputs read, %" PRIu64 " in flight, %" PRIu64
                     " pending, %" PRIu64 " outputs, %.0f inputs/s, %" PRIu64 " dead-lettered",
                     st->inputs, st->runs_in_flight, st->inputs_pending, st->outputs,
                     inputs_per_s(st), st->dead_lettered);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
    /* Pad over the rest of a longer previous line instead of using terminal
     * escapes, so that --progress into a file stays plain text. */
    int pad = p->shown_len > len ? (int)(p->shown_len - len) : 0;
    fprintf(stderr, "\r%s%*s", line, pad, "");
    fflush(stderr);
    p->shown_len = len;
}

static void clear_progress(struct progress *p)
{
    if (p->shown_len == 0)
        return;
    fprintf(stderr, "\r%*s\r", (int)p->shown_len, "");
    p->shown_len = 0;
}

static int progress_wanted(const struct run_args *a)
{
    if (a->progress >= 0)
        return a->progress;
    /* Automatic: only on a terminal, and not when dead letters go to stderr too,
     * where the rewritten line would tear them apart. */
    const char *dead_letter = eddy_config_get(a->conf, "dead-letter");
    return !a->quiet && isatty(STDERR_FILENO) &&
           (dead_letter == NULL || strcmp(dead_letter, "-") != 0);
}

/* The summary names the types of the unhandled events, the first three met
 * and "..." when there were more: a subclass of OutputEvent or a misspelt
 * type is found at a glance. */
#define SUMMARY_UNHANDLED_TYPES 3

/* The plural ending of a count: "1 input", "2 inputs". */
static const char *plural(uint64_t n)
{
    return n == 1 ? "" : "s";
}

/* " (N written from the state)" when n > 0: lines the previous run left. */
static void print_from_state(uint64_t n)
{
    if (n > 0)
        fprintf(stderr, " (%" PRIu64 " written from the state)", n);
}

/*
 * "eddy: 10 inputs, 10 outputs, ..., 0.52 s, 19231 inputs/s, state: DIR". A
 * run that took up work from the state says so, since its outputs do not
 * come from the inputs it read: "0 inputs, 3 runs resumed, 40 pending inputs
 * taken up from the state, 97 outputs (2 written from the state), ...", in
 * eddy inspect's words: the runs that were in flight, and every input the
 * state held, theirs included (each counted as its run starts). Runs in
 * flight that had failed (--on-error skip) are ended, not run: "3 runs
 * resumed (1 of them failed: ended with no action run again)". The rate is
 * said only of inputs that were read.
 */
static void print_summary(const eddy_runtime *rt, const eddy_stats *st, const char *state_dir)
{
    fprintf(stderr, "eddy: %" PRIu64 " input%s", st->inputs, plural(st->inputs));
    if (st->runs_resumed > 0) {
        fprintf(stderr, ", %" PRIu64 " run%s resumed", st->runs_in_flight_resumed,
                plural(st->runs_in_flight_resumed));
        if (st->runs_failed_resumed > 0)
            fprintf(stderr, " (%" PRIu64 " of them failed: ended with no action run again)",
                    st->runs_failed_resumed);
        fprintf(stderr, ", %" PRIu64 " pending input%s taken up from the state", st->runs_resumed,
                plural(st->runs_resumed));
    }
    fprintf(stderr, ", %" PRIu64 " output%s", st->outputs, plural(st->outputs));
    print_from_state(st->outputs_from_state);
    fprintf(stderr, ", %" PRIu64 " dead-lettered", st->dead_lettered);
    print_from_state(st->dead_lettered_from_state);
    fprintf(stderr,
            ", %" PRIu64 " action%s, %" PRIu64 " async call%s, %" PRIu64 " unhandled event%s",
            st->actions_executed, plural(st->actions_executed), st->async_calls,
            plural(st->async_calls), st->unhandled_events, plural(st->unhandled_events));
    const char *type;
    for (size_t i = 0; (type = eddy_runtime_unhandled_type(rt, i)) != NULL; i++) {
        if (i == SUMMARY_UNHANDLED_TYPES) {
            fputs(", ...", stderr);
            break;
        }
        fprintf(stderr, "%s%s", i == 0 ? " (" : ", ", type);
    }
    if (eddy_runtime_unhandled_type(rt, 0) != NULL)
        fputc(')', stderr);
    fprintf(stderr, ", %.2f s", st->elapsed_s);
    if (inputs_per_s(st) > 0)
        fprintf(stderr, ", %.0f inputs/s", inputs_per_s(st));
    if (st->durable_replayed > 0)
        fprintf(stderr, ", %" PRIu64 " durable call%s replayed", st->durable_replayed,
                plural(st->durable_replayed));
    if (st->actions_replayed > 0)
        fprintf(stderr, ", %" PRIu64 " action%s replayed", st->actions_replayed,
                plural(st->actions_replayed));
    if (st->keys_loaded > 0)
        fprintf(stderr, ", %" PRIu64 " read%s of keys' memory from the state", st->keys_loaded,
                plural(st->keys_loaded));
    fprintf(stderr, ", state: %s\n", st->durable ? state_dir : "in memory");
}

/* ---------------------------------------------------------------- eddy run */

/* The message and exit code of a stop asked for by signal signo. */
static int interrupted(int signo, int durable)
{
    fprintf(stderr, "eddy: interrupted; %s\n",
            durable ? "run the same command again to resume" : "in-memory state was lost");
    return 128 + signo;
}

static int has_state(const struct run_args *a)
{
    const char *state_dir = eddy_config_get(a->conf, "state");
    return state_dir != NULL && *state_dir != '\0';
}

/* The exit code for what eddy_runtime_run() returned, with its message;
 * signo is the signal caught by the time the run ended, or 0. */
static int run_exit_code(int rc, const eddy_runtime *rt, int durable, int signo)
{
    switch (rc) {
    case EDDY_OK:
        return EXIT_OK;
    case EDDY_ESTOPPED:
        if (signo != 0)
            return interrupted(signo, durable);
        print_error(rc, eddy_runtime_error(rt));
        return EXIT_FAIL;
    case EDDY_ESTORE:
    case EDDY_ESTATE:
        print_error(rc, eddy_runtime_error(rt));
        return EXIT_STATE;
    case EDDY_EACTION:
    case EDDY_EIO:
    default:
        print_error(rc, eddy_runtime_error(rt));
        return EXIT_FAIL;
    }
}

/* Run the runtime to the end; rt stays the caller's to free. */
static int run_runtime(eddy_runtime *rt, const struct run_args *a)
{
    struct progress progress;
    memset(&progress, 0, sizeof(progress));
    if (progress_wanted(a))
        /* Progress is a nicety: a runtime that cannot report it still runs. */
        (void)eddy_runtime_set_progress(rt, on_progress, &progress, PROGRESS_INTERVAL_MS);

    atomic_store(&progress_on_tty, progress_wanted(a));
    start_stop_watch();
    atomic_store(&signal_runtime, rt); /* the handlers are in place since before the agent */
    /* A signal that came before the runtime ran (while it opened and
     * recovered its state, say) found nothing to stop: it stops it now. */
    run_ran = 1;
    int rc = atomic_load(&signal_caught) != 0 ? EDDY_ESTOPPED : eddy_runtime_run(rt);
    end_stop_watch();
    /* The run has ended. The handlers stay until eddy exits: a signal while
     * the summary is printed or the state is closed must not kill eddy and
     * turn a run that completed into a failure (see cmd_run). */
    detach_signal_runtime();
    signal_at_run_end = atomic_load(&signal_caught);
    reclaim_signals(FOUND_AFTER_RUN); /* what the agent's actions did to them */
    clear_progress(&progress);
    atomic_store(&progress_on_tty, 0); /* notes from here on: no line to end */

    fflush(stdout); /* what C agents printed comes before the summary */
    eddy_stats st;
    memset(&st, 0, sizeof(st));
    eddy_runtime_stats(rt, &st);
    const char *state_dir = eddy_config_get(a->conf, "state");
    if (!a->quiet)
        print_summary(rt, &st, state_dir);
    return run_exit_code(rc, rt, state_dir != NULL && *state_dir != '\0', signal_at_run_end);
}

static int cmd_run(int argc, char **argv)
{
    struct run_args a;
    memset(&a, 0, sizeof(a));
    a.progress = -1;
    eddy_plan *plan = NULL;
    eddy_runtime *rt = NULL;
    eddy_error *err = NULL;
    int code, kept_stdout = -1;

    a.conf = eddy_config_new();
    if (a.conf == NULL)
        return out_of_memory();
    code = parse_run_args(&a, argc, argv);
    if (code == CONTINUE)
        code = stdio_refused(&a);
    if (code != CONTINUE)
        goto done;
    stop_durable = has_state(&a);
    kept_stdout = stdout_keep(&a);

    plan = eddy_plan_new();
    if (plan == NULL) {
        code = out_of_memory();
        goto done;
    }

    /* From here a SIGINT, SIGTERM or SIGHUP is a request to stop: loading
     * an agent (a Python agent's imports), opening and recovering a large
     * state take a while, and the default action would end eddy without
     * its "interrupted" line. */
    if (install_signal_handlers(a.agent_path) != 0) {
        perror("eddy: sigaction");
        code = EXIT_FAIL;
        goto done;
    }
    sigset_t mask_before_load;
    sigemptyset(&mask_before_load);
    pthread_sigmask(SIG_BLOCK, NULL, &mask_before_load);
    code = load_agent(plan, &a);
    if (code != CONTINUE)
        goto done; /* a failed load is reported as such, signal or not */
    /* What the agent's import or its init did to the signals eddy handles. */
    reclaim_signals(FOUND_AT_LOAD);
    unblock_signals(&mask_before_load);
    if (atomic_load(&signal_caught) != 0) {
        /* Asked to stop while the agent loaded: nothing has started. */
        code = interrupted(atomic_load(&signal_caught), has_state(&a));
        goto done;
    }
    /* fd 1 is the real stdout for this call only (see stdout_keep). */
    if (kept_stdout >= 0 && dup2(kept_stdout, STDOUT_FILENO) < 0) {
        perror("eddy: dup2");
        code = EXIT_FAIL;
        goto done;
    }
    rt = eddy_runtime_new(plan, a.conf, &err);
    if (rt != NULL)
        plan = NULL; /* the runtime's now */
    if (kept_stdout >= 0) {
        /* Agents must not write among the lines: stop rather. */
        if (stdout_to_stderr() != 0) {
            perror("eddy: dup2");
            code = EXIT_FAIL;
            goto done;
        }
        close(kept_stdout);
        kept_stdout = -1;
    }
    if (rt == NULL) {
        if (err == NULL) {
            code = out_of_memory(); /* no room for an error object either */
            goto done;
        }
        print_error(EDDY_EINVAL, err);
        code = runtime_new_exit_code(err);
        goto done;
    }
    code = run_runtime(rt, &a);

done:
    if (kept_stdout >= 0)
        close(kept_stdout);
    detach_signal_runtime();
    /* Freeing the last plan of a Python agent finalises its interpreter
     * (on_finalize), which may end eddy with this code. */
    atomic_store(&exit_code_at_end, code);
    eddy_runtime_free(rt); /* closes the state: with --state, it may take a while */
    eddy_plan_free(plan);
    end_exit_watch();
    eddy_error_free(err);
    eddy_config_free(a.conf);
    print_signal_after_run_note();
    return code; /* the handlers stay: a signal from here on changes nothing */
}

/* A signal after the run ended found nothing to stop: the run's outcome
 * stands (a completed run exits 0), and this says why the signal did not
 * interrupt anything. */
static void print_signal_after_run_note(void)
{
    int signo = atomic_load(&signal_caught);
    if (signal_at_run_end == 0 && signo != 0)
        fprintf(stderr,
                "eddy: note: %s came after the run had ended; it interrupted nothing, and the "
                "exit code is the run's\n",
                signal_name(signo));
}

/* ---------------------------------------------------------------- eddy inspect */

static void print_inspect_help(FILE *out)
{
    fputs("usage: eddy inspect --state DIR [--key K] [--json]\n"
          "\n"
          "Shows what a state directory holds, without changing it (safe while an eddy\n"
          "process works on it): how much of the input was read (lines and bytes;\n"
          "reading resumes after them), the key field and the next run number, the\n"
          "lengths committed to the output and dead-letter files (a standard stream\n"
          "has none), the keys with runs in flight and their pending inputs (by input\n"
          "line number), and the journal of those runs. With --key, also that key's\n"
          "short-term memory, pending inputs and journal, and of the other runs'\n"
          "journals their count alone (--json gives them all). (Reading may leave\n"
          "SQLite's empty eddy.db-wal and its index eddy.db-shm beside the state:\n"
          "they hold nothing.)\n"
          "\n"
          "options (--opt VALUE and --opt=VALUE are the same; a VALUE that starts with\n"
          "-- must be given as --opt=VALUE; --state and --key are refused when given\n"
          "twice):\n"
          "  --state DIR    the state directory (required)\n"
          "  --key K        one key, as JSON text: '\"u1\"' for a string, 42 for a number\n"
          "                 (a bare word that is not JSON is taken as a string)\n"
          "  --json         print the report as one JSON object\n"
          "\n"
          "exit codes: 0 ok, 2 usage error or unknown key, 3 the state cannot be read\n",
          out);
}

/* A bare word is taken as a string key, so --key u1 works as --key '"u1"'. */
static char *key_arg(const char *k)
{
    json_t *v = json_loads(k, JSON_DECODE_ANY, NULL);
    if (v == NULL)
        v = json_string(k);
    char *text = v != NULL ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(v);
    return text;
}

/*
 * The digits, 15 to 17, with which every real in v reads back to the same
 * double (jansson has one precision for a whole text, and cut them to 15
 * here: 0.1 + 0.2 showed as 0.3): 15 when that does for all, as for 0.1.
 * The outputs' writer says each real in the fewest of these.
 */
static int real_precision(const json_t *v)
{
    int p = 15;
    if (json_is_real(v)) {
        double d = json_real_value(v);
        char t[40];
        for (; p < 17; p++) {
            snprintf(t, sizeof(t), "%.*g", p, d);
            if (strtod(t, NULL) == d)
                break;
        }
    } else if (json_is_array(v) || json_is_object(v)) {
        /* Nesting is bounded: the library reads and writes 2048 levels at most. */
        const char *k;
        size_t i;
        json_t *m;
        if (json_is_array(v)) {
            json_array_foreach(v, i, m)
            {
                int q = real_precision(m);
                p = q > p ? q : p;
            }
        } else {
            json_object_foreach((json_t *)v, k, m)
            {
                int q = real_precision(m);
                p = q > p ? q : p;
            }
        }
    }
    return p;
}

static void print_json_field(const char *label, json_t *v)
{
    char *t =
        json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(real_precision(v)));
    printf("%s%s\n", label, t != NULL ? t : "?");
    free(t);
}

/*
 * "output: 120 bytes committed" for a file: its length that the state
 * holds for certain, cut back to on a resume. A standard stream's recorded
 * position is where the stream stood (after what was in a file it was
 * appended to, 2>>log), nothing a rerun cuts back to: no number, and what
 * delivery to it is.
 */
static void print_position(const char *what, const char *stream_name, json_t *stream,
                           json_t *offset, const char *end)
{
    if (json_is_true(stream))
        printf("%s: %s (a stream: at-least-once, no committed length)%s", what, stream_name, end);
    else
        printf("%s: %lld bytes committed%s", what, (long long)json_integer_value(offset), end);
}

/* A journal's entries under a label ("journal", "  journal of this key"),
 * each on its own line indented by indent. */
static void print_journal(json_t *journal, const char *label, const char *indent)
{
    size_t i;
    json_t *e;
    printf("%s: %zu entr%s\n", label, json_array_size(journal),
           json_array_size(journal) == 1 ? "y" : "ies");
    json_array_foreach(journal, i, e)
    {
        char *k = json_dumps(json_object_get(e, "key"), JSON_ENCODE_ANY);
        const char *st = json_string_value(json_object_get(e, "status"));
        printf("%s  %s run %lld event %s action %s ", indent, k != NULL ? k : "?",
               (long long)json_integer_value(json_object_get(e, "seq")),
               json_string_value(json_object_get(e, "event_id")),
               json_string_value(json_object_get(e, "action")));
        free(k);
        if (strcmp(st, "finished") == 0) {
            printf("finished\n");
            continue;
        }
        json_t *er = json_object_get(e, "error");
        if (strcmp(st, "failed") == 0) {
            printf("failed (%s: %s)\n", json_string_value(json_object_get(er, "type")),
                   json_string_value(json_object_get(er, "message")));
            continue;
        }
        printf("call %lld %s: %s", (long long)json_integer_value(json_object_get(e, "idx")),
               json_string_value(json_object_get(e, "fn_id")), st);
        if (er != NULL)
            printf(" (%s: %s)", json_string_value(json_object_get(er, "type")),
                   json_string_value(json_object_get(er, "message")));
        printf("\n");
    }
}

static void print_report(json_t *r)
{
    json_t *src = json_object_get(r, "source"), *counts = json_object_get(r, "counts");
    printf("state %s\n", json_string_value(json_object_get(r, "state")));
    /* As --json says it: the lines read (reading resumes after them), and
     * the bytes they take. */
    long long lines_read = (long long)json_integer_value(json_object_get(src, "line"));
    printf("source: %lld line%s read (%lld bytes)\n", lines_read, lines_read == 1 ? "" : "s",
           (long long)json_integer_value(json_object_get(src, "offset")));
    const char *kf = json_string_value(json_object_get(r, "key_field"));
    if (kf != NULL)
        printf("key field: %s\n", kf);
    json_t *plan = json_object_get(r, "plan");
    if (json_array_size(plan) > 0) {
        /* "plan: score (InputEvent), decide (Scored, Flagged)" */
        printf("plan:");
        size_t ai;
        json_t *a;
        json_array_foreach(plan, ai, a)
        {
            const char *name = json_string_value(json_object_get(a, "name"));
            printf("%s %s (", ai > 0 ? "," : "", name != NULL ? name : "?");
            size_t ti;
            json_t *t;
            json_array_foreach(json_object_get(a, "event_types"), ti, t)
            {
                const char *ty = json_string_value(t);
                printf("%s%s", ti > 0 ? ", " : "", ty != NULL ? ty : "?");
            }
            printf(")");
        }
        printf("\n");
    }
    printf("next run number: %lld (one counter for all keys)\n",
           (long long)json_integer_value(json_object_get(r, "next_run")));
    print_position("output", "standard output", json_object_get(r, "output_stream"),
                   json_object_get(r, "output_offset"), "; ");
    print_position("dead letters", "standard error", json_object_get(r, "dead_letter_stream"),
                   json_object_get(r, "dead_letter_offset"), "\n");
    printf("keys with short-term memory stored: %lld, pending inputs: %lld, journal entries: "
           "%lld, unwritten outputs: %lld\n",
           (long long)json_integer_value(json_object_get(counts, "keys")),
           (long long)json_integer_value(json_object_get(counts, "pending")),
           (long long)json_integer_value(json_object_get(counts, "journal")),
           (long long)json_integer_value(json_object_get(counts, "outbox")));
    json_t *inflight = json_object_get(r, "in_flight");
    printf("runs in flight: %zu\n", json_array_size(inflight));
    size_t i;
    json_t *e;
    json_array_foreach(inflight, i, e)
    {
        char *k = json_dumps(json_object_get(e, "key"), JSON_ENCODE_ANY);
        printf("  key %s: run %lld (input line %lld), %lld input(s) pending%s\n",
               k != NULL ? k : "?", (long long)json_integer_value(json_object_get(e, "seq")),
               (long long)json_integer_value(json_object_get(e, "line")),
               (long long)json_integer_value(json_object_get(e, "pending")),
               json_is_true(json_object_get(e, "failed"))
                   ? ", failed (its input dead-lettered): the next run ends it without running "
                     "its actions"
                   : "");
        free(k);
    }
    /* Every run's journal without --key; with it, the key's own in its
     * section (a state may hold millions of entries: not kept then). */
    json_t *journal = json_object_get(r, "journal");
    if (journal != NULL) {
        print_journal(journal, "journal", "");
    } else {
        long long n = (long long)json_integer_value(json_object_get(counts, "journal"));
        printf("journal: %lld entr%s (this key's below; without --key, every run's)\n", n,
               n == 1 ? "y" : "ies");
    }
    json_t *key = json_object_get(r, "key");
    if (key != NULL) {
        print_json_field("key ", json_object_get(key, "key"));
        print_json_field("  short-term memory: ", json_object_get(key, "short_term_memory"));
        json_array_foreach(json_object_get(key, "pending"), i, e)
        {
            printf("  pending run %lld (line %lld): ",
                   (long long)json_integer_value(json_object_get(e, "seq")),
                   (long long)json_integer_value(json_object_get(e, "line")));
            print_json_field("", json_object_get(e, "record"));
        }
        print_journal(json_object_get(key, "journal"), "  journal of this key", "  ");
    }
}

static int cmd_inspect(int argc, char **argv)
{
    const char *state = NULL, *key = NULL;
    int as_json = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *eq = strchr(a, '=');
        size_t nlen = eq != NULL ? (size_t)(eq - a) : strlen(a);
        const char **dst = NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_inspect_help(stdout);
            return EXIT_OK;
        } else if (strcmp(a, "--json") == 0) {
            as_json = 1;
            continue;
        } else if (nlen == 7 && strncmp(a, "--state", 7) == 0) {
            dst = &state;
        } else if (nlen == 5 && strncmp(a, "--key", 5) == 0) {
            dst = &key;
        } else if (a[0] != '-' || strcmp(a, "--") == 0) {
            fprintf(stderr,
                    "eddy: inspect takes only options (--state DIR, --key KEY, --json), not "
                    "'%s'\ntry 'eddy inspect --help'\n",
                    a);
            return EXIT_USAGE;
        } else {
            fprintf(stderr, "eddy: unknown inspect option '%s'\ntry 'eddy inspect --help'\n", a);
            return EXIT_USAGE;
        }
        const char *value = NULL;
        if (eq != NULL) {
            value = eq + 1;
        } else if (i + 1 < argc && is_option_like(argv[i + 1])) {
            fprintf(stderr,
                    "eddy: option '%s' needs a value, not the option '%s' (write %s=%s for a "
                    "value that starts with --)\ntry 'eddy inspect --help'\n",
                    a, argv[i + 1], a, argv[i + 1]);
            return EXIT_USAGE;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            fprintf(stderr, "eddy: option '%s' needs a value\ntry 'eddy inspect --help'\n", a);
            return EXIT_USAGE;
        }
        if (*dst != NULL) {
            fprintf(stderr,
                    "eddy: option '%.*s' given twice, as '%s' and as '%s'; it takes one value\n"
                    "try 'eddy inspect --help'\n",
                    (int)nlen, a, *dst, value);
            return EXIT_USAGE;
        }
        *dst = value;
    }
    if (state == NULL || *state == '\0') {
        fprintf(stderr, "eddy: inspect needs --state DIR%s\ntry 'eddy inspect --help'\n",
                state != NULL ? " (an empty value names no directory)" : "");
        return EXIT_USAGE;
    }
    char *k = key != NULL ? key_arg(key) : NULL;
    eddy_error *err = NULL;
    /* The text with --key lists that key's journal alone (--json keeps
     * every run's, as eddy_state_inspect() gives it). */
    json_t *r = eddy_state_inspect_ex(state, k, as_json ? 0 : EDDY_INSPECT_KEY_ONLY, &err);
    free(k);
    if (r == NULL) {
        fprintf(stderr, "eddy: %s\n", err != NULL ? eddy_error_message(err) : "out of memory");
        int code = err != NULL && strcmp(eddy_error_type(err), "state") == 0 &&
                           strstr(eddy_error_message(err), "is not in") != NULL
                       ? EXIT_USAGE
                       : EXIT_STATE;
        eddy_error_free(err);
        return code;
    }
    if (as_json) {
        char *t = json_dumps(r, JSON_INDENT(2) | JSON_ENCODE_ANY |
                                    JSON_REAL_PRECISION(real_precision(r)));
        if (t != NULL)
            puts(t);
        free(t);
    } else {
        print_report(r);
    }
    json_decref(r);
    return EXIT_OK;
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    stdio_fill();
    if (argc < 2) {
        print_usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    int is_help = strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0;
    /* These take nothing after them: what follows was meant for something
     * else (`eddy help run` for `eddy run --help`), and must not be dropped
     * unsaid with a success. */
    if ((is_help || strcmp(cmd, "--version") == 0) && argc > 2) {
        int is_command = strcmp(argv[2], "run") == 0 || strcmp(argv[2], "inspect") == 0;
        fprintf(stderr, "eddy: unexpected argument '%s' after '%s' (it takes none)\n", argv[2],
                cmd);
        if (is_help && is_command)
            fprintf(stderr, "try 'eddy %s --help'\n", argv[2]);
        else
            fputs("try 'eddy --help'\n", stderr);
        return EXIT_USAGE;
    }
    if (is_help) {
        print_usage(stdout);
        return EXIT_OK;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("eddy %s\n" PYTHON_AGENTS "\n", eddy_version());
        return EXIT_OK;
    }
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 2, argv + 2);
    if (strcmp(cmd, "inspect") == 0)
        return cmd_inspect(argc - 2, argv + 2);
    fprintf(stderr, "eddy: unknown command '%s'\ntry 'eddy --help'\n", cmd);
    return EXIT_USAGE;
}
