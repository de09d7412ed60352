// Tests of read_fusectl and LivenessProber (engine/liveness.h) with a fake
// fusectl directory and statx probes of ordinary paths. Hung and dead FUSE
// daemons need real mounts: those are integration tests.
#include "engine/liveness.h"

#include <sys/sysmacros.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "temp_dir.h"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

namespace fh {
namespace {

using testing_support::spit;
using testing_support::TempDir;

namespace fs = std::filesystem;
using namespace std::chrono_literals;



// A fake fusectl tree: <dir>/<minor>/{max_background,waiting}.
class FakeFusectl {
public:
    const std::string& dir() const { return tmp_.path(); }

    // Adds a connection for anonymous device 0:<minor> and returns the device.
    dev_t add(unsigned minor_no, const std::string& max_background, const std::string* waiting) {
        const std::string d = tmp_ / std::to_string(minor_no);
        fs::create_directories(d);
        spit(d + "/max_background", max_background);
        if (waiting) spit(d + "/waiting", *waiting);
        return ::makedev(0, minor_no);
    }
    dev_t add(unsigned minor_no, const std::string& max_background, const std::string& waiting) {
        return add(minor_no, max_background, &waiting);
    }

private:
    TempDir tmp_;
};

KernelFeatures with_fusectl(const std::string& dir) {
    KernelFeatures f;
    f.fusectl = true;
    f.fusectl_dir = dir;
    return f;
}

TEST(FusectlAborted, ReadsTheMarkerOnly) {
    FakeFusectl ctl;
    const dev_t live = ctl.add(40, "12\n", "3\n");
    const dev_t dead = ctl.add(41, "4294967295\n", nullptr);
    EXPECT_EQ(fusectl_aborted(ctl.dir(), live), false);
    EXPECT_EQ(fusectl_aborted(ctl.dir(), dead), true);
    EXPECT_EQ(fusectl_aborted(ctl.dir(), ::makedev(0, 42)), std::nullopt) << "no such connection";
    // Above minor 255 the directory is still named by the minor.
    const dev_t high = ctl.add(946, "4294967295\n", "0\n");
    EXPECT_EQ(high, ::makedev(0, 946));
    EXPECT_EQ(fusectl_aborted(ctl.dir(), high), true);
    EXPECT_TRUE(read_fusectl(ctl.dir(), high).aborted);
}

TEST(AbortFuseConnection, WritesToTheAbortFile) {
    FakeFusectl ctl;
    const dev_t dev = ctl.add(43, "12\n", "2\n");
    spit(ctl.dir() + "/43/abort", "");
    ASSERT_TRUE(abort_fuse_connection(ctl.dir(), dev).ok());
    EXPECT_EQ(testing_support::slurp(ctl.dir() + "/43/abort"), "1");
    const Status missing = abort_fuse_connection(ctl.dir(), ::makedev(0, 44));
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(missing.error().err, ENOENT);
    EXPECT_NE(missing.error().message().find("/44/abort"), std::string::npos) << missing.error().message();
}

TEST(ReadFusectl, HealthyConnection) {
    FakeFusectl fc;
    dev_t dev = fc.add(57, "12\n", "0\n");
    FusectlReading r = read_fusectl(fc.dir(), dev);
    EXPECT_TRUE(r.present);
    EXPECT_FALSE(r.aborted);
    EXPECT_EQ(r.waiting, 0u);
}

TEST(ReadFusectl, AbortedConnection) {
    FakeFusectl fc;
    dev_t dev = fc.add(58, "4294967295\n", "0\n");
    FusectlReading r = read_fusectl(fc.dir(), dev);
    EXPECT_TRUE(r.present);
    EXPECT_TRUE(r.aborted);
}

TEST(ReadFusectl, WaitingRequests) {
    FakeFusectl fc;
    dev_t dev = fc.add(59, "12\n", "3\n");
    FusectlReading r = read_fusectl(fc.dir(), dev);
    EXPECT_TRUE(r.present);
    EXPECT_FALSE(r.aborted);
    EXPECT_EQ(r.waiting, 3u);
}

TEST(ReadFusectl, NamedByTheMinorOfTheDevice) {
    FakeFusectl fc;
    fc.add(60, "12\n", "7\n");
    fc.add(61, "4294967295\n", "0\n");
    // Minors above 255 are encoded apart from the low byte in a dev_t.
    dev_t big = fc.add(1234, "4294967295\n", "2\n");
    EXPECT_EQ(read_fusectl(fc.dir(), ::makedev(0, 60)).waiting, 7u);
    EXPECT_FALSE(read_fusectl(fc.dir(), ::makedev(0, 60)).aborted);
    EXPECT_TRUE(read_fusectl(fc.dir(), ::makedev(0, 61)).aborted);
    FusectlReading r = read_fusectl(fc.dir(), big);
    EXPECT_TRUE(r.present);
    EXPECT_TRUE(r.aborted);
    EXPECT_EQ(r.waiting, 2u);
}

TEST(ReadFusectl, MissingConnectionOrDirIsNotPresent) {
    FakeFusectl fc;
    fc.add(57, "12\n", "0\n");
    FusectlReading r = read_fusectl(fc.dir(), ::makedev(0, 99));
    EXPECT_FALSE(r.present);
    EXPECT_FALSE(r.aborted);
    EXPECT_EQ(r.waiting, 0u);
    FusectlReading n = read_fusectl("/nonexistent/fusectl", ::makedev(0, 57));
    EXPECT_FALSE(n.present);
    EXPECT_FALSE(n.aborted);
}

TEST(ReadFusectl, MissingWaitingFileReadsAsZero) {
    FakeFusectl fc;
    dev_t dev = fc.add(62, "12\n", nullptr);
    FusectlReading r = read_fusectl(fc.dir(), dev);
    EXPECT_TRUE(r.present);
    EXPECT_FALSE(r.aborted);
    EXPECT_EQ(r.waiting, 0u);
}

TEST(LivenessProber, MethodNamesTheDetection) {
    LivenessProber a(with_fusectl("/x"), 1s, nullptr);
    EXPECT_STREQ(a.method(), "fusectl");
    LivenessProber b(KernelFeatures{}, 1s, nullptr);
    EXPECT_STREQ(b.method(), "statx");
}

TEST(LivenessProber, FusectlAbortedIsDeadAndHealthyIsAlive) {
    FakeFusectl fc;
    TempDir tmp;
    dev_t dead = fc.add(70, "4294967295\n", "0\n");
    dev_t alive = fc.add(71, "12\n", "0\n");
    // An aborted connection with requests still queued is dead too.
    dev_t dead_busy = fc.add(72, "4294967295\n", "5\n");
    std::atomic<int> late{0};
    // A zero probe timeout: any statx probe would come back Unresponsive,
    // so Alive and Dead here can only come from fusectl. The paths do not
    // exist either (a statx of them would fail with ENOENT).
    LivenessProber p(with_fusectl(fc.dir()), 0us, [&] { ++late; });
    LivenessMap m = p.check({{dead, tmp / "missing-a"}, {alive, tmp / "missing-b"}, {dead_busy, tmp / "missing-c"}});
    ASSERT_EQ(m.size(), 3u);
    EXPECT_EQ(m[dead], Liveness::Dead);
    EXPECT_EQ(m[alive], Liveness::Alive);
    EXPECT_EQ(m[dead_busy], Liveness::Dead);
    EXPECT_EQ(late.load(), 0);
}

TEST(LivenessProber, FusectlWithWaitingRequestsFallsBackToStatx) {
    FakeFusectl fc;
    TempDir tmp;
    fs::create_directory(tmp / "mnt");
    dev_t busy = fc.add(73, "12\n", "3\n");
    LivenessProber p(with_fusectl(fc.dir()), 5s, nullptr);
    const auto start = std::chrono::steady_clock::now();
    LivenessMap m = p.check({{busy, tmp / "mnt"}});
    EXPECT_LT(std::chrono::steady_clock::now() - start, 4s);
    ASSERT_EQ(m.size(), 1u);
    EXPECT_EQ(m[busy], Liveness::Alive);
}

TEST(LivenessProber, FusectlWithWaitingRequestsStartsAProbeThatCanTimeOut) {
    // With a zero timeout a statx probe can (almost always) not finish in
    // time: the device is Unresponsive and the probe, finishing later,
    // reports a late result. A connection with waiting == 0 never probes.
    FakeFusectl fc;
    TempDir tmp;
    std::atomic<int> late{0};
    LivenessProber p(with_fusectl(fc.dir()), 0us, [&] { ++late; });
    // A path that takes the kernel a while to resolve (1500 "." components),
    // so the probe thread rarely beats the zero deadline. Rarely, not never:
    // on a loaded machine the checking thread can lose the CPU right after
    // starting the probe, and 20 probes in a row once all won (1 run in 97
    // beside two busy loops). So it checks on, up to 2,000 times, until one
    // probe has timed out.
    std::string slow = tmp.path();
    for (int i = 0; i < 1500; ++i) slow += "/.";
    int unresponsive = 0;
    for (unsigned i = 0; i < 20 || (unresponsive == 0 && i < 2000); ++i) {
        dev_t idle = fc.add(10000 + i, "12\n", "0\n");
        EXPECT_EQ(p.check({{idle, slow}})[idle], Liveness::Alive);
        dev_t busy = fc.add(20000 + i, "12\n", "1\n");
        LivenessMap m = p.check({{busy, slow}});
        EXPECT_TRUE(m[busy] == Liveness::Unresponsive || m[busy] == Liveness::Alive) << to_string(m[busy]);
        if (m[busy] == Liveness::Unresponsive) ++unresponsive;
    }
    EXPECT_GT(unresponsive, 0) << "no check with waiting > 0 ever waited on a statx probe";
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (late.load() < unresponsive && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(5ms);
    EXPECT_EQ(late.load(), unresponsive) << "each timed-out probe reports its late result once";
}

TEST(LivenessProber, FusectlWithoutTheConnectionDirFallsBackToStatx) {
    FakeFusectl fc;
    TempDir tmp;
    LivenessProber p(with_fusectl(fc.dir()), 5s, nullptr);
    const dev_t unknown = ::makedev(0, 74);
    LivenessMap m = p.check({{unknown, tmp.path()}});
    ASSERT_EQ(m.size(), 1u);
    EXPECT_EQ(m[unknown], Liveness::Alive);
}

TEST(LivenessProber, OneAnswerPerDevice) {
    FakeFusectl fc;
    TempDir tmp;
    dev_t dead = fc.add(75, "4294967295\n", "0\n");
    LivenessProber p(with_fusectl(fc.dir()), 5s, nullptr);
    // The same device at two paths: the first pairing decides.
    LivenessMap m = p.check({{dead, tmp.path()}, {dead, "/"}});
    ASSERT_EQ(m.size(), 1u);
    EXPECT_EQ(m[dead], Liveness::Dead);
    EXPECT_TRUE(p.check({}).empty());
}

TEST(LivenessProber, StatxOfAnExistingPathIsAlive) {
    TempDir tmp;
    fs::create_directory(tmp / "mnt");
    LivenessProber p(KernelFeatures{}, 5s, nullptr);
    const dev_t d1 = ::makedev(0, 80), d2 = ::makedev(0, 81);
    LivenessMap m = p.check({{d1, tmp / "mnt"}, {d2, "/"}});
    ASSERT_EQ(m.size(), 2u);
    EXPECT_EQ(m[d1], Liveness::Alive);
    EXPECT_EQ(m[d2], Liveness::Alive);
    // Repeated checks start fresh probes and agree.
    for (int i = 0; i < 20; ++i) EXPECT_EQ(p.check({{d1, tmp / "mnt"}})[d1], Liveness::Alive);
}

TEST(LivenessProber, StatxIgnoresAFakeFusectlWhenFusectlIsOff) {
    // fusectl=false: even a fusectl dir saying "aborted" is not consulted.
    FakeFusectl fc;
    TempDir tmp;
    dev_t dev = fc.add(82, "4294967295\n", "0\n");
    KernelFeatures f;
    f.fusectl = false;
    f.fusectl_dir = fc.dir();
    LivenessProber p(f, 5s, nullptr);
    EXPECT_EQ(p.check({{dev, tmp.path()}})[dev], Liveness::Alive);
}

TEST(LivenessProber, ProbePathOfAnExistingPathIsOk) {
    TempDir tmp;
    std::ofstream(tmp / "file") << "x";
    LivenessProber p(KernelFeatures{}, 5s, nullptr);
    for (const std::string& path : {tmp.path(), tmp / "file", std::string("/")}) {
        Status st = p.probe_path(path);
        EXPECT_TRUE(st.ok()) << path << ": " << st.error().message();
    }
}

TEST(LivenessProber, ProbePathOfAMissingPathIsENOENT) {
    TempDir tmp;
    LivenessProber p(KernelFeatures{}, 5s, nullptr);
    const std::string missing = tmp / "no/such/subdir";
    Status st = p.probe_path(missing);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().err, ENOENT) << st.error().message();
    EXPECT_EQ(st.error().path, missing);
    EXPECT_EQ(st.error().what, "probe");
}

TEST(LivenessProber, ProbePathOfAFileComponentIsENOTDIR) {
    TempDir tmp;
    std::ofstream(tmp / "file") << "x";
    LivenessProber p(KernelFeatures{}, 5s, nullptr);
    Status st = p.probe_path(tmp / "file/below");
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().err, ENOTDIR) << st.error().message();
}

TEST(LivenessProber, ProbePathDoesNotFollowATrailingSymlink) {
    TempDir tmp;
    // A dangling symlink: statx without AT_SYMLINK_NOFOLLOW would say ENOENT.
    fs::create_symlink(tmp / "nowhere", tmp / "dangling");
    LivenessProber p(KernelFeatures{}, 5s, nullptr);
    Status st = p.probe_path(tmp / "dangling");
    EXPECT_TRUE(st.ok()) << st.error().message();
}

TEST(LivenessProber, SetProbeTimeoutKeepsFastProbesWorking) {
    TempDir tmp;
    LivenessProber p(KernelFeatures{}, 5s, nullptr);
    p.set_probe_timeout(2s);
    EXPECT_TRUE(p.probe_path(tmp.path()).ok());
    EXPECT_EQ(p.probe_path(tmp / "missing").error().err, ENOENT);
}

} // namespace
} // namespace fh
