// Threads that can enter other mount namespaces. setns(CLONE_NEWNS) refuses
// a thread that shares its fs_struct (root, cwd) with another thread, which
// every std::thread does; each of these threads calls unshare(CLONE_FS)
// first and never creates threads, so it may switch namespaces and come back.
//
// Several threads, because a heal in a container is mostly waiting: the
// detach of the stale mount ends in an RCU grace period (umount2 MNT_DETACH:
// 76 us p50, 217 us p90 of a ~190 us action at scale, docs/PERFORMANCE.md),
// during which another thread can act in another namespace.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "core/error.h"
#include "engine/sys.h"

namespace fh {

class NamespaceWorkers {
public:
    // Handed to a job: moves the job's thread into a mount namespace. The
    // thread goes back to the daemon's namespace after the job, whatever
    // the job did.
    class Entry {
    public:
        // Returns ok once the calling job's thread is in the namespace of
        // `ns_fd` (an open /proc/<pid>/ns/mnt), or the setns Error.
        Status enter(int ns_fd);

    private:
        friend class NamespaceWorkers;
        bool entered_ = false;
    };
    using Job = std::function<Status(Entry&)>;

    // Starts `threads` threads (at least 1).
    explicit NamespaceWorkers(std::size_t threads);
    ~NamespaceWorkers();
    NamespaceWorkers(const NamespaceWorkers&) = delete;
    NamespaceWorkers& operator=(const NamespaceWorkers&) = delete;

    // Runs every job, spread over the threads: each starts in the daemon's
    // mount namespace (so it can open host paths first) and may enter
    // another one through its Entry. Blocks until all are done. Returns the
    // jobs' Statuses in the jobs' order; a job not run because its thread
    // could not set itself up or return home gets that Error. Jobs must not
    // create threads. Not reentrant: one caller at a time.
    std::vector<Status> run_all(const std::vector<Job>& jobs);

    // Returns the number of threads.
    std::size_t size() const { return threads_.size(); }

private:
    void main();

    std::mutex mu_;
    std::condition_variable work_cv_;  // a job was queued, or stop
    std::condition_variable done_cv_;  // a job finished
    const std::vector<Job>* jobs_ = nullptr;
    std::vector<Status>* results_ = nullptr;
    std::size_t next_job_ = 0;
    std::size_t jobs_left_ = 0;
    bool stop_ = false;
    // Set when a thread could not set itself up (unshare) or return home
    // (setns back): such a thread takes no more jobs; if none is left,
    // run_all fails every job with it.
    Status broken_;
    std::size_t healthy_threads_ = 0;
    sys::UniqueFd home_ns_;
    std::vector<std::thread> threads_;
};

} // namespace fh
