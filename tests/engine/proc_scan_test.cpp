// Tests of scan_namespaces (engine/proc_scan.h): on a fake /proc tree, where
// the outcome is exact, and on the real /proc.
#include "engine/proc_scan.h"

#include <dirent.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "temp_dir.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace fh {
namespace {

using testing_support::spit;
using testing_support::TempDir;

namespace fs = std::filesystem;



const dev_t kFuseDev = ::makedev(0, 57);
const dev_t kOtherFuseDev = ::makedev(0, 99);

const std::string kRootLine = "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n";
const std::string kProcLine = "28 27 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:2 - proc proc rw\n";
const std::string kFuseLine =
    "36 27 0:57 / /runtime/default/ds/fuse rw,nosuid,nodev,relatime shared:5 - fuse.juicefs JuiceFS:vol "
    "rw,user_id=0,group_id=0,default_permissions,allow_other\n";
const std::string kContainerLine =
    "412 27 0:57 /sub /data rw,nosuid,nodev,relatime master:5 - fuse.juicefs JuiceFS:vol "
    "rw,user_id=0,group_id=0,default_permissions,allow_other\n";
const std::string kOtherLine =
    "413 27 0:99 / /other rw,relatime - fuse.sshfs host:/x rw,user_id=0,group_id=0\n";

// A fake proc root: <root>/<pid>/ns/mnt (a regular file; processes of one
// namespace share it by hard link) and <root>/<pid>/mountinfo.
class FakeProc {
public:
    const std::string& root() const { return tmp_.path(); }

    // Adds a namespace file and returns its inode.
    ino_t add_namespace(const std::string& name) {
        fs::create_directories(tmp_ / "nsfiles");
        spit(tmp_ / ("nsfiles/" + name), name);
        struct stat st {};
        ::stat((tmp_ / ("nsfiles/" + name)).c_str(), &st);
        return st.st_ino;
    }
    // Adds a process in namespace `ns`; `mountinfo` empty means none (it exited).
    void add_process(int pid, const std::string& ns, const std::string* mountinfo) {
        const std::string dir = tmp_ / std::to_string(pid);
        fs::create_directories(dir + "/ns");
        fs::create_hard_link(tmp_ / ("nsfiles/" + ns), dir + "/ns/mnt");
        if (mountinfo) spit(dir + "/mountinfo", *mountinfo);
    }
    void add_process(int pid, const std::string& ns, const std::string& mountinfo) {
        add_process(pid, ns, &mountinfo);
    }
    // The numeric entries of the root in readdir order (the scan's order).
    std::vector<int> pids_in_readdir_order() const {
        std::vector<int> out;
        DIR* d = ::opendir(root().c_str());
        while (struct dirent* de = d ? ::readdir(d) : nullptr) {
            char* end = nullptr;
            long v = std::strtol(de->d_name, &end, 10);
            if (v > 0 && *end == '\0') out.push_back(static_cast<int>(v));
        }
        if (d) ::closedir(d);
        return out;
    }

private:
    TempDir tmp_;
};

bool has_device(const MountTable& t, dev_t dev) {
    for (const auto& e : t.entries())
        if (e.device == dev) return true;
    return false;
}

TEST(ScanNamespacesFake, FindsEachWantedNamespaceOnceAndSkipsOurOwn) {
    FakeProc proc;
    const ino_t self_ns = proc.add_namespace("self");
    const ino_t ns_a = proc.add_namespace("a");
    proc.add_namespace("b");
    const ino_t ns_c = proc.add_namespace("c");
    // Our own namespace holds the device: never reported.
    proc.add_process(1, "self", kRootLine + kProcLine + kFuseLine);
    proc.add_process(7, "self", kRootLine + kFuseLine);
    // A container with three processes.
    for (int pid : {100, 101, 102}) proc.add_process(pid, "a", kRootLine + kContainerLine);
    // A container without the device.
    proc.add_process(200, "b", kRootLine + kProcLine);
    // A container holding only the other device.
    proc.add_process(300, "c", kRootLine + kOtherLine);
    // Entries that are not processes.
    fs::create_directories(proc.root() + "/sys");
    fs::create_directories(proc.root() + "/12ab");
    fs::create_directory_symlink("1", proc.root() + "/self");

    NamespaceScan s = scan_namespaces(proc.root(), 1, {kFuseDev});
    EXPECT_EQ(s.processes, 7);
    EXPECT_EQ(s.distinct_namespaces, 3);  // a, b, c (ours is skipped unread)
    ASSERT_EQ(s.namespaces.size(), 1u);
    EXPECT_EQ(s.namespaces[0].ns_inode, ns_a);
    EXPECT_NE(s.namespaces[0].ns_inode, self_ns);
    EXPECT_TRUE(s.namespaces[0].pid == 100 || s.namespaces[0].pid == 101 || s.namespaces[0].pid == 102)
        << s.namespaces[0].pid;
    EXPECT_TRUE(has_device(s.namespaces[0].table, kFuseDev));
    EXPECT_EQ(s.namespaces[0].table.entries().size(), 2u);

    // Both devices: a and c.
    NamespaceScan both = scan_namespaces(proc.root(), 1, {kFuseDev, kOtherFuseDev});
    ASSERT_EQ(both.namespaces.size(), 2u);
    std::set<std::uint64_t> inodes;
    for (const auto& v : both.namespaces) inodes.insert(v.ns_inode);
    EXPECT_EQ(inodes, (std::set<std::uint64_t>{ns_a, ns_c}));

    // No wanted device anywhere: nothing, but everything was looked at.
    NamespaceScan none = scan_namespaces(proc.root(), 1, {::makedev(0, 4000)});
    EXPECT_TRUE(none.namespaces.empty());
    EXPECT_EQ(none.processes, 7);
    EXPECT_EQ(none.distinct_namespaces, 3);
    EXPECT_TRUE(scan_namespaces(proc.root(), 1, {}).namespaces.empty());
}

TEST(ScanNamespacesFake, RemembersHoldersOfEveryDeviceAndParsesOnlyTheWantedOnes) {
    // The namespace cache: a walk for no dead device (an empty wanted set)
    // still lists who holds which remembered device; a walk for one device
    // parses only its holders but lists the others too.
    FakeProc proc;
    proc.add_namespace("self");
    const ino_t ns_a = proc.add_namespace("a");
    proc.add_namespace("b");
    const ino_t ns_c = proc.add_namespace("c");
    const ino_t ns_d = proc.add_namespace("d");
    proc.add_process(1, "self", kRootLine + kFuseLine);
    proc.add_process(100, "a", kRootLine + kContainerLine);
    proc.add_process(200, "b", kRootLine + kProcLine);
    proc.add_process(300, "c", kRootLine + kOtherLine);
    proc.add_process(400, "d", kRootLine + kContainerLine + kOtherLine);
    auto holdings_of = [](const NamespaceScan& s) {
        std::map<std::uint64_t, std::vector<dev_t>> out;
        for (const auto& h : s.holdings) out[h.ns_inode] = h.devices;
        return out;
    };
    const std::map<std::uint64_t, std::vector<dev_t>> everyone{
        {ns_a, {kFuseDev}}, {ns_c, {kOtherFuseDev}}, {ns_d, {kFuseDev, kOtherFuseDev}}};

    NamespaceScan cache_only = scan_namespaces(proc.root(), 1, {}, {kFuseDev, kOtherFuseDev});
    EXPECT_TRUE(cache_only.namespaces.empty());
    EXPECT_EQ(holdings_of(cache_only), everyone);
    EXPECT_EQ(cache_only.distinct_namespaces, 4);

    NamespaceScan one = scan_namespaces(proc.root(), 1, {kOtherFuseDev}, {kFuseDev});
    EXPECT_EQ(holdings_of(one), everyone);
    std::set<std::uint64_t> parsed;
    for (const auto& v : one.namespaces) {
        parsed.insert(v.ns_inode);
        EXPECT_TRUE(has_device(v.table, kOtherFuseDev));
    }
    EXPECT_EQ(parsed, (std::set<std::uint64_t>{ns_c, ns_d}));
    for (const auto& h : one.holdings)
        EXPECT_EQ(h.pid, h.ns_inode == ns_a ? 100 : h.ns_inode == ns_c ? 300 : 400);

    // Nothing remembered: holdings are the wanted ones' holders.
    NamespaceScan plain = scan_namespaces(proc.root(), 1, {kFuseDev});
    EXPECT_EQ(holdings_of(plain),
              (std::map<std::uint64_t, std::vector<dev_t>>{{ns_a, {kFuseDev}}, {ns_d, {kFuseDev}}}));
}

TEST(ScanNamespacesFake, ProcessesThatExitedAreSkipped) {
    FakeProc proc;
    proc.add_namespace("self");
    proc.add_namespace("a");
    proc.add_process(1, "self", kRootLine);
    proc.add_process(100, "a", kRootLine + kContainerLine);
    // Gone before its ns link could be read: a pid dir without ns/mnt.
    fs::create_directories(proc.root() + "/150");
    NamespaceScan s = scan_namespaces(proc.root(), 1, {kFuseDev});
    EXPECT_EQ(s.processes, 3);
    ASSERT_EQ(s.namespaces.size(), 1u);
    EXPECT_EQ(s.namespaces[0].pid, 100);
}

TEST(ScanNamespacesFake, NamespaceIsFoundWhenItsFirstProcessExitsMidScan) {
    // The first process of a namespace exits between the stat of its ns
    // link and the read of its mountinfo (a short-lived exec in a
    // container). Its namespace still has live processes holding the
    // device, so the namespace must still be found through them.
    FakeProc proc;
    proc.add_namespace("self");
    const ino_t ns_a = proc.add_namespace("a");
    proc.add_process(1, "self", kRootLine);
    for (int pid : {100, 101, 102, 103}) proc.add_process(pid, "a", kRootLine + kContainerLine);
    std::vector<int> order = proc.pids_in_readdir_order();
    int first_a = 0;
    for (int pid : order)
        if (pid != 1) {
            first_a = pid;
            break;
        }
    ASSERT_NE(first_a, 0);
    fs::remove(proc.root() + "/" + std::to_string(first_a) + "/mountinfo");

    NamespaceScan s = scan_namespaces(proc.root(), 1, {kFuseDev});
    EXPECT_EQ(s.processes, 5);
    ASSERT_EQ(s.namespaces.size(), 1u)
        << "the namespace of pids 100-103 was lost because pid " << first_a
        << " (the first one read) had exited; it is marked seen before its mountinfo is read";
    EXPECT_EQ(s.namespaces[0].ns_inode, ns_a);
    EXPECT_NE(s.namespaces[0].pid, first_a);
}

TEST(ScanNamespacesFake, MissingProcRootIsEmpty) {
    NamespaceScan s = scan_namespaces("/nonexistent/proc", 1, {kFuseDev});
    EXPECT_EQ(s.processes, 0);
    EXPECT_EQ(s.distinct_namespaces, 0);
    EXPECT_TRUE(s.namespaces.empty());
}

ino_t own_ns_inode() {
    struct stat st {};
    if (::stat("/proc/self/ns/mnt", &st) != 0) return 0;
    return st.st_ino;
}

TEST(ScanNamespacesReal, DeviceNoMountHasFindsNothing) {
    // Anonymous device numbers this high are never allocated in practice.
    const dev_t nobody = ::makedev(0xfff, 0xffff0);
    NamespaceScan s = scan_namespaces("/proc", ::getpid(), {nobody});
    EXPECT_TRUE(s.namespaces.empty());
    EXPECT_GT(s.processes, 0);
    // At least we and our parent are processes.
    EXPECT_GE(s.processes, 2);
    EXPECT_GE(s.distinct_namespaces, 0);
    EXPECT_LE(s.distinct_namespaces, s.processes);
}

TEST(ScanNamespacesReal, RootDeviceIsLookedForInOtherNamespacesOnly) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root: other processes' ns links are not readable otherwise";
    struct stat root {};
    ASSERT_EQ(::stat("/", &root), 0);
    const ino_t own = own_ns_inode();
    ASSERT_NE(own, 0u);
    NamespaceScan s = scan_namespaces("/proc", ::getpid(), {root.st_dev});
    EXPECT_GT(s.processes, 0);
    std::set<std::uint64_t> inodes;
    for (const auto& v : s.namespaces) {
        EXPECT_NE(v.ns_inode, own) << "our own namespace was returned (pid " << v.pid << ")";
        EXPECT_NE(v.pid, ::getpid());
        EXPECT_TRUE(has_device(v.table, root.st_dev)) << "pid " << v.pid;
        EXPECT_TRUE(inodes.insert(v.ns_inode).second) << "namespace " << v.ns_inode << " returned twice";
    }
}

TEST(ScanNamespacesReal, FindsAChildInItsOwnMountNamespace) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (CAP_SYS_ADMIN) to unshare a mount namespace";
    int ready[2], release[2];
    ASSERT_EQ(::pipe(ready), 0);
    ASSERT_EQ(::pipe(release), 0);
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        // Only async-signal-safe calls here: the parent may have threads.
        ::close(ready[0]);
        ::close(release[1]);
        char ok = ::unshare(CLONE_NEWNS) == 0 ? 'y' : 'n';
        if (::write(ready[1], &ok, 1) != 1) ::_exit(2);
        char c;
        (void)::read(release[0], &c, 1);
        ::_exit(0);
    }
    ::close(ready[1]);
    ::close(release[0]);
    char ok = 0;
    ASSERT_EQ(::read(ready[0], &ok, 1), 1);
    auto finish = [&] {
        ::close(release[1]);
        ::close(ready[0]);
        int status = 0;
        ::waitpid(child, &status, 0);
    };
    if (ok != 'y') {
        finish();
        GTEST_SKIP() << "unshare(CLONE_NEWNS) is not permitted here";
    }
    struct stat child_ns {}, root {};
    const std::string link = "/proc/" + std::to_string(child) + "/ns/mnt";
    ASSERT_EQ(::stat(link.c_str(), &child_ns), 0);
    ASSERT_EQ(::stat("/", &root), 0);
    ASSERT_NE(child_ns.st_ino, own_ns_inode());

    NamespaceScan with = scan_namespaces("/proc", ::getpid(), {root.st_dev});
    NamespaceScan without = scan_namespaces("/proc", ::getpid(), {::makedev(0xfff, 0xffff0)});
    finish();

    const NamespaceView* found = nullptr;
    for (const auto& v : with.namespaces)
        if (v.ns_inode == child_ns.st_ino) found = &v;
    ASSERT_NE(found, nullptr) << "the child's namespace (inode " << child_ns.st_ino << ") was not found";
    EXPECT_TRUE(has_device(found->table, root.st_dev));
    for (const auto& v : without.namespaces) EXPECT_NE(v.ns_inode, child_ns.st_ino);
    EXPECT_GE(without.distinct_namespaces, 1);
}

} // namespace
} // namespace fh
