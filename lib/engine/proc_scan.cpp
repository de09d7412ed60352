#include "engine/proc_scan.h"

#include <dirent.h>

#include <algorithm>
#include <cstdlib>
#include <map>

#include "core/pod_cgroup.h"
#include "engine/sys.h"

namespace fh {

std::string read_pod_uid(const std::string& proc_root, int pid) {
    // A few short lines; the process may be gone by now, like any other.
    auto text = sys::read_small_file(proc_root + "/" + std::to_string(pid) + "/cgroup");
    return text ? pod_uid_from_cgroup(*text) : std::string();
}

NamespaceScan scan_namespaces(const std::string& proc_root, int self_pid, const std::set<dev_t>& devices,
                              const std::set<dev_t>& remembered) {
    NamespaceScan out;
    std::set<dev_t> looked_for = remembered;
    looked_for.insert(devices.begin(), devices.end());
    auto self_ns = sys::mount_ns_id(proc_root, self_pid);
    std::set<std::pair<dev_t, ino_t>> seen;
    if (self_ns) seen.insert(*self_ns);
    DIR* dir = ::opendir(proc_root.c_str());
    if (!dir) return out;
    while (struct dirent* de = ::readdir(dir)) {
        char* end = nullptr;
        long pid = std::strtol(de->d_name, &end, 10);
        if (pid <= 0 || *end != '\0') continue;
        ++out.processes;
        auto ns = sys::mount_ns_id(proc_root, static_cast<int>(pid));
        if (!ns || seen.count(*ns)) continue;
        const std::string path = proc_root + "/" + de->d_name + "/mountinfo";
        auto text = sys::read_small_file(path);
        // The process exited meanwhile: another process may still show the
        // namespace, so it is not marked as seen.
        if (!text) continue;
        seen.insert(*ns);
        ++out.distinct_namespaces;
        out.namespace_inodes.push_back(ns->second);
        // Most namespaces hold none of the devices: they are only scanned
        // for the device field, not parsed (libmount's parse of a table
        // costs more than the kernel's printing of it).
        std::vector<dev_t> held = mountinfo_devices_among(*text, looked_for);
        if (held.empty()) continue;
        const bool wanted = std::any_of(held.begin(), held.end(), [&](dev_t d) { return devices.count(d) > 0; });
        out.holdings.push_back(NamespaceHolding{static_cast<int>(pid), ns->second, std::move(held)});
        if (!wanted) continue;
        auto table = parse_mountinfo_text(*text, path);
        if (!table) continue;
        out.namespaces.push_back(NamespaceView{static_cast<int>(pid), ns->second, std::move(*table),
                                               read_pod_uid(proc_root, static_cast<int>(pid))});
    }
    ::closedir(dir);
    std::sort(out.namespace_inodes.begin(), out.namespace_inodes.end());
    return out;
}

} // namespace fh
