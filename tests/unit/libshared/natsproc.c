/* natsproc.c — start and stop a real nats-server -js for unit tests (see natsproc.h).
 *
 * The server runs as a child process with its stdout/stderr in <dir>/nats.log; readiness is
 * a successful TCP connect to its port. Signals are unblocked and SIGPIPE restored in the child
 * before exec, since the test thread may have them blocked or ignored (dmn_main does that). */
#include "natsproc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *natsproc_binary(void)
{
    static char found[512];
    const char *path = getenv("PATH");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s:/usr/sbin:/usr/local/bin:/usr/local/sbin",
             path ? path : "/usr/bin:/bin");
    char *save = NULL;
    for (char *dir = strtok_r(buf, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        snprintf(found, sizeof found, "%s/nats-server", dir);
        if (access(found, X_OK) == 0)
            return found;
    }
    return NULL;
}

int natsproc_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    int port = 0;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

bool natsproc_init(natsproc *p, int port)
{
    memset(p, 0, sizeof *p);
    if (!natsproc_binary())
        return false;
    snprintf(p->dir, sizeof p->dir, "/tmp/parley-nats-XXXXXX");
    if (!mkdtemp(p->dir)) {
        p->dir[0] = '\0';
        return false;
    }
    p->port = port ? port : natsproc_free_port();
    snprintf(p->url, sizeof p->url, "nats://127.0.0.1:%d", p->port);
    return p->port > 0;
}

bool natsproc_start(natsproc *p)
{
    if (!p->dir[0] && !natsproc_init(p, 0))
        return false;
    const char *bin = natsproc_binary();
    if (!bin)
        return false;
    char port[16], store[128], logf[128];
    snprintf(port, sizeof port, "%d", p->port);
    snprintf(store, sizeof store, "%s/js", p->dir);
    snprintf(logf, sizeof logf, "%s/nats.log", p->dir);

    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        int fd = open(logf, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(bin, "nats-server", "-a", "127.0.0.1", "-p", port, "-js", "-sd", store, (char *)NULL);
        _exit(127);
    }
    p->pid = pid;
    for (int i = 0; i < 250; i++) {
        if (port_open(p->port))
            return true;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            p->pid = 0;
            return false;
        }
        nap_ms(20);
    }
    natsproc_kill(p, true);
    return false;
}

void natsproc_kill(natsproc *p, bool hard)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, hard ? SIGKILL : SIGTERM);
    int st;
    while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR) {
    }
    p->pid = 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void natsproc_stop(natsproc *p)
{
    natsproc_kill(p, false);
    if (p->dir[0])
        nftw(p->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    p->dir[0] = '\0';
}
