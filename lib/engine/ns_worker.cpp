#include "engine/ns_worker.h"

#include <sched.h>

namespace fh {

Status NamespaceWorkers::Entry::enter(int ns_fd) {
    if (::setns(ns_fd, CLONE_NEWNS) != 0) return errno_error("setns into mount namespace");
    entered_ = true;
    return {};
}

NamespaceWorkers::NamespaceWorkers(std::size_t threads) {
    home_ns_.reset(::open("/proc/thread-self/ns/mnt", O_RDONLY | O_CLOEXEC));
    if (!home_ns_.valid()) broken_ = errno_error("open", "/proc/thread-self/ns/mnt");
    std::unique_lock<std::mutex> lock(mu_);
    healthy_threads_ = threads == 0 ? 1 : threads;
    for (std::size_t i = 0; i < healthy_threads_; ++i) threads_.emplace_back([this] { main(); });
}

NamespaceWorkers::~NamespaceWorkers() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
    }
    work_cv_.notify_all();
    for (std::thread& t : threads_) t.join();
}

void NamespaceWorkers::main() {
    Status setup;
    if (::unshare(CLONE_FS) != 0) setup = errno_error("unshare CLONE_FS");
    std::unique_lock<std::mutex> lock(mu_);
    if (!setup || !broken_) {
        if (broken_) broken_ = setup;
        --healthy_threads_;
        done_cv_.notify_all();
        return;
    }
    for (;;) {
        work_cv_.wait(lock, [&] { return stop_ || (jobs_ && next_job_ < jobs_->size()); });
        if (stop_) return;
        const std::size_t i = next_job_++;
        const Job& job = (*jobs_)[i];
        lock.unlock();
        Entry entry;
        Status r = job(entry);
        Status home;
        if (entry.entered_ && ::setns(home_ns_.get(), CLONE_NEWNS) != 0)
            home = errno_error("setns back into the daemon's mount namespace");
        lock.lock();
        (*results_)[i] = std::move(r);
        --jobs_left_;
        if (!home) {
            // This thread is stranded in another namespace: it must not run
            // a job meant for the daemon's.
            broken_ = home;
            --healthy_threads_;
            done_cv_.notify_all();
            return;
        }
        // The caller waits for the last job only: waking it after each one
        // (200 times per heal of a source in scale_bench) made it compete
        // with the workers for the CPUs, for nothing.
        if (jobs_left_ == 0) done_cv_.notify_all();
    }
}

std::vector<Status> NamespaceWorkers::run_all(const std::vector<Job>& jobs) {
    std::vector<Status> results(jobs.size());
    if (jobs.empty()) return results;
    std::unique_lock<std::mutex> lock(mu_);
    jobs_ = &jobs;
    results_ = &results;
    next_job_ = 0;
    jobs_left_ = jobs.size();
    work_cv_.notify_all();
    done_cv_.wait(lock, [&] { return jobs_left_ == 0 || healthy_threads_ == 0; });
    // No thread left to run them: every job not started gets the reason.
    for (std::size_t i = next_job_; i < jobs.size(); ++i) results[i] = broken_;
    next_job_ = jobs.size();
    jobs_ = nullptr;
    results_ = nullptr;
    return results;
}

} // namespace fh
