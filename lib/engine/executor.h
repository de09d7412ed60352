// Carries out one HealAction with real mount syscalls. Decisions are the
// planner's; the executor only re-checks, right before acting, that the
// stale mount it was told about is still the topmost mount at the path (a pod
// being deleted must not get its mount back), and resolves paths without
// following symlinks.
#pragma once

#include <memory>
#include <string>

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

    // Returns an O_PATH fd of the stale mount at the host action's
    // mountpoint (resolved without following symlinks, inside <root_dir>),
    // after checking it belongs to the action's dead superblock; or an
    // Error. Held across a heal, the fd keeps that superblock, and with it
    // its device number, alive after the stale mount is detached: the
    // kernel cannot hand the number to another filesystem while the engine
    // still looks for copies of the dead one by that number.
    Result<sys::UniqueFd> pin_superblock(const HealAction& action) const;

    void set_root_dir(std::string root_dir) { root_dir_ = std::move(root_dir); }

private:
    Status execute_in_namespace(const HealAction& action);
    // The steps after the clone exists (clone_fd -1 when there is none), in
    // the namespace the calling thread is in.
    Status act_at(const HealAction& action, int clone_fd, bool in_host);

    KernelFeatures features_;
    std::string root_dir_;
    std::unique_ptr<NamespaceWorker> ns_worker_;  // created on first use
};

} // namespace fh
