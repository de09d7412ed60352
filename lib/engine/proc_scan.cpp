#include "engine/proc_scan.h"

#include <dirent.h>

#include <cstdlib>
#include <map>

#include "engine/sys.h"

namespace fh {

NamespaceScan scan_namespaces(const std::string& proc_root, int self_pid, const std::set<dev_t>& devices) {
    NamespaceScan out;
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
        auto table = read_mountinfo(proc_root + "/" + de->d_name + "/mountinfo");
        // The process exited meanwhile: another process may still show the
        // namespace, so it is not marked as seen.
        if (!table) continue;
        seen.insert(*ns);
        ++out.distinct_namespaces;
        bool wanted = false;
        for (const auto& e : table->entries())
            if (devices.count(e.device)) {
                wanted = true;
                break;
            }
        if (wanted) out.namespaces.push_back(NamespaceView{static_cast<int>(pid), ns->second, std::move(*table)});
    }
    ::closedir(dir);
    return out;
}

} // namespace fh
