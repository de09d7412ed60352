// A thread that can enter other mount namespaces. setns(CLONE_NEWNS) refuses
// a thread that shares its fs_struct (root, cwd) with another thread, which
// every std::thread does; this thread calls unshare(CLONE_FS) first and never
// creates threads, so it may switch namespaces and come back.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "engine/sys.h"

namespace fh {

class NamespaceWorker {
public:
    NamespaceWorker();
    ~NamespaceWorker();
    NamespaceWorker(const NamespaceWorker&) = delete;
    NamespaceWorker& operator=(const NamespaceWorker&) = delete;

    // Runs `fn` on the worker thread inside the mount namespace `ns_fd` (an
    // open /proc/<pid>/ns/mnt), then returns the thread to the daemon's
    // namespace. Blocks the caller until done. Returns fn's Status, or an
    // Error when entering the namespace failed. `fn` must not create threads.
    Status run_in(int ns_fd, const std::function<Status()>& fn);

private:
    void main();

    std::mutex mu_;
    std::condition_variable cv_;
    const std::function<Status()>* job_ = nullptr;
    int job_ns_fd_ = -1;
    Status result_;
    bool job_done_ = false;
    bool stop_ = false;
    Status broken_;  // set when the thread could not set itself up or return home
    sys::UniqueFd home_ns_;
    std::thread thread_;
};

} // namespace fh
