// Tests of core/fuse_servers.h: /dev/fuse fdinfo parsing (captured files in
// tests/data/fdinfo), the connection id encoding, and the death watch's
// decisions (which pids to watch, which connections an exit orphans, when
// /proc is walked, whether the kernel names connections in fdinfo).
#include "core/fuse_servers.h"

#include <sys/sysmacros.h>

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace fh {
namespace {

const std::string kFdinfo = std::string(FH_TEST_DATA_DIR) + "/fdinfo/";

std::string slurp(const std::string& path) {
    std::ifstream in(path);
    EXPECT_TRUE(in.good()) << path;
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

TEST(FuseFdinfo, CapturedAttachedFilesNameTheirConnection) {
    EXPECT_EQ(parse_fuse_fdinfo(slurp(kFdinfo + "fh_testfs-dev-fuse.fdinfo")), 946u);
    EXPECT_EQ(parse_fuse_fdinfo(slurp(kFdinfo + "bindfs-dev-fuse.fdinfo")), 948u);
    std::ifstream in(kFdinfo + "fh_testfs-dev-fuse.fdinfo");
    EXPECT_EQ(parse_fuse_fdinfo(in), 946u) << "the stream overload reads the same";
}

TEST(FuseFdinfo, CapturedFilesWithoutAConnection) {
    EXPECT_EQ(parse_fuse_fdinfo(slurp(kFdinfo + "dev-fuse-unattached.fdinfo")), std::nullopt)
        << "a /dev/fuse file not mounted yet has no line";
    EXPECT_EQ(parse_fuse_fdinfo(slurp(kFdinfo + "pidfd.fdinfo")), std::nullopt);
    EXPECT_EQ(parse_fuse_fdinfo(slurp(kFdinfo + "regular-file.fdinfo")), std::nullopt);
    EXPECT_EQ(parse_fuse_fdinfo(""), std::nullopt);
}

TEST(FuseFdinfo, MalformedLinesAreNotConnections) {
    EXPECT_EQ(parse_fuse_fdinfo("fuse_connection:\t40\n"), 40u);
    EXPECT_EQ(parse_fuse_fdinfo("pos:\t0\nfuse_connection: 7"), 7u) << "no final newline, a space separator";
    EXPECT_EQ(parse_fuse_fdinfo("fuse_connection:\t40 \r\n"), 40u) << "trailing blanks";
    EXPECT_EQ(parse_fuse_fdinfo("fuse_connection:\t\n"), std::nullopt);
    EXPECT_EQ(parse_fuse_fdinfo("fuse_connection:\t40x\n"), std::nullopt);
    EXPECT_EQ(parse_fuse_fdinfo("fuse_connection:\t-1\n"), std::nullopt);
    EXPECT_EQ(parse_fuse_fdinfo("fuse_connection:\t4294967296\n"), std::nullopt) << "overflows 32 bits";
    EXPECT_EQ(parse_fuse_fdinfo("xfuse_connection:\t40\n"), std::nullopt) << "the key starts the line";
    EXPECT_EQ(parse_fuse_fdinfo("fuse_connections:\t40\n"), std::nullopt);
}

TEST(ConnectionId, AnonymousDevicesAboveMinor255DifferFromStDev) {
    // The captured 0:946: the fusectl directory is "946", st_dev is not.
    const dev_t dev = connection_device(946);
    EXPECT_EQ(::major(dev), 0u);
    EXPECT_EQ(::minor(dev), 946u);
    EXPECT_NE(static_cast<std::uint64_t>(dev), 946u) << "glibc splits minors above 255";
    EXPECT_EQ(connection_id(dev), 946u);
    EXPECT_EQ(connection_device(40), ::makedev(0, 40));
    EXPECT_EQ(connection_id(::makedev(0, 40)), 40u);
}

TEST(ConnectionId, FuseblkUsesTheBlockDevicesNumber) {
    // fuseblk on /dev/sda1 (8:1): the kernel's dev_t is 8 << 20 | 1.
    EXPECT_EQ(connection_id(::makedev(8, 1)), (8u << 20) | 1u);
    EXPECT_EQ(connection_device((8u << 20) | 1u), ::makedev(8, 1));
    EXPECT_EQ(connection_id(::makedev(259, 70000)), (259u << 20) | 70000u) << "20-bit minors";
    for (std::uint32_t id : {0u, 1u, 255u, 256u, 946u, 1048575u, 1048576u, (4095u << 20) | 1048575u})
        EXPECT_EQ(connection_id(connection_device(id)), id) << id;
}

FuseServer server(int pid, const std::string& comm, std::set<dev_t> connections) {
    FuseServer s;
    s.pid = pid;
    s.comm = comm;
    s.connections = std::move(connections);
    int fd = 3;
    for (dev_t c : s.connections) s.fds[fd++] = c;
    return s;
}

const dev_t kA = ::makedev(0, 40), kB = ::makedev(0, 41), kC = ::makedev(0, 946);

TEST(ServerMap, WatchesTheServersOfWantedConnectionsOnly) {
    ServerMap m{{10, server(10, "juicefs", {kA})},
                {11, server(11, "s3fs", {kB})},
                {12, server(12, "sshfs", {kC})},
                {13, server(13, "multi", {kB, kC})}};
    EXPECT_EQ(servers_to_watch(m, {kA}), (std::set<int>{10}));
    EXPECT_EQ(servers_to_watch(m, {kB}), (std::set<int>{11, 13}));
    EXPECT_EQ(servers_to_watch(m, {kA, kC}), (std::set<int>{10, 12, 13}));
    EXPECT_EQ(servers_to_watch(m, {}), (std::set<int>{}));
    EXPECT_EQ(servers_to_watch({}, {kA}), (std::set<int>{}));
}

TEST(ServerMap, AnExitOrphansOnlyConnectionsNoOtherProcessHolds) {
    // A daemon and its forked child share kA (libfuse's daemonize, a
    // supervisor that kept the fd); kB is the daemon's alone.
    ServerMap m{{10, server(10, "juicefs", {kA, kB})}, {20, server(20, "juicefs", {kA})}};
    EXPECT_EQ(connections_orphaned_by(m, 10), (std::vector<dev_t>{kB}));
    EXPECT_EQ(connections_orphaned_by(m, 20), (std::vector<dev_t>{}));
    m.erase(10);
    EXPECT_EQ(connections_orphaned_by(m, 20), (std::vector<dev_t>{kA})) << "the last one left";
    EXPECT_EQ(connections_orphaned_by(m, 99), (std::vector<dev_t>{})) << "an unknown pid orphans nothing";
}

TEST(ServerMap, OnlyNewConnectionsAreWalkedFor) {
    EXPECT_EQ(connections_to_scan({kA, kB}, {}), (std::set<dev_t>{kA, kB}));
    EXPECT_EQ(connections_to_scan({kA, kB}, {kA}), (std::set<dev_t>{kB}));
    EXPECT_EQ(connections_to_scan({kA}, {kA, kB}), (std::set<dev_t>{}));
    EXPECT_EQ(connections_to_scan({}, {kA}), (std::set<dev_t>{}));
}

TEST(FdinfoSupport, ReleasesFrom616On) {
    EXPECT_TRUE(kernel_release_has_fuse_fdinfo("6.18.44-fc-v782")) << "this machine";
    EXPECT_TRUE(kernel_release_has_fuse_fdinfo("6.16.0"));
    EXPECT_TRUE(kernel_release_has_fuse_fdinfo("6.16-rc1"));
    EXPECT_TRUE(kernel_release_has_fuse_fdinfo("7.0.0"));
    EXPECT_TRUE(kernel_release_has_fuse_fdinfo("10.2"));
    EXPECT_FALSE(kernel_release_has_fuse_fdinfo("6.15.11-200.fc42.x86_64"));
    EXPECT_FALSE(kernel_release_has_fuse_fdinfo("6.1.0-27-amd64")) << "Debian 12";
    EXPECT_FALSE(kernel_release_has_fuse_fdinfo("5.14.0-427.el9.x86_64")) << "RHEL 9 (a backport shows in a walk)";
    EXPECT_FALSE(kernel_release_has_fuse_fdinfo("4.18.0-553.el8_10.x86_64"));
    EXPECT_FALSE(kernel_release_has_fuse_fdinfo(""));
    EXPECT_FALSE(kernel_release_has_fuse_fdinfo("linux"));
}

TEST(FdinfoSupport, EvidenceDecidesAndYesIsFinal) {
    using S = FdinfoSupport;
    // A named connection is proof, whatever was believed.
    EXPECT_EQ(judge_fdinfo_support(S::Unknown, {3, 1}, 1), S::Yes);
    EXPECT_EQ(judge_fdinfo_support(S::No, {1, 1}, 0), S::Yes) << "a later walk corrects a No";
    EXPECT_EQ(judge_fdinfo_support(S::Yes, {5, 0}, 3), S::Yes) << "files met before they were mounted";
    // Files without the line while our FUSE mounts have servers: an older kernel.
    EXPECT_EQ(judge_fdinfo_support(S::Unknown, {2, 0}, 1), S::No);
    // No evidence either way.
    EXPECT_EQ(judge_fdinfo_support(S::Unknown, {0, 0}, 4), S::Unknown) << "no /dev/fuse file seen";
    EXPECT_EQ(judge_fdinfo_support(S::Unknown, {2, 0}, 0), S::Unknown)
        << "no FUSE mount tracked: the files may all be daemons still starting";
    EXPECT_STREQ(to_string(S::Unknown), "unknown");
    EXPECT_STREQ(to_string(S::Yes), "yes");
    EXPECT_STREQ(to_string(S::No), "no");
}

} // namespace
} // namespace fh
