#include "engine/liveness.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <thread>

#include "core/fuse_servers.h"
#include "engine/sys.h"

#ifndef AT_STATX_FORCE_SYNC
#define AT_STATX_FORCE_SYNC 0x2000
#endif

namespace fh {

FusectlReading read_fusectl(const std::string& fusectl_dir, dev_t device) {
    FusectlReading r;
    // The directory is named after the kernel's internal dev_t of the
    // superblock (major << 20 | minor): for FUSE's anonymous devices (major
    // 0) the minor, for fuseblk the block device's number.
    const std::string dir = fusectl_dir + "/" + std::to_string(connection_id(device));
    auto maxbg = sys::read_small_file(dir + "/max_background");
    if (!maxbg) return r;
    r.present = true;
    r.aborted = std::strtoul(maxbg->c_str(), nullptr, 10) == 4294967295UL;
    if (auto w = sys::read_small_file(dir + "/waiting")) r.waiting = std::strtoul(w->c_str(), nullptr, 10);
    return r;
}

namespace {

// Reads max_background from `dir_fd` (AT_FDCWD for an absolute name).
std::optional<bool> read_aborted_at(int dir_fd, const std::string& name) {
    sys::UniqueFd fd(::openat(dir_fd, name.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return std::nullopt;
    char buf[32];
    ssize_t n;
    do n = ::read(fd.get(), buf, sizeof buf - 1);
    while (n < 0 && errno == EINTR);
    if (n <= 0) return std::nullopt;
    buf[n] = '\0';
    return std::strtoul(buf, nullptr, 10) == 4294967295UL;
}

} // namespace

std::optional<bool> fusectl_aborted(const std::string& fusectl_dir, dev_t device) {
    return read_aborted_at(AT_FDCWD, fusectl_dir + "/" + std::to_string(connection_id(device)) + "/max_background");
}

std::optional<bool> fusectl_aborted_at(int fusectl_dir_fd, dev_t device) {
    return read_aborted_at(fusectl_dir_fd, std::to_string(connection_id(device)) + "/max_background");
}

Status abort_fuse_connection(const std::string& fusectl_dir, dev_t device) {
    const std::string path = fusectl_dir + "/" + std::to_string(connection_id(device)) + "/abort";
    sys::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd.valid()) return errno_error("open", path);
    // Any write aborts; the content is ignored.
    if (::write(fd.get(), "1", 1) != 1) return errno_error("write", path);
    return {};
}

struct LivenessProber::Job {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    bool waited_out = false;  // a caller gave up on it
    int err = 0;              // statx errno, 0 on success
};

LivenessProber::LivenessProber(KernelFeatures features, std::chrono::microseconds probe_timeout,
                               std::function<void()> on_late_result)
    : features_(std::move(features)), timeout_(probe_timeout), registry_(std::make_shared<Registry>()) {
    registry_->on_late_result = std::move(on_late_result);
}

LivenessProber::~LivenessProber() {
    std::lock_guard<std::mutex> lock(registry_->mu);
    registry_->on_late_result = nullptr;  // threads that outlive us must not call back
}

void LivenessProber::set_probe_timeout(std::chrono::microseconds t) {
    std::lock_guard<std::mutex> lock(timeout_mu_);
    timeout_ = t;
}

std::chrono::microseconds LivenessProber::timeout() const {
    std::lock_guard<std::mutex> lock(timeout_mu_);
    return timeout_;
}

std::shared_ptr<LivenessProber::Job> LivenessProber::start_statx(const std::string& key, const std::string& path) {
    std::lock_guard<std::mutex> lock(registry_->mu);
    if (auto it = registry_->inflight.find(key); it != registry_->inflight.end()) return it->second;
    auto job = std::make_shared<Job>();
    registry_->inflight[key] = job;
    // Detached: a statx on a hung daemon may never return; the thread then
    // lives until the daemon dies or answers (FUSE requests are killable).
    std::thread([reg = registry_, job, key, path] {
        struct statx stx {};
        int rc = ::statx(AT_FDCWD, path.c_str(), AT_SYMLINK_NOFOLLOW | AT_STATX_FORCE_SYNC, STATX_TYPE, &stx);
        int err = rc == 0 ? 0 : errno;
        bool notify = false;
        {
            std::lock_guard<std::mutex> l(job->mu);
            job->done = true;
            job->err = err;
            notify = job->waited_out;
        }
        job->cv.notify_all();
        std::lock_guard<std::mutex> l(reg->mu);
        if (auto it = reg->inflight.find(key); it != reg->inflight.end() && it->second == job)
            reg->inflight.erase(it);
        // Called under the lock, so it cannot race the prober's destructor
        // clearing it; the callback only wakes the loop (uv_async_send).
        if (notify && reg->on_late_result) reg->on_late_result();
    }).detach();
    return job;
}

LivenessMap LivenessProber::check(const std::vector<std::pair<dev_t, std::string>>& mounts) {
    LivenessMap out;
    std::vector<std::pair<dev_t, std::shared_ptr<Job>>> jobs;
    for (const auto& [dev, path] : mounts) {
        if (out.count(dev)) continue;
        if (features_.fusectl) {
            FusectlReading r = read_fusectl(features_.fusectl_dir, dev);
            if (r.present && r.aborted) {
                out[dev] = Liveness::Dead;
                continue;
            }
            // Alive by the marker; only pending requests make a hang
            // possible, and only then is a statx probe worth its thread.
            if (r.present && r.waiting == 0) {
                out[dev] = Liveness::Alive;
                continue;
            }
        }
        out[dev] = Liveness::Unknown;
        jobs.emplace_back(dev, start_statx("dev:" + std::to_string(dev), path));
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout();
    for (auto& [dev, job] : jobs) {
        std::unique_lock<std::mutex> l(job->mu);
        // A probe that already timed out once is still stuck: the daemon is
        // hung, and waiting for it again would delay every other heal.
        if (job->waited_out && !job->done) {
            out[dev] = Liveness::Unresponsive;
            continue;
        }
        // The binding is captured by name: clang 14 (clang-tidy) cannot capture a
        // structured binding implicitly (C++20's P1091, clang 16).
        if (!job->cv.wait_until(l, deadline, [&job = job] { return job->done; })) {
            job->waited_out = true;
            out[dev] = Liveness::Unresponsive;
            continue;
        }
        out[dev] = (job->err == ENOTCONN || job->err == ECONNABORTED) ? Liveness::Dead : Liveness::Alive;
    }
    return out;
}

Liveness LivenessProber::fusectl_state(dev_t device) const {
    if (!features_.fusectl) return Liveness::Unknown;
    // max_background alone tells an aborted connection (one read; `waiting`,
    // which read_fusectl also reads, is only for the hung-daemon check).
    const std::optional<bool> aborted = fusectl_aborted(features_.fusectl_dir, device);
    if (!aborted) return Liveness::Unknown;
    return *aborted ? Liveness::Dead : Liveness::Alive;
}

LivenessProber::Probe LivenessProber::start_probe(const std::string& path) {
    Probe p;
    p.started_ = std::chrono::steady_clock::now();
    p.path_ = path;
    p.job_ = start_statx("path:" + path, path);
    return p;
}

Status LivenessProber::wait_probe(const Probe& probe) {
    Job& job = *probe.job_;
    std::unique_lock<std::mutex> l(job.mu);
    if ((job.waited_out && !job.done) || !job.cv.wait_for(l, timeout(), [&] { return job.done; })) {
        job.waited_out = true;
        return Error{"probe", probe.path_, ETIMEDOUT, "the FUSE daemon did not answer within the probe timeout"};
    }
    if (job.err != 0) return Error{"probe", probe.path_, job.err, {}};
    return {};
}

Status LivenessProber::probe_path(const std::string& path) { return wait_probe(start_probe(path)); }

} // namespace fh
