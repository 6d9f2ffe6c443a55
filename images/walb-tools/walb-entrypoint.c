/*
 * walb-entrypoint: the image's ENTRYPOINT. It makes every stop of a walb server
 * container graceful, whoever stops it (docker stop, compose down, compose recreating a
 * service, a host shutting down its containers).
 *
 * walb servers treat SIGTERM, SIGINT and SIGQUIT as `shutdown force`, which aborts
 * running backups, replications, merges and applies; only `walbc shutdown graceful` lets
 * them finish. Run as `walb-entrypoint walb-archive|walb-proxy|walb-storage ARGS...`, it
 * starts the server as its child and, on the first stop signal:
 *
 *   t = 0       asks the server for `walbc shutdown graceful` (on 127.0.0.1 and the
 *               server's own -p port); a server that has never listened is still
 *               starting, runs no work, and gets SIGTERM, which ends it; one that
 *               listened and no longer does is shutting down already (someone sent
 *               `walbc shutdown graceful`), and is left to finish;
 *   t = F       still running: `shutdown force`, or SIGTERM if the server no longer
 *               listens (upstream closes its port once it accepts graceful, and handles
 *               SIGTERM as force);
 *   t = K       still running: SIGKILL, so that Docker never has to.
 *
 * G is WALBCTR_STOP_GRACE_S (the container's stop grace period, which walbctr's compose
 * files set; 10 s, Docker's default, when unset); F = G - clamp(G/10, 2 s, 10 s) and
 * K = G - clamp(G/20, 1 s, 3 s) (for G = 120: force at 110 s, kill at 117 s). A second
 * stop signal forces at once, a third kills. Other signals (HUP, USR1, USR2) are passed
 * on. The entrypoint exits with the server's status (128 + N when signal N ended it, as
 * Docker reports for a container's main process), so restart policies and exit codes
 * see exactly what the server did.
 *
 * Any other command (walbc -h, sh -c ..., bash) is exec'd unchanged.
 *
 * Why C and not a bash script: bash starts background jobs with SIGINT and SIGQUIT
 * ignored (the server would inherit that until it installs its own handlers), has no
 * wait with a deadline, and its trap/wait interplay makes exact exit statuses fragile.
 * sigtimedwait() gives exact deadlines and statuses with libc alone. It is compiled in
 * a stage of its own, so editing it never recompiles walb-tools.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_GRACE_S 10.0 /* docker stop's and compose's default */
#define DEFAULT_PORT 5000    /* walb servers' default -p */
#define RETRY_S 1.0          /* between graceful requests that walbc could not deliver */
#define LISTEN_POLL_S 1.0    /* until the server first listens */

static const char *const SERVERS[] = {"walb-archive", "walb-proxy", "walb-storage"};
static const int FORWARDED[] = {SIGHUP, SIGUSR1, SIGUSR2};

static sigset_t handled, original;
static const char *server_name;
static double stopped_at = -1; /* monotonic time of the first stop signal */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One write per line, so that lines do not interleave with the server's in the log. */
static void say(const char *fmt, ...) {
    char buf[768];
    int n = snprintf(buf, sizeof buf, "walb-entrypoint: ");
    if (stopped_at >= 0) n += snprintf(buf + n, sizeof buf - (size_t)n, "[+%.1f s] ", now() - stopped_at);
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, buf, (size_t)n);
    (void)w;
}

static const char *sig_name(int sig) {
    switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGQUIT: return "SIGQUIT";
    case SIGKILL: return "SIGKILL";
    default: return strsignal(sig);
    }
}

static double clamp(double v, double lo, double hi) { return v < lo ? lo : v > hi ? hi : v; }

static int is_server(const char *arg0) {
    const char *base = strrchr(arg0, '/');
    base = base ? base + 1 : arg0;
    for (size_t i = 0; i < sizeof SERVERS / sizeof *SERVERS; i++)
        if (strcmp(base, SERVERS[i]) == 0) return 1;
    return 0;
}

/* The server's -p (walb options are single-dash, the value is the next argument). */
static int server_port(int argc, char **argv) {
    int port = DEFAULT_PORT;
    for (int i = 2; i + 1 < argc; i++) {
        if (strcmp(argv[i], "-p") != 0) continue;
        char *end;
        long p = strtol(argv[i + 1], &end, 10);
        if (*argv[i + 1] && !*end && p > 0 && p < 65536) port = (int)p;
        i++;
    }
    return port;
}

static double stop_grace(void) {
    const char *text = getenv("WALBCTR_STOP_GRACE_S");
    if (!text || !*text) return DEFAULT_GRACE_S;
    char *end;
    double g = strtod(text, &end);
    if (*end || !isfinite(g) || g <= 0) {
        say("WALBCTR_STOP_GRACE_S=%s is not a number of seconds; using %.0f s", text, DEFAULT_GRACE_S);
        return DEFAULT_GRACE_S;
    }
    return g;
}

/* 1 when something listens on TCP `port` in this network namespace, 0 when nothing
 * does, -1 when /proc cannot tell. Reading /proc instead of connecting leaves no
 * half-open connection for the server to log. */
static int listening(int port) {
    int known = 0;
    for (int v6 = 0; v6 < 2; v6++) {
        FILE *f = fopen(v6 ? "/proc/net/tcp6" : "/proc/net/tcp", "r");
        if (!f) continue;
        known = 1;
        char line[512];
        unsigned lport, state;
        while (fgets(line, sizeof line, f)) {
            if (sscanf(line, " %*u: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%*x %x", &lport, &state) == 2 &&
                (int)lport == port && state == 0x0A /* TCP_LISTEN */) {
                fclose(f);
                return 1;
            }
        }
        fclose(f);
    }
    return known ? 0 : -1;
}

static pid_t spawn(char *const argv[]) {
    pid_t pid = fork();
    if (pid == 0) {
        for (int s = 1; s < NSIG; s++)
            if (sigismember(&handled, s) == 1) signal(s, SIG_DFL);
        sigprocmask(SIG_SETMASK, &original, NULL);
        execvp(argv[0], argv);
        say("cannot run %s: %s", argv[0], strerror(errno));
        _exit(errno == ENOENT ? 127 : 126);
    }
    if (pid < 0) say("cannot start %s: %s", argv[0], strerror(errno));
    return pid;
}

static pid_t walbc(int port, const char *mode, double timeout_s) {
    char p[16], to[16];
    snprintf(p, sizeof p, "%d", port);
    snprintf(to, sizeof to, "%d", (int)clamp(floor(timeout_s), 1, 10));
    /* No -retry: upstream's walbc refuses it for every command but status and get. */
    char *argv[] = {"walbc", "-a", "127.0.0.1", "-p", p, "-to", to, "shutdown", (char *)mode,
                    NULL};
    return spawn(argv);
}

static int exit_code(int status) {
    return WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 1;
}

static void describe(char *buf, size_t size, int status) {
    if (WIFSIGNALED(status))
        snprintf(buf, size, "was ended by signal %d (%s)", WTERMSIG(status), sig_name(WTERMSIG(status)));
    else
        snprintf(buf, size, "exited with status %d", exit_code(status));
}

enum stage { RUNNING, GRACEFUL, FORCED, KILLED };

int main(int argc, char **argv) {
    if (argc < 2) {
        say("usage: walb-entrypoint COMMAND [ARG...]");
        return 2;
    }
    if (!is_server(argv[1])) {
        execvp(argv[1], argv + 1);
        say("cannot run %s: %s", argv[1], strerror(errno));
        return errno == ENOENT ? 127 : 126;
    }
    server_name = argv[1];
    const int port = server_port(argc, argv);
    const double grace = stop_grace();
    const double kill_at = fmax(grace - clamp(grace / 20, 1, 3), grace / 2);
    const double force_at = fmin(fmax(grace - clamp(grace / 10, 2, 10), 0), kill_at);

    sigemptyset(&handled);
    static const int STOPS_AND_CHILD[] = {SIGTERM, SIGINT, SIGQUIT, SIGCHLD};
    for (size_t i = 0; i < sizeof STOPS_AND_CHILD / sizeof *STOPS_AND_CHILD; i++)
        sigaddset(&handled, STOPS_AND_CHILD[i]);
    for (size_t i = 0; i < sizeof FORWARDED / sizeof *FORWARDED; i++) sigaddset(&handled, FORWARDED[i]);
    sigprocmask(SIG_BLOCK, &handled, &original);

    const pid_t server = spawn(argv + 1);
    if (server < 0) return 126;

    enum stage stage = RUNNING;
    int stops = 0;
    pid_t helper = 0;           /* the walbc request in flight */
    const char *helper_mode = "";
    double retry_at = -1;       /* seconds after the stop signal; -1: none due */
    /* Whether the server has listened: a closed port then means a shutdown under way,
     * not a start-up. Polled (in /proc, no connection) only until it first listens. */
    int has_listened = 0;
    double poll_at = now() + LISTEN_POLL_S;

    for (;;) {
        double wake = -1; /* monotonic time of the next step; -1: none */
        if (stage == RUNNING && !has_listened) wake = poll_at;
        if (stage == GRACEFUL) wake = stopped_at + (retry_at >= 0 && retry_at < force_at ? retry_at : force_at);
        if (stage == FORCED) wake = stopped_at + kill_at;
        siginfo_t info;
        int sig;
        if (wake < 0) {
            sig = sigwaitinfo(&handled, &info);
        } else {
            double left = wake - now();
            if (left <= 0) {
                sig = -1;
                errno = EAGAIN;
            } else {
                struct timespec ts = {(time_t)left, (long)((left - floor(left)) * 1e9)};
                sig = sigtimedwait(&handled, &info, &ts);
            }
        }
        int force_now = 0, kill_now = 0;
        if (sig < 0) {
            if (errno != EAGAIN) continue; /* EINTR */
            double t = now() - stopped_at;
            if (stage == RUNNING) {
                if (listening(port) != 0) has_listened = 1;
                poll_at = now() + LISTEN_POLL_S;
            } else if (stage == GRACEFUL && t >= force_at) {
                say("%s is still running %.0f s into its %.0f s stop grace period: forcing it", server_name,
                    t, grace);
                force_now = 1;
            } else if (stage == GRACEFUL) {
                retry_at = -1;
                if (listening(port) != 0 && !helper) {
                    helper = walbc(port, "graceful", force_at - t);
                    helper_mode = "graceful";
                }
            } else if (stage == FORCED) {
                say("%s is still running %.0f s into its %.0f s stop grace period: SIGKILL", server_name, t, grace);
                kill_now = 1;
            }
        } else if (sig == SIGCHLD) {
            int status;
            pid_t pid;
            while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
                if (pid == server) {
                    char what[128];
                    describe(what, sizeof what, status);
                    say("%s %s", server_name, what);
                    if (helper) kill(helper, SIGKILL);
                    return exit_code(status);
                }
                if (pid != helper) continue; /* a cancelled request, or an orphan when we are PID 1 */
                helper = 0;
                int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
                if (ok && strcmp(helper_mode, "graceful") == 0) {
                    say("%s accepted the graceful shutdown; waiting for its running work to finish", server_name);
                } else if (ok) {
                    say("%s accepted the forced shutdown", server_name);
                } else if (strcmp(helper_mode, "graceful") == 0 && stage == GRACEFUL) {
                    /* Busy (too many connections) or slow: ask again while it listens. */
                    retry_at = now() - stopped_at + RETRY_S;
                } else if (stage == FORCED) {
                    say("walbc shutdown force failed: SIGTERM to %s", server_name);
                    kill(server, SIGTERM);
                }
            }
        } else if (sig == SIGTERM || sig == SIGINT || sig == SIGQUIT) {
            stops++;
            if (stops == 1) {
                stopped_at = now();
                stage = GRACEFUL;
                say("%s: graceful shutdown of %s (port %d); force at +%.1f s, SIGKILL at +%.1f s "
                    "(WALBCTR_STOP_GRACE_S=%g)", sig_name(sig), server_name, port, force_at, kill_at, grace);
                int l = listening(port);
                if (l != 0) has_listened = 1;
                if (l == 0 && !has_listened) {
                    /* Still starting: no work runs yet, and walb has not installed its
                     * own handler, so SIGTERM simply ends it. */
                    say("%s does not listen on port %d yet (still starting): SIGTERM", server_name, port);
                    kill(server, SIGTERM);
                } else if (l == 0) {
                    /* It closed its port: walb does that when it accepts a shutdown. */
                    say("%s no longer listens: a shutdown is under way already; waiting for it", server_name);
                } else if (force_at <= 0) {
                    force_now = 1;
                } else {
                    helper = walbc(port, "graceful", force_at);
                    helper_mode = "graceful";
                }
            } else if (stops == 2) {
                say("second stop signal (%s): forcing %s now", sig_name(sig), server_name);
                if (stage < FORCED) force_now = 1;
                else kill(server, SIGTERM);
            } else {
                say("third stop signal (%s): SIGKILL to %s", sig_name(sig), server_name);
                kill_now = 1;
            }
        } else {
            kill(server, sig);
        }

        if (force_now && stage < FORCED) {
            stage = FORCED;
            if (helper) kill(helper, SIGKILL); /* a graceful request still in flight */
            helper = 0;
            if (listening(port) == 1) {
                helper = walbc(port, "force", kill_at - (now() - stopped_at));
                helper_mode = "force";
            } else {
                say("%s no longer listens: SIGTERM (walb's signal for a forced shutdown)", server_name);
                kill(server, SIGTERM);
            }
        }
        if (kill_now) {
            stage = KILLED;
            kill(server, SIGKILL);
            if (helper) kill(helper, SIGKILL);
        }
    }
}
