// Shared setup for tests of fuse-healerd: one dataset (a FUSE daemon at a
// source path) bound into pods, containers on the pod paths, the daemon.
#pragma once

#include <string>
#include <vector>

#include "harness.h"

namespace fh::test {

// Waits until the container's latest state reads `file` content `want`.
inline bool container_reads(Container& c, const std::string& want, std::chrono::milliseconds timeout = 5000ms) {
    return c
        .wait_for_state([&](const ContainerEvent& e) { return e.ok() && e.contents() && *e.contents() == want; },
                        timeout)
        .has_value();
}

// Waits until the container's latest state is an error (the dead FUSE).
inline bool container_broken(Container& c, std::chrono::milliseconds timeout = 5000ms) {
    return c.wait_for_state([](const ContainerEvent& e) { return e.is_error(); }, timeout).has_value();
}

// Returns the states a container went through that are neither the old nor
// the new content nor an error: an empty directory or any other content.
inline std::vector<std::string> bad_states(Container& c, const std::vector<std::string>& allowed_contents) {
    std::vector<std::string> bad;
    for (const auto& e : c.events()) {
        if (e.is_error()) continue;
        if (e.ok() && e.contents()) {
            bool known = false;
            for (const auto& a : allowed_contents) known = known || *e.contents() == a;
            if (known) continue;
        }
        bad.push_back(e.state);
    }
    return bad;
}

// Returns the FUSE mounts (fstype fuse or fuse.*) in a mountinfo file.
inline std::vector<MountLine> fuse_mounts(const std::string& mountinfo = kSelfMountinfo) {
    std::vector<MountLine> out;
    for (auto& m : read_mount_lines(mountinfo))
        if (m.fstype == "fuse" || m.fstype.rfind("fuse.", 0) == 0) out.push_back(m);
    return out;
}

// Waits until the daemon has learned (and saved) the origin of `target`: a
// crash before that leaves it nothing to heal from once the stale source is
// lazily unmounted, as it would a real node.
inline bool daemon_learned(const Sandbox& sb, const std::string& target, std::chrono::milliseconds timeout = 5000ms) {
    return wait_until(
        [&] {
            auto s = read_file(sb.state() + "/origins.json");
            return s && s->find("\"" + target + "\"") != std::string::npos;
        },
        timeout);
}

// Waits until reading `path` gives `want`.
inline bool host_reads(const std::string& path, const std::string& want, std::chrono::milliseconds timeout = 5000ms) {
    return wait_until([&] { return read_file(path) == want; }, timeout);
}

} // namespace fh::test
