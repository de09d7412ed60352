// fh_run_as: runs fuse-healerd (FH_DAEMON_PATH) with the arguments given,
// as the uid and gid in the environment variable FH_RUN_AS_UID, keeping
// every capability root has (as ambient capabilities, so that they survive
// the exec). The daemon then works as under root, while the kernel charges
// its per-user resources (inotify instances and watches, ...) to that uid:
// a test can exhaust them by holding them under the same uid elsewhere,
// without touching root's (every other test's) or a global sysctl.
//
// Used through fh::test::Daemon(sb, FH_RUN_AS_PATH): the harness runs
// `fh_run_as --config FILE ...`. Exits 126 when a step fails, with the
// reason on stderr.
#include <linux/capability.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#ifndef FH_DAEMON_PATH
#define FH_DAEMON_PATH ""
#endif

namespace {

[[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr, "fh_run_as: %s: %s\n", what.c_str(), std::strerror(errno));
    std::_Exit(126);
}

}  // namespace

int main(int /*argc*/, char** argv) {
    const char* uid_text = std::getenv("FH_RUN_AS_UID");
    if (!uid_text || !*uid_text) {
        errno = EINVAL;
        fail("FH_RUN_AS_UID is not set");
    }
    const auto uid = static_cast<uid_t>(std::strtoul(uid_text, nullptr, 10));
    const std::string daemon = FH_DAEMON_PATH;
    if (daemon.empty()) {
        errno = ENOENT;
        fail("fuse-healerd was not built");
    }
    int last_cap = 40;
    std::ifstream("/proc/sys/kernel/cap_last_cap") >> last_cap;

    // Keep the permitted set across the uid change (the effective set is
    // cleared by it and raised again below).
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) fail("PR_SET_KEEPCAPS");
    if (setgroups(0, nullptr) != 0) fail("setgroups");
    if (setresgid(uid, uid, uid) != 0) fail("setresgid");
    if (setresuid(uid, uid, uid) != 0) fail("setresuid");
    // A credential change clears the parent-death signal the harness set.
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail("PR_SET_PDEATHSIG");

    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    if (syscall(SYS_capget, &header, data) != 0) fail("capget");
    for (int i = 0; i < 2; ++i) {
        data[i].effective = data[i].permitted;
        data[i].inheritable = data[i].permitted;
    }
    if (syscall(SYS_capset, &header, data) != 0) fail("capset");
    for (int cap = 0; cap <= last_cap; ++cap) {
        if (!(data[cap / 32].permitted & (1u << (cap % 32)))) continue;
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0)
            fail("PR_CAP_AMBIENT_RAISE " + std::to_string(cap));
    }
    argv[0] = const_cast<char*>(daemon.c_str());
    execv(daemon.c_str(), argv);
    fail("exec " + daemon);
}
