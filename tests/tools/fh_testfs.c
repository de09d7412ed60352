/*
 * fh_testfs: a tiny read-only FUSE filesystem served from memory, for tests.
 *
 * Usage:
 *   fh_testfs MOUNTPOINT --generation N [--tree SPEC]... [--fsname NAME]
 *             [--subtype NAME] [--timeout SECONDS] [--rw-mount]
 *             [--gate PATH=FILE] [-f]
 *
 * It serves:
 *   /generation    "N\n"
 *   /data/hello    "hello from generation N\n"
 *   /sub/inner     "inner N\n"
 * plus whatever --tree adds. A SPEC is either "PATH=CONTENTS" (a regular file;
 * missing parent directories are created; "\n", "\t" and "\\" in CONTENTS are
 * unescaped and "{gen}" is replaced by N) or "PATH/" (an empty directory).
 *
 * Mount options: fsname=NAME (default "fh_testfs"), subtype=NAME (default
 * "fh_testfs", so the fstype is fuse.fh_testfs), allow_other, and ro unless
 * --rw-mount (the mount is then rw but every write still fails with EROFS).
 * Attribute and entry timeouts are --timeout seconds (default 1).
 *
 * --gate PATH=FILE holds every request for PATH or a path below it (a
 * lookup, getattr, open or readdir) until FILE (a path outside this
 * filesystem) exists, for up to 60 s; the first held request creates
 * FILE.held. A test uses it to stop a client (e.g. a healer probing the
 * path) at a known point, act, and let it go on by creating FILE. Other
 * paths are served meanwhile (libfuse's multi-threaded loop), except
 * lookups in the held path's parent directory: without FUSE_PARALLEL_DIROPS
 * (libfuse does not ask for it) the kernel runs one lookup per directory at
 * a time. Gate a path one level below the names others look up.
 *
 * It runs libfuse's multi-threaded loop (fuse_main without -s), daemonizes
 * unless -f is given, prints nothing on success, and keeps no state that a
 * SIGKILL or SIGSTOP at any moment could corrupt. SIGTERM, SIGINT or SIGHUP,
 * whenever it comes after the start, makes it unmount and exit with 0 (see
 * stop_on_signal).
 */
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE

#include <fuse.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct node {
    char* path;     /* absolute, "/" for the root, no trailing slash otherwise */
    int is_dir;
    char* contents; /* files only */
    size_t size;
};

static struct node* g_nodes;
static size_t g_count;
static size_t g_cap;
static double g_timeout = 1.0;
static struct timespec g_time;
static char* g_gate_path;  /* --gate PATH, normalized; NULL when unset */
static char* g_gate_file;  /* --gate FILE */

static void die(const char* msg) {
    fprintf(stderr, "fh_testfs: %s\n", msg);
    exit(2);
}

static void* xmalloc(size_t n) {
    void* p = malloc(n ? n : 1);
    if (!p) die("out of memory");
    return p;
}

static char* xstrdup(const char* s) {
    char* p = strdup(s);
    if (!p) die("out of memory");
    return p;
}

static struct node* find_node(const char* path) {
    for (size_t i = 0; i < g_count; i++)
        if (strcmp(g_nodes[i].path, path) == 0) return &g_nodes[i];
    return NULL;
}

/* Returns the parent of `path` in a new string ("/" for top-level names). */
static char* parent_of(const char* path) {
    const char* slash = strrchr(path, '/');
    if (!slash || slash == path) return xstrdup("/");
    size_t n = (size_t)(slash - path);
    char* p = xmalloc(n + 1);
    memcpy(p, path, n);
    p[n] = '\0';
    return p;
}

static void add_node(const char* path, int is_dir, const char* contents, size_t size);

/* ensure_dir and add_node recurse once per component of a path given on the
 * command line: bounded by the path's length. */
static void ensure_dir(const char* path) { /* NOLINT(misc-no-recursion): see above */
    struct node* n = find_node(path);
    if (n) {
        if (!n->is_dir) {
            fprintf(stderr, "fh_testfs: %s is a file, not a directory\n", path);
            exit(2);
        }
        return;
    }
    add_node(path, 1, NULL, 0);
}

static void add_node(const char* path, int is_dir, const char* contents, size_t size) { /* NOLINT(misc-no-recursion) */
    if (strcmp(path, "/") != 0) {
        char* parent = parent_of(path);
        ensure_dir(parent);
        free(parent);
    }
    struct node* existing = find_node(path);
    if (existing) {
        if (existing->is_dir && is_dir) return;
        if (existing->is_dir != is_dir) {
            fprintf(stderr, "fh_testfs: %s given both as a file and a directory\n", path);
            exit(2);
        }
        free(existing->contents);
        existing->contents = xmalloc(size + 1);
        memcpy(existing->contents, contents, size);
        existing->size = size;
        return;
    }
    if (g_count == g_cap) {
        g_cap = g_cap ? g_cap * 2 : 16;
        g_nodes = realloc(g_nodes, g_cap * sizeof *g_nodes);
        if (!g_nodes) die("out of memory");
    }
    struct node* n = &g_nodes[g_count++];
    n->path = xstrdup(path);
    n->is_dir = is_dir;
    n->contents = NULL;
    n->size = 0;
    if (!is_dir) {
        n->contents = xmalloc(size + 1);
        memcpy(n->contents, contents, size);
        n->size = size;
    }
}

/* Returns `path` normalized to "/a/b": leading slash added, duplicate and
 * trailing slashes removed. */
static char* normalize(const char* path) {
    size_t len = strlen(path);
    char* out = xmalloc(len + 2);
    size_t o = 0;
    out[o++] = '/';
    for (size_t i = 0; i < len; i++) {
        if (path[i] == '/' && out[o - 1] == '/') continue;
        out[o++] = path[i];
    }
    if (o > 1 && out[o - 1] == '/') o--;
    out[o] = '\0';
    return out;
}

static void add_file_printf(const char* path, const char* fmt, const char* gen) {
    char buf[512];
    int n = snprintf(buf, sizeof buf, fmt, gen);
    if (n < 0 || (size_t)n >= sizeof buf) die("generation too long");
    add_node(path, 0, buf, (size_t)n);
}

/* Unescapes \n, \t, \\ and substitutes {gen}. Returns a new string. */
static char* expand_contents(const char* s, const char* gen, size_t* out_len) {
    size_t cap = strlen(s) * (strlen(gen) + 1) + 1;
    char* out = xmalloc(cap);
    size_t o = 0;
    for (size_t i = 0; s[i];) {
        if (s[i] == '\\' && s[i + 1]) {
            char c = s[i + 1];
            if (c == 'n') c = '\n';
            else if (c == 't') c = '\t';
            out[o++] = c;
            i += 2;
        } else if (strncmp(s + i, "{gen}", 5) == 0) {
            memcpy(out + o, gen, strlen(gen));
            o += strlen(gen);
            i += 5;
        } else {
            out[o++] = s[i++];
        }
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

static void add_tree_spec(const char* spec, const char* gen) {
    const char* eq = strchr(spec, '=');
    if (eq) {
        char* raw = xmalloc((size_t)(eq - spec) + 1);
        memcpy(raw, spec, (size_t)(eq - spec));
        raw[eq - spec] = '\0';
        char* path = normalize(raw);
        free(raw);
        if (strcmp(path, "/") == 0) die("--tree: a file cannot be the root");
        size_t len = 0;
        char* contents = expand_contents(eq + 1, gen, &len);
        add_node(path, 0, contents, len);
        free(contents);
        free(path);
    } else {
        size_t len = strlen(spec);
        if (len == 0 || spec[len - 1] != '/') die("--tree SPEC must be PATH=CONTENTS or PATH/");
        char* path = normalize(spec);
        ensure_dir(path);
        free(path);
    }
}

/* ---- the gate ----------------------------------------------------------- */

/* Returns 1 when `path` is the gate's PATH or lies below it. */
static int gated(const char* path) {
    if (!g_gate_path) return 0;
    size_t n = strlen(g_gate_path);
    return strncmp(path, g_gate_path, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* Holds the calling request while `path` is gated and the gate's FILE does
 * not exist (polling every millisecond, up to 60 s). */
static void pass_gate(const char* path) {
    if (!gated(path)) return;
    char held[4096];
    int n = snprintf(held, sizeof held, "%s.held", g_gate_file);
    if (n > 0 && (size_t)n < sizeof held) {
        int fd = open(held, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0) close(fd);
    }
    for (int i = 0; i < 60000 && access(g_gate_file, F_OK) != 0; i++) {
        struct timespec ms = {0, 1000000}; /* 1 ms: up to 60 s in all */
        nanosleep(&ms, NULL);
    }
}

/* ---- Stopping on a signal ----------------------------------------------- */

/* Not through libfuse's own handlers (fuse_main installs them), which lose
 * a SIGTERM twice over. They are installed after the mount: a SIGTERM sent
 * as soon as the mount shows (a test that starts and stops at once) killed
 * the process, its mount left behind, stale. And the loop's main thread
 * checks for "exited" and then sleeps in sem_wait(): a handler that runs in
 * between leaves it asleep until another signal; ThreadSanitizer widens
 * that gap to the whole time since the thread's last intercepted call, as
 * it defers a handler to the next one (sem_wait itself), and 1 SIGTERM in
 * 100-200 was lost so. Instead the signals are blocked in every thread from
 * the start of main() (an early one waits, pending), this thread takes them
 * with sigwait(), has the loop exit, and interrupts the main thread's
 * sem_wait() with SIGUSR2 every 10 ms until the process is gone, so one of
 * them lands while it sleeps. */
static sigset_t g_stop_signals;
static pthread_t g_main_thread;

static void on_wake(int sig) { (void)sig; }

static void* stop_on_signal(void* fuse) {
    int sig = 0;
    while (sigwait(&g_stop_signals, &sig) != 0) {
    }
    fuse_exit(fuse);
    const struct timespec every = {0, 10L * 1000 * 1000}; /* 10 ms, in ns */
    for (;;) {
        pthread_kill(g_main_thread, SIGUSR2);
        nanosleep(&every, NULL);
    }
    return NULL;
}

/* Blocks the stop signals in this thread and in every thread it starts
 * (libfuse's), and makes SIGUSR2 interrupt a sleep without doing anything
 * else (no SA_RESTART: sem_wait() must fail with EINTR). */
static void block_stop_signals(void) {
    sigemptyset(&g_stop_signals);
    sigaddset(&g_stop_signals, SIGTERM);
    sigaddset(&g_stop_signals, SIGINT);
    sigaddset(&g_stop_signals, SIGHUP);
    if (pthread_sigmask(SIG_BLOCK, &g_stop_signals, NULL) != 0) die("pthread_sigmask failed");
    struct sigaction wake;
    memset(&wake, 0, sizeof wake);
    wake.sa_handler = on_wake;
    sigemptyset(&wake.sa_mask);
    if (sigaction(SIGUSR2, &wake, NULL) != 0) die("sigaction SIGUSR2 failed");
    g_main_thread = pthread_self();  /* the same in the child if fuse_main daemonizes */
}

/* ---- FUSE operations ---------------------------------------------------- */

static void* fs_init(struct fuse_conn_info* conn, struct fuse_config* cfg) {
    (void)conn;
    /* Here, not in main(): after fuse_main's daemonizing fork, if any, and
     * with the struct fuse to stop. */
    pthread_t stopper;
    if (pthread_create(&stopper, NULL, stop_on_signal, fuse_get_context()->fuse) != 0)
        die("cannot start the signal thread");
    pthread_detach(stopper);
    cfg->entry_timeout = g_timeout;
    cfg->attr_timeout = g_timeout;
    cfg->negative_timeout = g_timeout;
    cfg->use_ino = 0;
    return NULL;
}

static int fs_getattr(const char* path, struct stat* st, struct fuse_file_info* fi) {
    (void)fi;
    pass_gate(path);
    struct node* n = find_node(path);
    if (!n) return -ENOENT;
    memset(st, 0, sizeof *st);
    st->st_uid = 0;
    st->st_gid = 0;
    st->st_atim = st->st_mtim = st->st_ctim = g_time;
    if (n->is_dir) {
        st->st_mode = S_IFDIR | 0555;
        st->st_nlink = 2;
    } else {
        st->st_mode = S_IFREG | 0444;
        st->st_nlink = 1;
        st->st_size = (off_t)n->size;
    }
    return 0;
}

static int fs_readdir(const char* path, void* buf, fuse_fill_dir_t fill, off_t off,
                      struct fuse_file_info* fi, enum fuse_readdir_flags flags) {
    (void)off;
    (void)fi;
    (void)flags;
    pass_gate(path);
    struct node* dir = find_node(path);
    if (!dir) return -ENOENT;
    if (!dir->is_dir) return -ENOTDIR;
    fill(buf, ".", NULL, 0, 0);
    fill(buf, "..", NULL, 0, 0);
    for (size_t i = 0; i < g_count; i++) {
        struct node* n = &g_nodes[i];
        if (strcmp(n->path, "/") == 0) continue;
        char* parent = parent_of(n->path);
        int match = strcmp(parent, path) == 0;
        free(parent);
        if (match) fill(buf, strrchr(n->path, '/') + 1, NULL, 0, 0);
    }
    return 0;
}

static int fs_open(const char* path, struct fuse_file_info* fi) {
    pass_gate(path);
    struct node* n = find_node(path);
    if (!n) return -ENOENT;
    if (n->is_dir) return -EISDIR;
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) return -EROFS;
    return 0;
}

static int fs_read(const char* path, char* buf, size_t size, off_t off, struct fuse_file_info* fi) {
    (void)fi;
    struct node* n = find_node(path);
    if (!n) return -ENOENT;
    if (n->is_dir) return -EISDIR;
    if (off < 0 || (size_t)off >= n->size) return 0;
    size_t len = n->size - (size_t)off;
    if (len > size) len = size;
    memcpy(buf, n->contents + off, len);
    return (int)len;
}

static int fs_statfs(const char* path, struct statvfs* st) {
    (void)path;
    memset(st, 0, sizeof *st);
    st->f_bsize = 4096;
    st->f_frsize = 4096;
    st->f_files = g_count;
    st->f_namemax = 255;
    return 0;
}

static int fs_access(const char* path, int mask) {
    struct node* n = find_node(path);
    if (!n) return -ENOENT;
    if (mask & W_OK) return -EROFS;
    return 0;
}

/* Every modification fails with EROFS, whether or not the mount is ro. */
static int ro_path(const char* p) { (void)p; return -EROFS; }
static int ro_mknod(const char* p, mode_t m, dev_t d) { (void)p; (void)m; (void)d; return -EROFS; }
static int ro_mkdir(const char* p, mode_t m) { (void)p; (void)m; return -EROFS; }
static int ro_two(const char* a, const char* b) { (void)a; (void)b; return -EROFS; }
static int ro_rename(const char* a, const char* b, unsigned int f) { (void)a; (void)b; (void)f; return -EROFS; }
static int ro_chmod(const char* p, mode_t m, struct fuse_file_info* fi) { (void)p; (void)m; (void)fi; return -EROFS; }
static int ro_chown(const char* p, uid_t u, gid_t g, struct fuse_file_info* fi) {
    (void)p; (void)u; (void)g; (void)fi; return -EROFS;
}
static int ro_truncate(const char* p, off_t o, struct fuse_file_info* fi) { (void)p; (void)o; (void)fi; return -EROFS; }
static int ro_write(const char* p, const char* b, size_t s, off_t o, struct fuse_file_info* fi) {
    (void)p; (void)b; (void)s; (void)o; (void)fi; return -EROFS;
}
static int ro_create(const char* p, mode_t m, struct fuse_file_info* fi) { (void)p; (void)m; (void)fi; return -EROFS; }
static int ro_utimens(const char* p, const struct timespec tv[2], struct fuse_file_info* fi) {
    (void)p; (void)tv; (void)fi; return -EROFS;
}
static int ro_setxattr(const char* p, const char* n, const char* v, size_t s, int f) {
    (void)p; (void)n; (void)v; (void)s; (void)f; return -EROFS;
}
static int ro_removexattr(const char* p, const char* n) { (void)p; (void)n; return -EROFS; }

static const struct fuse_operations ops = {
    .init = fs_init,
    .getattr = fs_getattr,
    .readdir = fs_readdir,
    .open = fs_open,
    .read = fs_read,
    .statfs = fs_statfs,
    .access = fs_access,
    .mknod = ro_mknod,
    .mkdir = ro_mkdir,
    .unlink = ro_path,
    .rmdir = ro_path,
    .symlink = ro_two,
    .rename = ro_rename,
    .link = ro_two,
    .chmod = ro_chmod,
    .chown = ro_chown,
    .truncate = ro_truncate,
    .write = ro_write,
    .create = ro_create,
    .utimens = ro_utimens,
    .setxattr = ro_setxattr,
    .removexattr = ro_removexattr,
};

static void usage(void) {
    fprintf(stderr,
            "usage: fh_testfs MOUNTPOINT --generation N [--tree PATH=CONTENTS|PATH/]...\n"
            "                 [--fsname NAME] [--subtype NAME] [--timeout SECONDS]\n"
            "                 [--rw-mount] [--gate PATH=FILE] [-f]\n");
    exit(2);
}

int main(int argc, char* argv[]) {
    const char* mountpoint = NULL;
    const char* generation = NULL;
    const char* fsname = "fh_testfs";
    const char* subtype = "fh_testfs";
    int rw_mount = 0;
    int foreground = 0;
    const char** trees = xmalloc(sizeof(char*) * (size_t)argc);
    size_t ntrees = 0;

    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
#define NEED_VALUE() do { if (i + 1 >= argc) usage(); } while (0)
        if (strcmp(a, "--generation") == 0) { NEED_VALUE(); generation = argv[++i]; }
        else if (strcmp(a, "--tree") == 0) { NEED_VALUE(); trees[ntrees++] = argv[++i]; }
        else if (strcmp(a, "--fsname") == 0) { NEED_VALUE(); fsname = argv[++i]; }
        else if (strcmp(a, "--subtype") == 0) { NEED_VALUE(); subtype = argv[++i]; }
        else if (strcmp(a, "--timeout") == 0) {
            NEED_VALUE();
            char* end = NULL;
            g_timeout = strtod(argv[++i], &end);
            if (!end || *end || g_timeout < 0) usage();
        }
        else if (strcmp(a, "--rw-mount") == 0) rw_mount = 1;
        else if (strcmp(a, "--gate") == 0) {
            NEED_VALUE();
            const char* spec = argv[++i];
            const char* eq = strchr(spec, '=');
            if (!eq || eq == spec || !eq[1]) usage();
            char* raw = xmalloc((size_t)(eq - spec) + 1);
            memcpy(raw, spec, (size_t)(eq - spec));
            raw[eq - spec] = '\0';
            g_gate_path = normalize(raw);
            free(raw);
            g_gate_file = xstrdup(eq + 1);
        }
        else if (strcmp(a, "-f") == 0) foreground = 1;
        else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) usage();
        else if (a[0] == '-') { fprintf(stderr, "fh_testfs: unknown option %s\n", a); usage(); }
        else if (!mountpoint) mountpoint = a;
        else { fprintf(stderr, "fh_testfs: unexpected argument %s\n", a); usage(); }
#undef NEED_VALUE
    }
    if (!mountpoint || !generation) usage();
    if (strchr(fsname, ',') || strchr(subtype, ',')) die("--fsname and --subtype must not contain ','");

    block_stop_signals();
    clock_gettime(CLOCK_REALTIME, &g_time);
    add_node("/", 1, NULL, 0);
    add_file_printf("/generation", "%s\n", generation);
    add_file_printf("/data/hello", "hello from generation %s\n", generation);
    add_file_printf("/sub/inner", "inner %s\n", generation);
    for (size_t i = 0; i < ntrees; i++) add_tree_spec(trees[i], generation);
    free(trees);

    char opts[1024];
    int n = snprintf(opts, sizeof opts, "fsname=%s,subtype=%s,allow_other%s", fsname, subtype,
                     rw_mount ? "" : ",ro");
    if (n < 0 || (size_t)n >= sizeof opts) die("mount options too long");

    char* fargv[10];
    int fargc = 0;
    fargv[fargc++] = argv[0];
    fargv[fargc++] = (char*)mountpoint;
    fargv[fargc++] = "-o";
    fargv[fargc++] = opts;
    /* libfuse 3.14 warns "Ignoring invalid max threads value 4294967295" when
     * a pre-3.12 API user leaves this unset (libfuse issue #1003). */
    fargv[fargc++] = "-o";
    fargv[fargc++] = "max_idle_threads=10";
    if (foreground) fargv[fargc++] = "-f";
    fargv[fargc] = NULL;
    return fuse_main(fargc, fargv, &ops, NULL);
}
