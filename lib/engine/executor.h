// Carries out one HealAction with real mount syscalls. Decisions are the
// planner's; the executor only re-checks, right before acting, that the
// stale mount it was told about is still the topmost mount at the path (a pod
// being deleted must not get its mount back), and resolves paths without
// following symlinks.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/planner.h"
#include "engine/kernel_features.h"
#include "engine/ns_worker.h"
#include "engine/sys.h"

namespace fh {

class Executor {
public:
    // `root_dir` is <root_dir> of the kubelet: no host action may touch a
    // path outside it.
    Executor(KernelFeatures features, std::string root_dir);

    // Returns ok when the action was carried out, or an Error saying which
    // step failed on which path. ESTALE means the mountpoint no longer holds
    // the expected mount (nothing was changed).
    Status execute(const HealAction& action);

    // What one action of execute_in_namespaces did, and when.
    struct NamespaceOutcome {
        Status status;  // as execute() would return it, or the gate's refusal
        // From the call to the action's start: when it may change mounts
        // (its gate passed), or when it failed before.
        std::chrono::steady_clock::duration started{};
        std::chrono::steady_clock::duration took{};  // the action's own time from `started`
        bool refused_at_gate = false;                // status is the gate's: nothing was changed
    };
    // Asked by an action of execute_in_namespaces once everything before
    // its first change is done (the checks, the clone, the setns), from the
    // worker thread: ok lets it go on; an Error stops it with nothing
    // changed, and becomes its status. Called from several threads at once.
    using Gate = std::function<Status(const HealAction&)>;
    // Carries out actions in other mount namespaces (none in_host()) at
    // the same time, on kNamespaceWorkerThreads threads: nothing orders
    // them, so they must not depend on each other (the engine passes at
    // most one per namespace). Each waits for `gate`, when given, right
    // before its first change. Returns each one's outcome, in order.
    std::vector<NamespaceOutcome> execute_in_namespaces(const std::vector<const HealAction*>& actions,
                                                        const Gate& gate = {});
    static constexpr std::size_t kNamespaceWorkerThreads = 4;

    // Returns an O_PATH fd of the stale mount at the host action's
    // mountpoint (resolved without following symlinks, inside <root_dir>),
    // after checking it belongs to the action's dead superblock; or an
    // Error. Held across a heal, the fd keeps that superblock, and with it
    // its device number, alive after the stale mount is detached: the
    // kernel cannot hand the number to another filesystem while the engine
    // still looks for copies of the dead one by that number.
    // With `keep_peer_group` (and open_tree, Linux 5.2), the fd is a
    // detached clone of that mount instead, which pins the superblock the
    // same way and is one more member of the stale mount's peer group: the
    // group, and with it the master of every slave copy in containers,
    // outlives the heal of its last host mount until the fd is closed. (A
    // container started after the walk that comes before the host heal
    // holds such a slave; without the clone the heal emptied the group and
    // the kernel turned that copy private before the walk after the heal
    // found it.) Without open_tree, or if the clone fails, the O_PATH fd.
    Result<sys::UniqueFd> pin_superblock(const HealAction& action, bool keep_peer_group = false) const;

    void set_root_dir(std::string root_dir) { root_dir_ = std::move(root_dir); }

    // Sets what is told the unique mount id (identify_mount_of_fd) of
    // each clone right before execute() attaches it in the daemon's
    // namespace (MountTracker::note_own_mount): called on the caller's
    // thread; not called when the kernel does not report the id.
    void set_own_mount_hook(std::function<void(std::uint64_t unique_mount_id)> hook) {
        own_mount_hook_ = std::move(hook);
    }

private:
    // The dead connections one execute_in_namespaces call has confirmed,
    // each with a pin on its superblock (defined in executor.cpp).
    struct DeadInBatch;

    // Returns ok while fusectl (when in use) still shows the action's
    // superblock as the aborted connection; ESTALE otherwise.
    Status check_still_dead(const HealAction& action) const;
    // The same for an action in a container, whose `target_fd` (the mount
    // at its target) is on the action's dead superblock: fusectl is read
    // once per superblock per batch, through fusectl_dir_fd_, and `target_fd`
    // is kept (dup) in `batch` so that the superblock and its device number
    // outlive the batch's detaches. Returns ok or ESTALE, as check_still_dead.
    Status check_still_dead_in_batch(const HealAction& action, int target_fd, DeadInBatch& batch) const;
    // One action of execute_in_namespaces, on a worker thread: the host-side
    // steps, then `entry` into the namespace, then act_at there.
    Status act_in_namespace(const HealAction& action, NamespaceWorkers::Entry& entry, DeadInBatch& batch,
                            const std::function<Status()>& before_change);
    // The steps after the clone exists (clone_fd -1 when there is none), in
    // the namespace the calling thread is in. `batch` is null for host
    // actions (execute() checked the connection before cloning).
    // `before_change`, when given, is asked after the checks and before the
    // first change; its Error is returned with nothing changed.
    Status act_at(const HealAction& action, int clone_fd, bool in_host, DeadInBatch* batch,
                  const std::function<Status()>& before_change = {});

    KernelFeatures features_;
    std::string root_dir_;
    std::unique_ptr<NamespaceWorkers> ns_workers_;  // created on first use
    sys::UniqueFd proc_self_fd_;                    // the daemon's /proc/self, with ns_workers_
    sys::UniqueFd fusectl_dir_fd_;                  // the daemon's fusectl, with ns_workers_ (when in use)
    std::function<void(std::uint64_t)> own_mount_hook_;
};

} // namespace fh
