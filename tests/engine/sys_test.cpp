// Tests of the syscall wrappers in engine/sys.h that need no mounts.
#include "engine/sys.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "temp_dir.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/model.h"
#include "core/mountinfo.h"
#include "engine/kernel_features.h"

namespace fh {
namespace {

using testing_support::slurp;
using testing_support::spit;
using testing_support::TempDir;

namespace fs = std::filesystem;



std::set<std::string> list_dir(const std::string& dir) {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
    return names;
}

bool have_openat2() {
    static const bool have = detect_kernel_features({}, "/nonexistent", false).openat2;
    return have;
}

// The two resolution modes of open_path_nofollow.
class OpenPathNofollow : public ::testing::TestWithParam<bool> {
protected:
    void SetUp() override {
        if (GetParam() && !have_openat2()) GTEST_SKIP() << "this kernel has no openat2 (Linux 5.6)";
        fs::create_directories(tmp_ / "a/b");
        spit(tmp_ / "a/b/file", "x");
        fs::create_directory_symlink(tmp_ / "a", tmp_ / "link_to_a");
        fs::create_directory_symlink("b", tmp_ / "a/rel_link_to_b");
        fs::create_symlink(tmp_ / "a/b/file", tmp_ / "a/b/file_link");
        fs::create_directory_symlink(tmp_ / "a/b", tmp_ / "a/dir_link");
    }
    bool openat2() const { return GetParam(); }

    // Asserts the path is refused with `err`, naming the path.
    void expect_refused(const std::string& path, int err) {
        auto r = sys::open_path_nofollow(path, openat2());
        ASSERT_FALSE(r.ok()) << path << " was opened (fd " << r->get() << ")";
        EXPECT_EQ(r.error().err, err) << r.error().message();
        EXPECT_EQ(r.error().path, path);
    }

    TempDir tmp_;
};

TEST_P(OpenPathNofollow, OpensAPlainPathToTheRightInode) {
    for (const std::string& p : {tmp_ / "a/b/file", tmp_ / "a/b", tmp_.path(), std::string("/")}) {
        auto r = sys::open_path_nofollow(p, openat2());
        ASSERT_TRUE(r.ok()) << p << ": " << r.error().message();
        ASSERT_TRUE(r->valid());
        struct stat by_fd {}, by_path {};
        ASSERT_EQ(::fstat(r->get(), &by_fd), 0);
        ASSERT_EQ(::lstat(p.c_str(), &by_path), 0);
        EXPECT_EQ(by_fd.st_ino, by_path.st_ino) << p;
        EXPECT_EQ(by_fd.st_dev, by_path.st_dev) << p;
        // An O_PATH descriptor: reading through it must fail.
        EXPECT_EQ(::fcntl(r->get(), F_GETFL) & O_PATH, O_PATH) << p;
    }
}

TEST_P(OpenPathNofollow, AcceptsRepeatedAndTrailingSlashes) {
    auto r = sys::open_path_nofollow(tmp_.path() + "//a///b/", openat2());
    ASSERT_TRUE(r.ok()) << r.error().message();
    struct stat by_fd {}, by_path {};
    ASSERT_EQ(::fstat(r->get(), &by_fd), 0);
    ASSERT_EQ(::stat((tmp_ / "a/b").c_str(), &by_path), 0);
    EXPECT_EQ(by_fd.st_ino, by_path.st_ino);
}

TEST_P(OpenPathNofollow, RefusesASymlinkInAMiddleComponent) {
    ASSERT_TRUE(fs::exists(tmp_ / "link_to_a/b/file"));  // resolvable when following
    expect_refused(tmp_ / "link_to_a/b/file", ELOOP);
    expect_refused(tmp_ / "a/rel_link_to_b/file", ELOOP);
}

TEST_P(OpenPathNofollow, RefusesASymlinkInTheLastComponent) {
    // The contract: no symlink in ANY component, the last one included (the
    // walk refuses it; a caller would otherwise get an fd of the link itself
    // and act on the mount holding the link).
    expect_refused(tmp_ / "a/b/file_link", ELOOP);
    expect_refused(tmp_ / "a/dir_link", ELOOP);
    expect_refused(tmp_ / "link_to_a", ELOOP);
    // Magic links as the last component.
    const std::string me = "/proc/" + std::to_string(::getpid());
    expect_refused(me + "/cwd", ELOOP);
    expect_refused(me + "/root", ELOOP);
}

TEST_P(OpenPathNofollow, RefusesProcSymlinksAndMagicLinksOnTheWay) {
    // /proc/self is a symlink; /proc/<pid>/root and /proc/<pid>/cwd are magic links.
    expect_refused("/proc/self/mountinfo", ELOOP);
    const std::string me = "/proc/" + std::to_string(::getpid());
    expect_refused(me + "/root/tmp", ELOOP);
    expect_refused(me + "/cwd/.x", ELOOP);
}

TEST_P(OpenPathNofollow, RefusesRelativeAndDotPaths) {
    for (const std::string& p : {std::string(""), std::string("a/b"), std::string("tmp"), std::string("./tmp"),
                                 tmp_ / "a/./b", tmp_ / "a/../a/b", tmp_ / "a/b/..", tmp_ / ".", std::string("/.."),
                                 std::string("/.")}) {
        auto r = sys::open_path_nofollow(p, openat2());
        ASSERT_FALSE(r.ok()) << "\"" << p << "\" was opened";
        EXPECT_EQ(r.error().err, EINVAL) << p << ": " << r.error().message();
        EXPECT_EQ(r.error().path, p);
        EXPECT_FALSE(r.error().detail.empty()) << p;
    }
}

TEST_P(OpenPathNofollow, MissingPathIsENOENT) {
    expect_refused(tmp_ / "a/nope", ENOENT);
    expect_refused(tmp_ / "nope/b/file", ENOENT);
}

TEST_P(OpenPathNofollow, FileInTheMiddleIsENOTDIR) {
    expect_refused(tmp_ / "a/b/file/x", ENOTDIR);
}

INSTANTIATE_TEST_SUITE_P(Modes, OpenPathNofollow, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& i) { return i.param ? "openat2" : "walk"; });

// Returns the id of the mount `path` is on per /proc/self/mountinfo: the
// mount with the longest mountpoint containing the path, the later one when
// several are stacked on it.
int containing_mount_id(const std::string& path) {
    auto table = read_mountinfo("/proc/self/mountinfo");
    if (!table) return -1;
    const MountEntry* best = nullptr;
    for (const auto& e : table->entries())
        if (path_is_within(path, e.mountpoint) && (!best || e.mountpoint.size() >= best->mountpoint.size()))
            best = &e;
    return best ? best->mount_id : -1;
}

// The mount id name_to_handle_at reports, or -1 when the filesystem has no
// file handles.
int handle_mount_id(const std::string& path) {
    struct {
        struct file_handle fh;
        unsigned char buf[MAX_HANDLE_SZ];
    } h {};
    h.fh.handle_bytes = MAX_HANDLE_SZ;
    int mount_id = -1;
    if (::name_to_handle_at(AT_FDCWD, path.c_str(), &h.fh, &mount_id, 0) != 0) return -1;
    return mount_id;
}

TEST(FdMountId, MatchesMountinfoForRootProcAndTmp) {
    TempDir tmp;
    std::set<int> ids;
    for (const std::string& p : {std::string("/"), std::string("/proc"), std::string("/sys"), tmp.path()}) {
        auto fd = sys::open_path_nofollow(p, false);
        ASSERT_TRUE(fd.ok()) << fd.error().message();
        auto id = sys::fd_mount_id(fd->get());
        ASSERT_TRUE(id.ok()) << id.error().message();
        const int want = containing_mount_id(p);
        ASSERT_GT(want, 0) << "no mount in /proc/self/mountinfo contains " << p;
        EXPECT_EQ(*id, want) << p;
        if (int h = handle_mount_id(p); h > 0) {
            EXPECT_EQ(*id, h) << p << " (name_to_handle_at)";
        }
        ids.insert(*id);
    }
    // / and /proc are different mounts, so the ids cannot all coincide.
    EXPECT_GE(ids.size(), 2u);
}

// The statx path (Linux 5.8+) and the fdinfo path give the same id (and
// statx fd_device's device), for different mounts, and for an O_PATH fd of a mountpoint as the executor
// opens its targets.
TEST(FdMountId, StatxGivesTheFdinfoId) {
    TempDir tmp;
    std::set<int> ids;
    for (const std::string& p : {std::string("/"), std::string("/proc"), std::string("/sys"), tmp.path()}) {
        auto fd = sys::open_path_nofollow(p, false);
        ASSERT_TRUE(fd.ok()) << fd.error().message();
        auto from_fdinfo = sys::fd_mount_id(fd->get());
        auto from_statx = sys::fd_mount_statx(fd->get(), p);
        auto device = sys::fd_device(fd->get(), p);
        ASSERT_TRUE(from_fdinfo.ok()) << from_fdinfo.error().message();
        ASSERT_TRUE(from_statx.ok()) << from_statx.error().message();
        ASSERT_TRUE(device.ok()) << device.error().message();
        EXPECT_EQ(from_statx->mount_id, *from_fdinfo) << p;
        EXPECT_EQ(from_statx->device, *device) << p;
        ids.insert(from_statx->mount_id);
    }
    EXPECT_GE(ids.size(), 2u) << "/ and /proc are different mounts";
}

TEST(FdMountId, StatxOfAClosedFdIsAnErrorNamingThePath) {
    int fd = ::open("/", O_PATH | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ::close(fd);
    auto r = sys::fd_mount_statx(fd, "/some/target");
    ASSERT_FALSE(r.ok()) << "mount id " << r->mount_id << " for a closed fd";
    EXPECT_EQ(r.error().err, EBADF) << r.error().message();
    EXPECT_EQ(r.error().path, "/some/target");
}

TEST(FdMountId, ExplicitProcSelfDirGivesTheSameId) {
    auto fd = sys::open_path_nofollow("/proc", false);
    ASSERT_TRUE(fd.ok()) << fd.error().message();
    auto a = sys::fd_mount_id(fd->get());
    auto b = sys::fd_mount_id(fd->get(), "/proc/" + std::to_string(::getpid()));
    ASSERT_TRUE(a.ok()) << a.error().message();
    ASSERT_TRUE(b.ok()) << b.error().message();
    EXPECT_EQ(*a, *b);
}

TEST(FdMountId, ClosedFdIsAnErrorNamingTheFdinfoPath) {
    int fd = ::open("/", O_PATH | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ::close(fd);
    auto r = sys::fd_mount_id(fd);
    ASSERT_FALSE(r.ok()) << "mount id " << *r << " for a closed fd";
    EXPECT_EQ(r.error().err, ENOENT) << r.error().message();
    EXPECT_EQ(r.error().path, "/proc/self/fdinfo/" + std::to_string(fd));
}

TEST(FdMountId, NoMntIdLineIsAnError) {
    // A fake proc_self whose fdinfo lacks the mnt_id line.
    TempDir tmp;
    fs::create_directories(tmp / "fdinfo");
    spit(tmp / "fdinfo/3", "pos:\t0\nflags:\t012000000\n");
    auto r = sys::fd_mount_id(3, tmp.path());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().path, tmp / "fdinfo/3");
    // And one that has it is parsed wherever the line is.
    spit(tmp / "fdinfo/4", "pos:\t0\nflags:\t012000000\nmnt_id:\t4242\nino:\t7\n");
    auto ok = sys::fd_mount_id(4, tmp.path());
    ASSERT_TRUE(ok.ok()) << ok.error().message();
    EXPECT_EQ(*ok, 4242);
}

TEST(WriteFileAtomically, WritesContentAndLeavesNoTempFile) {
    TempDir tmp;
    std::string content;
    for (int i = 0; i < 5000; ++i) content += "line " + std::to_string(i) + "\n";
    content.push_back('\0');
    content += "after-nul";
    const std::string path = tmp / "state.json";
    auto st = sys::write_file_atomically(path, content);
    ASSERT_TRUE(st.ok()) << st.error().message();
    EXPECT_EQ(slurp(path), content);
    EXPECT_EQ(list_dir(tmp.path()), std::set<std::string>{"state.json"});
}

TEST(WriteFileAtomically, WritesAnEmptyFile) {
    TempDir tmp;
    auto st = sys::write_file_atomically(tmp / "empty", "");
    ASSERT_TRUE(st.ok()) << st.error().message();
    ASSERT_TRUE(fs::exists(tmp / "empty"));
    EXPECT_EQ(fs::file_size(tmp / "empty"), 0u);
}

TEST(WriteFileAtomically, ReplacesAnExistingFileByRename) {
    TempDir tmp;
    const std::string path = tmp / "f";
    spit(path, "old content that is longer than the new one");
    // A second link to the old inode: an atomic replace leaves it untouched,
    // an in-place rewrite would change it.
    fs::create_hard_link(path, tmp / "old_link");
    struct stat before {};
    ASSERT_EQ(::stat(path.c_str(), &before), 0);
    auto st = sys::write_file_atomically(path, "new");
    ASSERT_TRUE(st.ok()) << st.error().message();
    EXPECT_EQ(slurp(path), "new");
    EXPECT_EQ(slurp(tmp / "old_link"), "old content that is longer than the new one");
    struct stat after {};
    ASSERT_EQ(::stat(path.c_str(), &after), 0);
    EXPECT_NE(before.st_ino, after.st_ino);
    EXPECT_EQ(list_dir(tmp.path()), (std::set<std::string>{"f", "old_link"}));
}

TEST(WriteFileAtomically, MissingDirectoryFailsWithPathAndErrno) {
    TempDir tmp;
    const std::string path = tmp / "no/such/dir/f";
    auto st = sys::write_file_atomically(path, "x");
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().err, ENOENT) << st.error().message();
    EXPECT_EQ(st.error().path.rfind(path, 0), 0u) << "error path: " << st.error().path;
    EXPECT_NE(st.error().message().find(path), std::string::npos) << st.error().message();
    EXPECT_FALSE(fs::exists(tmp / "no"));
}

TEST(WriteFileAtomically, ReadOnlyDirectoryFailsWithPathAndErrno) {
    if (::geteuid() == 0)
        GTEST_SKIP() << "running as root: root bypasses directory permissions (CAP_DAC_OVERRIDE), "
                        "so a read-only directory cannot make the write fail; run as non-root to cover it";
    TempDir tmp;
    fs::create_directory(tmp / "ro");
    spit(tmp / "ro/f", "old");
    ASSERT_EQ(::chmod((tmp / "ro").c_str(), 0555), 0);
    const std::string path = tmp / "ro/f";
    auto st = sys::write_file_atomically(path, "new");
    ::chmod((tmp / "ro").c_str(), 0700);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().err, EACCES) << st.error().message();
    EXPECT_EQ(st.error().path.rfind(path, 0), 0u) << "error path: " << st.error().path;
    EXPECT_EQ(slurp(path), "old");
    EXPECT_EQ(list_dir(tmp / "ro"), std::set<std::string>{"f"});
}

TEST(WriteFileAtomically, FailedRenameRemovesTheTempFile) {
    TempDir tmp;
    // The destination is a non-empty directory: the rename must fail.
    fs::create_directories(tmp / "d/child");
    auto st = sys::write_file_atomically(tmp / "d", "x");
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().what, "rename") << st.error().message();
    EXPECT_TRUE(st.error().err == EISDIR || st.error().err == ENOTEMPTY || st.error().err == EEXIST)
        << st.error().message();
    EXPECT_EQ(list_dir(tmp.path()), std::set<std::string>{"d"});
    EXPECT_TRUE(fs::is_directory(tmp / "d/child"));
}

TEST(ReadSmallFile, ReadsProcFiles) {
    auto status = sys::read_small_file("/proc/self/status");
    ASSERT_TRUE(status.ok()) << status.error().message();
    EXPECT_NE(status->find("\nPid:\t" + std::to_string(::getpid()) + "\n"), std::string::npos) << *status;

    auto version = sys::read_small_file("/proc/version");
    ASSERT_TRUE(version.ok()) << version.error().message();
    EXPECT_EQ(version->rfind("Linux version ", 0), 0u) << *version;
    EXPECT_EQ(*version, slurp("/proc/version"));

    // procfs files report size 0; the read loop must not rely on st_size.
    auto mi = sys::read_small_file("/proc/self/mountinfo");
    ASSERT_TRUE(mi.ok()) << mi.error().message();
    EXPECT_FALSE(mi->empty());
    EXPECT_EQ(mi->back(), '\n');
    auto parsed = parse_mountinfo_text(*mi, "/proc/self/mountinfo");
    ASSERT_TRUE(parsed.ok()) << parsed.error().message();
    EXPECT_GT(parsed->entries().size(), 1u);
}

TEST(ReadSmallFile, ReadsFilesLargerThanOneBuffer) {
    TempDir tmp;
    std::string content(100000, 'a');
    for (std::size_t i = 0; i < content.size(); i += 7) content[i] = static_cast<char>('0' + i % 10);
    spit(tmp / "big", content);
    auto r = sys::read_small_file(tmp / "big");
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(*r, content);
}

TEST(ReadSmallFile, MissingFileIsENOENTWithPath) {
    auto r = sys::read_small_file("/proc/self/no-such-file");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().err, ENOENT);
    EXPECT_EQ(r.error().path, "/proc/self/no-such-file");
}

TEST(MountNsId, MatchesStatOfProcSelfNsMnt) {
    auto id = sys::mount_ns_id("/proc", ::getpid());
    ASSERT_TRUE(id.ok()) << id.error().message();
    struct stat st {};
    ASSERT_EQ(::stat("/proc/self/ns/mnt", &st), 0);
    EXPECT_EQ(id->first, st.st_dev);
    EXPECT_EQ(id->second, st.st_ino);
    auto bad = sys::mount_ns_id("/proc", -5);
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.error().err, ENOENT);
}

} // namespace
} // namespace fh
