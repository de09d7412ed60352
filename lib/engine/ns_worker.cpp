#include "engine/ns_worker.h"

#include <sched.h>

namespace fh {

NamespaceWorker::NamespaceWorker() {
    home_ns_.reset(::open("/proc/thread-self/ns/mnt", O_RDONLY | O_CLOEXEC));
    if (!home_ns_.valid()) broken_ = errno_error("open", "/proc/thread-self/ns/mnt");
    thread_ = std::thread([this] { main(); });
}

NamespaceWorker::~NamespaceWorker() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
}

void NamespaceWorker::main() {
    Status setup;
    if (::unshare(CLONE_FS) != 0) setup = errno_error("unshare CLONE_FS");
    std::unique_lock<std::mutex> lock(mu_);
    if (!setup && broken_) broken_ = setup;
    for (;;) {
        cv_.wait(lock, [&] { return stop_ || (job_ && !job_done_); });
        if (stop_) return;
        Status r;
        if (!broken_) {
            r = broken_;
        } else if (::setns(job_ns_fd_, CLONE_NEWNS) != 0) {
            r = errno_error("setns into mount namespace");
        } else {
            r = (*job_)();
            if (::setns(home_ns_.get(), CLONE_NEWNS) != 0)
                broken_ = errno_error("setns back into the daemon's mount namespace");
        }
        result_ = r;
        job_done_ = true;
        cv_.notify_all();
    }
}

Status NamespaceWorker::run_in(int ns_fd, const std::function<Status()>& fn) {
    std::unique_lock<std::mutex> lock(mu_);
    job_ = &fn;
    job_ns_fd_ = ns_fd;
    job_done_ = false;
    cv_.notify_all();
    cv_.wait(lock, [&] { return job_done_; });
    job_ = nullptr;
    return result_;
}

} // namespace fh
