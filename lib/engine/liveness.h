// Death detection that never blocks the caller on a FUSE filesystem.
//
// Preferred: the fuse control filesystem. <fusectl>/<minor>/max_background
// reads 4294967295 once a connection is aborted (its daemon died), and
// reading it never touches the FUSE filesystem. Fallback (no fusectl):
// statx(AT_STATX_FORCE_SYNC) of a mountpoint, which fails at once with
// ECONNABORTED/ENOTCONN on a dead connection; plain stat() could answer from
// the attribute cache for ~1 s, so it is never used. A statx on a hung daemon
// blocks, so every statx runs on its own thread and the caller waits at most
// `probe_timeout`; a probe that times out means Unresponsive, not Dead.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/planner.h"
#include "engine/kernel_features.h"

namespace fh {

// What the fusectl directory of one connection says.
struct FusectlReading {
    bool present = false;  // the <minor> directory exists
    bool aborted = false;  // max_background == 4294967295
    unsigned long waiting = 0;  // requests waiting for the daemon
};

// Returns the fusectl reading for `device` under `fusectl_dir`.
FusectlReading read_fusectl(const std::string& fusectl_dir, dev_t device);

// Returns whether the connection of `device` is aborted (max_background
// reads 4294967295), or nullopt when fusectl has no such connection (its
// superblock is gone). One open, one read and one close, nothing else: the
// death watch calls it between a pidfd's wake-up and the outage's log line.
std::optional<bool> fusectl_aborted(const std::string& fusectl_dir, dev_t device);
// The same, with fusectl's directory given as an open fd (O_PATH is
// enough): the name is resolved from it, so a thread inside a container's
// mount namespace, where no fusectl is mounted, reads the daemon's.
std::optional<bool> fusectl_aborted_at(int fusectl_dir_fd, dev_t device);

// Aborts the FUSE connection of `device` (writes to <fusectl_dir>/<id>/abort),
// as `echo 1 > .../abort` would: every request pending or to come fails with
// ECONNABORTED and the connection reads as dead. Returns an Error naming the
// file and errno.
Status abort_fuse_connection(const std::string& fusectl_dir, dev_t device);

class LivenessProber {
public:
    // `on_late_result` is called (from a probe thread) when a probe that had
    // timed out finishes later: the daemon woke up, so liveness changed.
    LivenessProber(KernelFeatures features, std::chrono::microseconds probe_timeout,
                   std::function<void()> on_late_result);
    ~LivenessProber();

    // Returns the liveness of each device; `mounts` pairs a device with a
    // host path where it is the topmost mount. Waits at most probe_timeout
    // in total, however many probes hang.
    LivenessMap check(const std::vector<std::pair<dev_t, std::string>>& mounts);

    // Returns what fusectl says of `device` without touching any mount:
    // Dead (aborted), Alive, or Unknown when fusectl is not in use or has no
    // connection of that number.
    Liveness fusectl_state(dev_t device) const;

    // Returns ok when statx(FORCE_SYNC) of `path` succeeds within the probe
    // timeout; else an Error (ETIMEDOUT when it hangs, the statx errno
    // otherwise, e.g. ENOENT for a missing subdirectory).
    Status probe_path(const std::string& path);

private:
    struct Job;  // one statx thread's result

public:
    // A probe_path split in two, so that other work can overlap the FUSE
    // round trip (see Engine::fire_armed_heals).
    class Probe {
    public:
        const std::string& path() const { return path_; }
        std::chrono::steady_clock::time_point started() const { return started_; }

    private:
        friend class LivenessProber;
        std::shared_ptr<Job> job_;
        std::string path_;
        std::chrono::steady_clock::time_point started_;
    };
    // Starts a statx(FORCE_SYNC) probe of `path` on its own thread; returns
    // its handle at once.
    Probe start_probe(const std::string& path);
    // Waits for `probe`, at most the probe timeout from now. Returns what
    // probe_path would have (the same result on every call).
    Status wait_probe(const Probe& probe);

    void set_probe_timeout(std::chrono::microseconds t);

    // Returns "fusectl" or "statx": the death detection in use.
    const char* method() const { return features_.fusectl ? "fusectl" : "statx"; }

private:
    // Shared with the probe threads, which may outlive the prober when a
    // daemon hangs forever.
    struct Registry {
        std::mutex mu;
        std::map<std::string, std::shared_ptr<Job>> inflight;  // probes not yet finished
        std::function<void()> on_late_result;
    };
    std::shared_ptr<Job> start_statx(const std::string& key, const std::string& path);
    std::chrono::microseconds timeout() const;

    KernelFeatures features_;
    std::chrono::microseconds timeout_;
    mutable std::mutex timeout_mu_;
    std::shared_ptr<Registry> registry_;
};

} // namespace fh
