// The blocker child of the hang phase: thousands of threads, each stuck in
// its own request to a stopped FUSE daemon.
#include <pthread.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "campaign.h"

namespace fh::campaign {

namespace {

struct Job {
    std::string path;
};

void* block_one(void* arg) {
    auto* job = static_cast<Job*>(arg);
    // A GETATTR of its own per thread: statx(AT_STATX_FORCE_SYNC) of a
    // mount's root asks the FUSE daemon every time and takes no lock. (A
    // LOOKUP would not do: without parallel directory operations, which
    // fh_testfs does not ask for, the kernel sends one lookup per directory
    // at a time and the other threads wait on the directory's lock.)
    struct statx stx {};
    (void)::statx(AT_FDCWD, job->path.c_str(), AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, &stx);
    return nullptr;
}

}  // namespace

int run_blocker(int argc, char** argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: fh_fault_campaign --block THREADS DIR...\n");
        return 64;
    }
    const int threads = std::atoi(argv[2]);
    std::vector<std::string> dirs(argv + 3, argv + argc);
    std::vector<Job> jobs(static_cast<std::size_t>(threads));
    std::vector<pthread_t> ids;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (int i = 0; i < threads; ++i) {
        jobs[static_cast<std::size_t>(i)].path = dirs[static_cast<std::size_t>(i) % dirs.size()];
        pthread_t t;
        if (pthread_create(&t, &attr, block_one, &jobs[static_cast<std::size_t>(i)]) != 0) {
            std::fprintf(stderr, "blocker: pthread_create failed after %d threads\n", i);
            break;
        }
        ids.push_back(t);
    }
    std::printf("started %zu\n", ids.size());
    std::fflush(stdout);
    for (pthread_t t : ids) pthread_join(t, nullptr);
    std::printf("all %zu returned\n", ids.size());
    return 0;
}

}  // namespace fh::campaign
