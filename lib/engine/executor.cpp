#include "engine/executor.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <map>
#include <mutex>

#include <spdlog/spdlog.h>

#include "core/model.h"
#include "engine/liveness.h"
#include "engine/mount_query.h"
#include "engine/sys.h"

namespace fh {

namespace {

std::uint64_t attr_bits(const MountFlags& f) {
    return (f.read_only ? sys::kMountAttrRdonly : 0) | (f.nosuid ? sys::kMountAttrNosuid : 0) |
           (f.nodev ? sys::kMountAttrNodev : 0) | (f.noexec ? sys::kMountAttrNoexec : 0);
}

unsigned long ms_propagation(PropagationMode p) {
    switch (p) {
    case PropagationMode::Shared: return MS_SHARED;
    case PropagationMode::Slave: return MS_SLAVE;
    case PropagationMode::Private: return MS_PRIVATE;
    }
    return MS_PRIVATE;
}

unsigned long ms_flags(const MountFlags& f) {
    return (f.read_only ? MS_RDONLY : 0) | (f.nosuid ? MS_NOSUID : 0) | (f.nodev ? MS_NODEV : 0) |
           (f.noexec ? MS_NOEXEC : 0);
}

// Returns the daemon's /proc/self as seen by the calling thread: the real
// path in the host, and "." inside another namespace, where the worker
// thread's cwd is the daemon's /proc/self (a container may not have /proc
// mounted, and its own /proc would show other processes).
std::string proc_self(bool in_host) { return in_host ? "/proc/self" : "."; }

// Returns the path of fd's magic link, which reaches the mount the fd holds.
std::string fd_path(int fd, bool in_host) { return proc_self(in_host) + "/fd/" + std::to_string(fd); }

// Returns ok when the mount `fd` refers to (a detached clone, or the
// source path itself) belongs to the superblock the heal was planned with.
// Between planning and acting the source may die and be lazily unmounted:
// the path then shows the empty directory under it, and attaching a clone
// of that would show the pod an empty volume.
Status check_source(int fd, const HealAction& a) {
    if (a.source_device == 0) return {};
    auto dev = sys::fd_device(fd, a.clone_path);
    if (!dev) return dev.error();
    if (*dev != a.source_device)
        return Error{"re-check", a.clone_path, ESTALE,
                     "no longer the live filesystem the heal was planned with (device " + std::to_string(major(*dev)) +
                         ":" + std::to_string(minor(*dev)) + ", planned " + std::to_string(major(a.source_device)) +
                         ":" + std::to_string(minor(a.source_device)) + ")"};
    return {};
}

} // namespace

struct Executor::DeadInBatch {
    std::mutex mu;
    // By dead superblock: an fd on one of its mounts (a target's stale
    // mount, detached once healed), held until the batch ends.
    std::map<dev_t, sys::UniqueFd> pinned;
};

Executor::Executor(KernelFeatures features, std::string root_dir)
    : features_(std::move(features)), root_dir_(std::move(root_dir)) {}

Result<sys::UniqueFd> Executor::pin_superblock(const HealAction& a, bool keep_peer_group) const {
    if (!a.in_host()) return Error{"pin", a.mountpoint, EINVAL, "not a mount of the daemon's namespace"};
    if (!path_is_within(a.mountpoint, root_dir_) || a.mountpoint == root_dir_)
        return Error{"refuse", a.mountpoint, EPERM, "outside " + root_dir_};
    // O_PATH: the walk ends on the mount's root dentry without asking the
    // (dead) FUSE daemon anything; fd_device answers from the inode cache.
    auto fd = sys::open_path_nofollow(a.mountpoint, features_.openat2);
    if (!fd) return fd.error();
    auto dev = sys::fd_device(fd->get(), a.mountpoint);
    if (!dev) return dev.error();
    if (*dev != a.expected_device)
        return Error{"pin", a.mountpoint, ESTALE, "no longer the dead filesystem the heal was planned for"};
    if (keep_peer_group && features_.open_tree) {
        // Cloning a mount asks its filesystem nothing: safe on a dead (or
        // hung) FUSE connection.
        auto clone = sys::open_tree_clone_fd(fd->get(), a.mountpoint);
        if (clone) return std::move(*clone);
        spdlog::debug("failed to clone the stale mount at {} to keep its peer group, ignoring (pinned without): {}",
                      a.mountpoint, clone.error().message());
    }
    return std::move(*fd);
}

Status Executor::check_still_dead(const HealAction& a) const {
    // A mount id and a device number can both be reused once the dead
    // superblock's last mount is gone: where fusectl tells, require the
    // connection to still be the aborted one, so a live mount is never
    // touched. Only max_background, in one read: this runs before every
    // host action (200 per heal of a source in scale_bench), and the
    // `waiting` count read_fusectl also reads is for hung daemons.
    if (features_.fusectl && fusectl_aborted(features_.fusectl_dir, a.expected_device) != true)
        return Error{"re-check", a.mountpoint, ESTALE, "its FUSE connection is no longer the dead one"};
    return {};
}

Status Executor::execute(const HealAction& a) {
    if (!a.in_host()) return execute_in_namespaces({&a}).front().status;
    if (Status s = check_still_dead(a); !s) return s;
    if (!path_is_within(a.mountpoint, root_dir_) || a.mountpoint == root_dir_)
        return Error{"refuse", a.mountpoint, EPERM, "outside " + root_dir_};
    sys::UniqueFd clone;
    if (a.kind != ActionKind::UnmountDeadLayer && features_.open_tree) {
        auto c = sys::open_tree_clone(a.clone_path);
        if (!c) return c.error();
        if (Status s = check_source(c->get(), a); !s) return s;
        clone = std::move(*c);
        // The clone has its unique id already (given at open_tree), and
        // keeps it once attached.
        if (own_mount_hook_)
            if (auto m = identify_mount_of_fd(clone.get(), a.clone_path)) own_mount_hook_(m->unique_mount_id);
    }
    return act_at(a, clone.get(), true, nullptr);
}

Status Executor::check_still_dead_in_batch(const HealAction& a, int target_fd, DeadInBatch& batch) const {
    if (!features_.fusectl) return {};
    {
        std::lock_guard<std::mutex> l(batch.mu);
        if (batch.pinned.count(a.expected_device)) return {};
    }
    // Why once per superblock is enough: `target_fd` is on a mount of the
    // superblock with this device number (act_at checked), so while it is
    // open the number cannot pass to another filesystem; and an aborted
    // connection never comes back. Every later target found with this
    // number in the batch is then on this same dead superblock, whichever
    // mount it is. The fd is kept for that: each copy's detach could
    // otherwise free the superblock and its number. (Two workers may both
    // read fusectl for one superblock: both see the same connection.)
    if (fusectl_aborted_at(fusectl_dir_fd_.get(), a.expected_device) != true)
        return Error{"re-check", a.mountpoint, ESTALE, "its FUSE connection is no longer the dead one"};
    sys::UniqueFd pin(::fcntl(target_fd, F_DUPFD_CLOEXEC, 0));
    // Without the dup this action is still safe (its own fd pins the
    // superblock until it ends); the next one reads fusectl again.
    if (!pin.valid()) return {};
    std::lock_guard<std::mutex> l(batch.mu);
    batch.pinned.emplace(a.expected_device, std::move(pin));
    return {};
}

std::vector<Executor::NamespaceOutcome> Executor::execute_in_namespaces(const std::vector<const HealAction*>& actions,
                                                                        const Gate& gate) {
    std::vector<NamespaceOutcome> out(actions.size());
    if (!features_.open_tree) {
        for (std::size_t i = 0; i < actions.size(); ++i)
            out[i].status = Error{"heal in namespace", actions[i]->mountpoint, ENOSYS,
                                  "needs open_tree (Linux 5.2) to carry a clone into the namespace"};
        return out;
    }
    if (!ns_workers_) {
        ns_workers_ = std::make_unique<NamespaceWorkers>(kNamespaceWorkerThreads);
        // The daemon's /proc/self, opened here in its own namespace: inside
        // a container the workers reach their fds through it (proc_self).
        proc_self_fd_.reset(::open("/proc/self", O_PATH | O_DIRECTORY | O_CLOEXEC));
        Status e = proc_self_fd_.valid() ? Status{} : errno_error("open", "/proc/self");
        // fusectl too: the workers read it from inside containers, which
        // have none (check_still_dead_in_batch).
        if (e && features_.fusectl) {
            fusectl_dir_fd_.reset(::open(features_.fusectl_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
            if (!fusectl_dir_fd_.valid()) e = errno_error("open", features_.fusectl_dir);
        }
        if (!e) {
            proc_self_fd_ = {};
            fusectl_dir_fd_ = {};
            ns_workers_.reset();
            for (NamespaceOutcome& o : out) o.status = e;
            return out;
        }
    }
    const auto called = std::chrono::steady_clock::now();
    DeadInBatch batch;  // declared before the jobs: its pins close after run_all
    std::vector<NamespaceWorkers::Job> jobs;
    jobs.reserve(actions.size());
    for (std::size_t i = 0; i < actions.size(); ++i) {
        jobs.emplace_back([this, &a = *actions[i], &o = out[i], called, &batch,
                           &gate](NamespaceWorkers::Entry& entry) -> Status {
            auto start = std::chrono::steady_clock::now();
            // The action's time runs from its gate: what comes before it
            // only reads, and may wait there for the gate's answer.
            auto at_gate = [&]() -> Status {
                Status g = gate(a);
                if (!g) {
                    o.refused_at_gate = true;
                    return g;
                }
                start = std::chrono::steady_clock::now();
                return {};
            };
            Status s = act_in_namespace(a, entry, batch, gate ? std::function<Status()>(at_gate) : nullptr);
            const auto end = std::chrono::steady_clock::now();
            o.started = start - called;
            o.took = end - start;
            return s;
        });
    }
    std::vector<Status> statuses = ns_workers_->run_all(jobs);
    for (std::size_t i = 0; i < actions.size(); ++i) out[i].status = std::move(statuses[i]);
    return out;
}

Status Executor::act_in_namespace(const HealAction& a, NamespaceWorkers::Entry& entry, DeadInBatch& batch,
                                  const std::function<Status()>& before_change) {
    // Each job starts in the daemon's namespace: the host-side steps (the
    // namespace's identity, the clone) come first. The connection is checked
    // in act_at, once the target's mount is known to be on its superblock.
    // The namespace by its inode: the scan saw it as the namespace
    // of pid ns_pid; that pid may have exited since, or been reused
    // by a process of another namespace. The open fd pins whichever
    // namespace it reached, and its inode tells whether that is the
    // one planned for.
    const std::string ns_path = "/proc/" + std::to_string(a.ns_pid) + "/ns/mnt";
    sys::UniqueFd ns_fd(::open(ns_path.c_str(), O_RDONLY | O_CLOEXEC));
    // The container's process is gone since the plan (heals armed or
    // planned ahead may be seconds old): its copies went with it, or another
    // process holds them, which the next walk finds. The table moved; no heal
    // failed.
    if (!ns_fd.valid() && (errno == ENOENT || errno == ESRCH))
        return Error{"pin namespace", ns_path, ESTALE, "the process is gone"};
    if (!ns_fd.valid()) return errno_error("open", ns_path);
    struct stat st {};
    if (::fstat(ns_fd.get(), &st) != 0) return errno_error("fstat", ns_path);
    if (st.st_ino != a.ns_inode) return Error{"pin namespace", ns_path, ESTALE, "pid now in another namespace"};
    sys::UniqueFd clone;
    if (a.kind != ActionKind::UnmountDeadLayer) {
        auto c = sys::open_tree_clone(a.clone_path);  // made here, in the host namespace
        if (!c) return c.error();
        if (Status s = check_source(c->get(), a); !s) return s;
        clone = std::move(*c);
    }
    if (Status s = entry.enter(ns_fd.get()); !s) return s;
    // This thread has its own fs_struct (see NamespaceWorkers), so
    // the cwd change is invisible to the rest of the daemon.
    if (::fchdir(proc_self_fd_.get()) != 0) return errno_error("fchdir", "/proc/self");
    return act_at(a, clone.get(), false, &batch, before_change);
}

Status Executor::act_at(const HealAction& a, int clone_fd, bool in_host, DeadInBatch* batch,
                        const std::function<Status()>& before_change) {
    auto target = sys::open_path_nofollow(a.mountpoint, features_.openat2);
    // Gone since the plan (kubelet unmounted the target and removed its
    // directory): the table moved, not a failed heal.
    if (!target && target.error().err == ENOENT)
        return Error{"re-check", a.mountpoint, ESTALE, "the path no longer exists (unmounted and removed)"};
    if (!target) return target.error();
    // The topmost mount there must be the stale one planned for, on the dead
    // superblock. Mount ids are reused once a mount is freed, so the id
    // alone could match a new mount; the device number pins it to the
    // superblock. One statx tells both where the kernel reports the id
    // (5.8+); on older kernels, or with statx_mnt_id disabled, statx for the
    // device and the fd's fdinfo file for the id (an open, a read and a
    // close more).
    sys::FdMount found;
    if (features_.statx_mnt_id) {
        auto m = sys::fd_mount_statx(target->get(), a.mountpoint);
        if (!m) return m.error();
        found = *m;
    } else {
        auto dev = sys::fd_device(target->get(), a.mountpoint);
        if (!dev) return dev.error();
        auto id = sys::fd_mount_id(target->get(), proc_self(in_host));
        if (!id) return id.error();
        found = {*dev, *id};
    }
    if (found.mount_id != a.expected_mount_id)
        return Error{"re-check", a.mountpoint, ESTALE,
                     "mount " + std::to_string(a.expected_mount_id) + " is no longer the topmost mount there (found " +
                         std::to_string(found.mount_id) + ")"};
    if (found.device != a.expected_device)
        return Error{"re-check", a.mountpoint, ESTALE,
                     "mount " + std::to_string(found.mount_id) + " there is no longer on the dead filesystem (device " +
                         std::to_string(major(found.device)) + ":" + std::to_string(minor(found.device)) +
                         ", planned " + std::to_string(major(a.expected_device)) + ":" +
                         std::to_string(minor(a.expected_device)) + ")"};
    if (batch)
        if (Status s = check_still_dead_in_batch(a, target->get(), *batch); !s) return s;
    const std::string top = fd_path(target->get(), in_host);
    const std::string where = in_host ? a.mountpoint : a.mountpoint + " (ns pid " + std::to_string(a.ns_pid) + ")";
    // Everything above only read (the clone is detached, visible nowhere).
    if (before_change)
        if (Status s = before_change(); !s) return s;

    if (a.kind == ActionKind::UnmountDeadLayer) {
        if (::umount2(top.c_str(), MNT_DETACH) != 0) return errno_error("umount dead layer", where);
        return {};
    }

    const MountFlags& f = a.flags;
    bool attrs_applied = false;
    if (clone_fd >= 0 && features_.mount_setattr) {
        // Flags and propagation go on the detached clone before it is
        // attached, so the mount is never visible with the wrong ones.
        sys::MountAttr attr;
        attr.attr_set = attr_bits(f);
        attr.attr_clr = attr_bits(MountFlags{true, true, true, true}) & ~attr.attr_set;
        attr.propagation = ms_propagation(a.propagation);
        if (Status s = sys::mount_setattr_fd(clone_fd, attr, a.clone_path); !s) return s;
        attrs_applied = true;
    }

    if (a.kind == ActionKind::Replace) {
        if (!features_.move_mount_beneath || clone_fd < 0)
            return Error{"replace", where, ENOSYS, "needs move_mount MOVE_MOUNT_BENEATH (Linux 6.5)"};
        if (Status s = sys::move_mount_fd(clone_fd, target->get(), true, where); !s) return s;
        if (::umount2(top.c_str(), MNT_DETACH) != 0) return errno_error("detach stale top", where);
        return {};
    }

    // BindOnTop.
    {
        // Without open_tree (Linux < 5.2) no clone can be carried into a
        // container, so propagation from the dead top is the only way to
        // reach HostToContainer copies: keep it, and rely on planning one
        // bind per peer group (the next plan sees the peers covered).
        if (a.make_private_first && features_.open_tree &&
            ::mount(nullptr, top.c_str(), nullptr, MS_PRIVATE, nullptr) != 0)
            return errno_error("make dead layer private", where);
        std::string fresh;  // name under /proc/self/fd of the new mount
        sys::UniqueFd fresh_fd;
        if (clone_fd >= 0) {
            if (Status s = sys::move_mount_fd(clone_fd, target->get(), false, where); !s) return s;
            fresh = fd_path(clone_fd, in_host);
        } else {
            // Kernels before 5.2: a classic bind onto the stale top. The
            // source is checked through the path just before; the window
            // left is the bind syscall itself.
            auto source = sys::open_path_nofollow(a.clone_path, features_.openat2);
            if (!source) return source.error();
            if (Status s = check_source(source->get(), a); !s) return s;
            if (::mount(a.clone_path.c_str(), top.c_str(), nullptr, MS_BIND, nullptr) != 0)
                return errno_error("bind on top", where);
            auto opened = sys::open_path_nofollow(a.mountpoint, features_.openat2);
            if (!opened) return opened.error();
            fresh_fd = std::move(*opened);
            fresh = fd_path(fresh_fd.get(), in_host);
        }
        if (!attrs_applied) {
            if (::mount(nullptr, fresh.c_str(), nullptr, MS_REMOUNT | MS_BIND | ms_flags(f), nullptr) != 0)
                return errno_error("remount flags", where);
            if (::mount(nullptr, fresh.c_str(), nullptr, ms_propagation(a.propagation), nullptr) != 0)
                return errno_error("set propagation", where);
        }
        return {};
    }
}

} // namespace fh
