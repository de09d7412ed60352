// The campaign's node: three datasets, 50 targets, 15 containers.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <stdexcept>

#include "campaign.h"
#include "heal_fixture.h"

namespace fh::campaign {

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

bool under(const std::string& path, const std::string& dir) {
    return path == dir || starts_with(path, dir + "/");
}

int count_under(const std::vector<MountLine>& lines, const std::string& dir) {
    return static_cast<int>(std::count_if(lines.begin(), lines.end(),
                                          [&](const MountLine& m) { return under(m.mountpoint, dir); }));
}

// The stack at `path`, bottom first (the harness's stack_at, on lines read once).
std::vector<const MountLine*> stack_of(const std::vector<MountLine>& lines, const std::string& path) {
    std::vector<const MountLine*> at;
    for (const auto& m : lines)
        if (m.mountpoint == path) at.push_back(&m);
    std::vector<const MountLine*> ordered;
    auto is_at = [&](int id) {
        return std::any_of(at.begin(), at.end(), [&](const MountLine* m) { return m->id == id; });
    };
    const MountLine* cur = nullptr;
    for (const MountLine* m : at)
        if (!is_at(m->parent)) cur = m;
    while (cur) {
        ordered.push_back(cur);
        const MountLine* next = nullptr;
        for (const MountLine* m : at)
            if (m->parent == cur->id) next = m;
        cur = next;
    }
    if (ordered.size() != at.size()) return at;  // odd: file order
    return ordered;
}

bool benign_error(const std::string& err) { return err == "ENOTCONN" || err == "ECONNABORTED"; }

const char* propagation_name(ContainerPropagation p) {
    return p == ContainerPropagation::Slave ? "slave" : "private";
}

}  // namespace

std::string RootView::contents(int g) const {
    const std::string n = std::to_string(g);
    if (root == "/data") return "hello from generation " + n + "\n";
    if (root == "/sub") return "inner " + n + "\n";
    return n + "\n";
}

std::optional<int> RootView::generation_of(const std::string& s) const {
    std::string prefix = root == "/data" ? "hello from generation " : root == "/sub" ? "inner " : "";
    if (!starts_with(s, prefix) || s.size() < prefix.size() + 2 || s.back() != '\n') return std::nullopt;
    std::string digits = s.substr(prefix.size(), s.size() - prefix.size() - 1);
    if (digits.empty() || digits.size() > 9 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return std::nullopt;
    int g = std::atoi(digits.c_str());
    if (contents(g) != s) return std::nullopt;
    return g;
}

const RootView& root_view(const std::string& root) {
    static const RootView top{"/", "generation", {"data", "generation", "sub"}};
    static const RootView data{"/data", "hello", {"hello"}};
    static const RootView sub{"/sub", "inner", {"inner"}};
    if (root == "/data") return data;
    if (root == "/sub") return sub;
    return top;
}

const char* to_string(TargetKind k) {
    switch (k) {
    case TargetKind::Staging: return "staging";
    case TargetKind::Volume: return "volume";
    case TargetKind::Subpath: return "subpath";
    }
    return "?";
}

Node::Node(Sandbox& sb, NodeOptions options) : sb_(sb), options_(options) {}

Node::~Node() { stop_host_reader(); }

void Node::build() {
    const std::pair<const char*, FuseKind> kinds[] = {
        {"fh_testfs", FuseKind::TestFs}, {"squashfuse", FuseKind::SquashFuse}, {"bindfs", FuseKind::BindFs}};
    const int n = std::max(options_.targets, 6);
    for (int i = 0; i < 3; ++i) {
        auto d = std::make_unique<Dataset>();
        d->name = kinds[i].first;
        d->kind = kinds[i].second;
        d->source = sb_.runtime() + "/" + d->name + "/fuse";
        d->staging = sb_.kubelet() + "/plugins/kubernetes.io/csi/fuse.csi.fluid.io/" + d->name + "/globalmount";
        d->fuse = std::make_unique<FuseDaemon>(sb_, d->source, d->kind);
        d->fuse->start(1);
        // The CSI driver's NodeStageVolume, then one NodePublishVolume per
        // pod (binds of the staging mount, read-only).
        csi_bind(d->source, "", d->staging, true);
        const int mine = n / 3 + (i < n % 3 ? 1 : 0);
        const std::string vol = "pvc-" + d->name;
        for (int j = 0; j < mine; ++j) {
            TargetInfo t;
            t.dataset = static_cast<std::size_t>(i);
            if (j == 0) {
                t.kind = TargetKind::Staging;
                t.root = "/";
                t.path = d->staging;
            } else {
                const std::string uid = d->name + "-pod-" + std::to_string(j);
                switch ((j - 1) % 3) {
                case 0:
                    t.kind = TargetKind::Volume;
                    t.root = "/";
                    t.path = sb_.make_pod_volume(uid, vol, d->name);
                    csi_bind(d->staging, "", t.path, true);
                    break;
                case 1:
                    t.kind = TargetKind::Volume;
                    t.root = "/data";
                    t.path = sb_.make_pod_volume(uid, vol + "-data", d->name + "/data");
                    csi_bind(d->staging, "data", t.path, true);
                    break;
                default:
                    t.kind = TargetKind::Subpath;
                    t.root = "/sub";
                    t.path = sb_.pod_subpath_path(uid, vol, "app", 0);
                    csi_bind(d->staging, "sub", t.path, true);
                    break;
                }
            }
            d->targets.push_back(targets_.size());
            targets_.push_back(t);
        }
        datasets_.push_back(std::move(d));
    }
    if (options_.readers) {
        for (auto& dp : datasets_) {
            Dataset& d = *dp;
            auto first = [&](const std::string& root, TargetKind kind) -> std::optional<std::size_t> {
                for (std::size_t t : d.targets)
                    if (targets_[t].root == root && targets_[t].kind == kind) return t;
                return std::nullopt;
            };
            struct Want {
                std::string root;
                TargetKind kind;
                ContainerPropagation p;
                int interval;
            };
            const Want wants[] = {
                {"/", TargetKind::Volume, ContainerPropagation::Slave, options_.fast_reader_interval_us},
                {"/", TargetKind::Volume, ContainerPropagation::Private, options_.reader_interval_us},
                {"/data", TargetKind::Volume, ContainerPropagation::Private, options_.reader_interval_us},
                {"/sub", TargetKind::Subpath, ContainerPropagation::Private, options_.reader_interval_us},
                {"/sub", TargetKind::Subpath, ContainerPropagation::Slave, options_.reader_interval_us},
            };
            for (const Want& w : wants) {
                auto t = first(w.root, w.kind);
                if (!t) continue;
                Reader r;
                r.container = std::make_unique<Container>(sb_);
                r.target = *t;
                r.propagation = w.p;
                r.container->start(targets_[*t].path, w.p, root_view(w.root).file, w.interval);
                d.readers.push_back(std::move(r));
            }
        }
    }
    for (auto& dp : datasets_)
        for (Reader& r : dp->readers) {
            const RootView& v = root_view(targets_[r.target].root);
            if (!container_reads(*r.container, v.contents(1), 10000ms))
                throw std::runtime_error("container on " + targets_[r.target].path + " does not read: " +
                                         (r.container->last() ? r.container->last()->state : "no state") +
                                         " " + r.container->log());
            r.mounts_at_start = static_cast<int>(r.container->mounts().size());
            r.last_generation = 1;
            r.seen = r.container->events().size();
        }
    const auto lines = read_mount_lines();
    sandbox_mounts_ = count_under(lines, sb_.root());
    kubelet_mounts_ = count_under(lines, sb_.kubelet());
}

void Node::crash(Dataset& d) { d.fuse->kill9(); }

std::int64_t Node::restart(Dataset& d) {
    const int g = d.generation + 1;
    d.hi.store(g);
    d.fuse->supervisor_restart(g);
    d.generation = g;
    return monotonic_usec();
}

std::optional<std::int64_t> Node::wait_healed(Dataset& d, int gen, std::chrono::milliseconds timeout,
                                              std::string* why) {
    std::vector<std::int64_t> host_done(d.targets.size(), 0);
    std::vector<std::int64_t> reader_done(d.readers.size(), 0);
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        bool all = true;
        for (std::size_t k = 0; k < d.targets.size(); ++k) {
            if (host_done[k]) continue;
            const TargetInfo& t = targets_[d.targets[k]];
            const RootView& v = root_view(t.root);
            if (read_file(t.path + "/" + v.file) == v.contents(gen)) host_done[k] = monotonic_usec();
            else all = false;
        }
        for (std::size_t k = 0; k < d.readers.size(); ++k) {
            if (reader_done[k]) continue;
            Reader& r = d.readers[k];
            const RootView& v = root_view(targets_[r.target].root);
            auto last = r.container->last();
            if (last && last->ok() && last->contents() == v.contents(gen) && last->listing() == v.listing)
                reader_done[k] = last->usec;
            else all = false;
        }
        if (all) {
            std::int64_t latest = 0;
            for (auto t : host_done) latest = std::max(latest, t);
            for (auto t : reader_done) latest = std::max(latest, t);
            return latest;
        }
        if (Clock::now() >= deadline) {
            if (why) {
                std::string w;
                for (std::size_t k = 0; k < d.targets.size(); ++k)
                    if (!host_done[k]) {
                        const TargetInfo& t = targets_[d.targets[k]];
                        auto got = read_file(t.path + "/" + root_view(t.root).file);
                        w += " host " + t.path + " reads " + (got ? "\"" + *got + "\"" : errno_name(errno)) + ";";
                    }
                for (std::size_t k = 0; k < d.readers.size(); ++k)
                    if (!reader_done[k]) {
                        auto last = d.readers[k].container->last();
                        w += " container " + std::to_string(d.readers[k].container->pid()) + " on " +
                             targets_[d.readers[k].target].path + " last state " +
                             (last ? last->state : "none") + ";";
                    }
                *why = w;
            }
            return std::nullopt;
        }
        std::this_thread::sleep_for(1ms);
    }
}

std::vector<std::string> Node::check_mounts(std::int64_t* leaked) {
    std::vector<std::string> problems;
    const auto lines = read_mount_lines();
    auto leak = [&](int n) {
        if (leaked) *leaked += std::abs(n);
    };
    if (int n = count_under(lines, sb_.root()); n != sandbox_mounts_) {
        problems.push_back("mounts under the sandbox: " + std::to_string(n) + ", at the start " +
                           std::to_string(sandbox_mounts_));
        leak(n - sandbox_mounts_);
    }
    if (int n = count_under(lines, sb_.kubelet()); n != kubelet_mounts_) {
        problems.push_back("mounts under the kubelet root: " + std::to_string(n) + ", at the start " +
                           std::to_string(kubelet_mounts_));
    }
    for (auto& dp : datasets_) {
        Dataset& d = *dp;
        const bool live = d.fuse->running();
        const std::string dev = d.fuse->mount().device;
        auto src = stack_of(lines, d.source);
        if (live && (src.size() != 1 || src.back()->device != dev))
            problems.push_back(d.source + ": " + std::to_string(src.size()) +
                               " mounts at the source path (want 1, the FUSE daemon's own)");
        const int group = src.empty() ? 0 : src.back()->shared_group();
        for (std::size_t t : d.targets) {
            const TargetInfo& ti = targets_[t];
            auto st = stack_of(lines, ti.path);
            if (st.size() != 1) {
                std::string devs;
                for (auto* m : st) devs += " " + m->device + ":" + m->root;
                problems.push_back(ti.path + ": stack of " + std::to_string(st.size()) + " mounts (" + devs + " )");
                if (st.empty()) continue;
            }
            const MountLine& top = *st.back();
            if (live && top.device != dev)
                problems.push_back(ti.path + ": topmost mount is " + top.device + ", the live superblock is " + dev);
            if (top.root != ti.root) problems.push_back(ti.path + ": root " + top.root + ", want " + ti.root);
            if (!top.read_only()) problems.push_back(ti.path + ": not read-only: " + top.raw);
        }
        for (Reader& r : d.readers) {
            if (!r.container->running()) continue;
            const TargetInfo& ti = targets_[r.target];
            auto cl = r.container->mounts();
            if (cl.empty()) continue;  // the process is gone
            if (static_cast<int>(cl.size()) != r.mounts_at_start) {
                problems.push_back("container " + std::to_string(r.container->pid()) + " on " + ti.path + ": " +
                                   std::to_string(cl.size()) + " mounts, at the start " +
                                   std::to_string(r.mounts_at_start));
                leak(static_cast<int>(cl.size()) - r.mounts_at_start);
            }
            auto st = stack_of(cl, "/data");
            if (st.size() != 1) {
                problems.push_back("container " + std::to_string(r.container->pid()) + ": /data stack of " +
                                   std::to_string(st.size()));
                if (st.empty()) continue;
            }
            const MountLine& top = *st.back();
            const std::string who = "container " + std::to_string(r.container->pid()) + " (" +
                                    propagation_name(r.propagation) + ") on " + ti.path;
            if (live && top.device != dev) problems.push_back(who + ": /data is " + top.device + ", live is " + dev);
            if (top.root != ti.root) problems.push_back(who + ": /data root " + top.root + ", want " + ti.root);
            if (r.propagation == ContainerPropagation::Slave) {
                if (top.shared_group() != 0 || (live && top.master_group() != group))
                    problems.push_back(who + ": not a slave of the source's peer group " + std::to_string(group) +
                                       ": " + top.raw);
            } else if (!top.optional.empty()) {
                problems.push_back(who + ": not private: " + top.raw);
            }
        }
    }
    return problems;
}

std::vector<std::string> Node::judge_readers(Dataset& d) {
    std::vector<std::string> bad;
    for (Reader& r : d.readers) {
        const auto& events = r.container->events();
        const TargetInfo& ti = targets_[r.target];
        const RootView& v = root_view(ti.root);
        for (; r.seen < events.size(); ++r.seen) {
            const ContainerEvent& e = events[r.seen];
            std::string why;
            if (e.is_error()) {
                if (!benign_error(e.error())) why = "error other than ENOTCONN";
            } else if (!e.ok()) {
                why = "empty directory";
            } else {
                auto g = e.contents() ? v.generation_of(*e.contents()) : std::nullopt;
                if (!g) why = "wrong data";
                else if (e.listing() != v.listing) why = "wrong listing";
                else if (*g < r.last_generation) why = "went back from generation " + std::to_string(r.last_generation);
                else if (*g > d.generation) why = "generation from the future";
                else r.last_generation = *g;
            }
            if (!why.empty())
                bad.push_back("container " + std::to_string(r.container->pid()) + " (" +
                              propagation_name(r.propagation) + ") on " + ti.path + " at " + std::to_string(e.usec) +
                              ": " + why + ": \"" + e.state + "\"");
        }
    }
    return bad;
}

void Node::start_host_reader(int interval_us) {
    stop_host_reader();
    host_reader_stop_ = false;
    host_reader_ = std::thread([this, interval_us] { host_reader_main(interval_us); });
}

void Node::stop_host_reader() {
    host_reader_stop_ = true;
    if (host_reader_.joinable()) host_reader_.join();
}

std::vector<std::string> Node::take_host_bad_states() {
    std::lock_guard<std::mutex> lock(host_bad_mu_);
    return std::move(host_bad_);
}

void Node::host_reader_main(int interval_us) {
    std::vector<int> last(targets_.size(), 0);
    std::uint64_t round = 0;
    while (!host_reader_stop_) {
        ++round;
        for (std::size_t t = 0; t < targets_.size() && !host_reader_stop_; ++t) {
            const TargetInfo& ti = targets_[t];
            Dataset& d = *datasets_[ti.dataset];
            const RootView& v = root_view(ti.root);
            const int lo = d.lo.load();
            std::string why, state;
            if (auto got = read_file(ti.path + "/" + v.file)) {
                const int hi = d.hi.load();
                auto g = v.generation_of(*got);
                state = "\"" + *got + "\"";
                if (!g) why = "wrong data";
                else if (*g < lo || *g > hi) why = "generation outside [" + std::to_string(lo) + "," + std::to_string(hi) + "]";
                else if (*g < last[t]) why = "went back from generation " + std::to_string(last[t]);
                else last[t] = *g;
            } else {
                state = errno_name(errno);
                if (!benign_error(state)) why = "error other than ENOTCONN";
            }
            // Every fourth round also lists the directory: an empty one is
            // what a reader must never see.
            if (why.empty() && round % 4 == 0) {
                if (DIR* dir = opendir(ti.path.c_str())) {
                    std::vector<std::string> names;
                    errno = 0;
                    while (dirent* e = readdir(dir)) {
                        std::string n = e->d_name;
                        if (n != "." && n != "..") names.push_back(n);
                    }
                    const int err = errno;
                    closedir(dir);
                    std::sort(names.begin(), names.end());
                    if (err != 0) {
                        state = "readdir " + errno_name(err);
                        if (!benign_error(errno_name(err))) why = "error other than ENOTCONN";
                    } else if (names != v.listing) {
                        state = "listing of " + std::to_string(names.size()) + " names";
                        why = names.empty() ? "empty directory" : "wrong listing";
                    }
                } else if (!benign_error(errno_name(errno))) {
                    state = "opendir " + errno_name(errno);
                    why = "error other than ENOTCONN";
                }
            }
            host_reads_.fetch_add(1);
            if (!why.empty()) {
                std::lock_guard<std::mutex> lock(host_bad_mu_);
                host_bad_.push_back("host read of " + ti.path + " at " + std::to_string(monotonic_usec()) + ": " +
                                    why + ": " + state);
            }
        }
        std::this_thread::sleep_for(std::chrono::microseconds(interval_us));
    }
}

}  // namespace fh::campaign
