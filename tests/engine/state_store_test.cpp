// Tests of StateStore (engine/state_store.h) on a temp directory.
#include "engine/state_store.h"

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

namespace fh {
namespace {

using testing_support::slurp;
using testing_support::spit;
using testing_support::TempDir;

namespace fs = std::filesystem;




OriginMap sample_origins() {
    OriginMap m;
    Origin a;
    a.source_path = "/runtime/default-ds/fuse";
    a.root = "/";
    a.fstype = "fuse.juicefs";
    a.source = "JuiceFS:vol";
    a.flags = MountFlags{false, true, true, false};
    m["/var/lib/kubelet/pods/u1/volumes/kubernetes.io~csi/pvc-1/mount"] = a;
    Origin b;
    b.source_path = "/runtime/other/fuse";
    b.root = "/sub dir/with\ttab";
    b.fstype = "fuse";
    b.source = "sshfs#user@host:/x";
    b.flags = MountFlags{true, false, false, true};
    m["/var/lib/kubelet/pods/u2/volume-subpaths/pvc-2/app/0"] = b;
    return m;
}

TEST(StateStore, PathIsOriginsJsonInTheDir) {
    StateStore s("/var/lib/fuse-healer");
    EXPECT_EQ(s.path(), "/var/lib/fuse-healer/origins.json");
}

TEST(StateStore, LoadOfAMissingFileIsAnEmptyMap) {
    TempDir tmp;
    StateStore missing_dir(tmp / "never-created");
    auto a = missing_dir.load();
    ASSERT_TRUE(a.ok()) << a.error().message();
    EXPECT_TRUE(a->empty());
    EXPECT_FALSE(fs::exists(tmp / "never-created"));  // load never creates anything

    StateStore empty_dir(tmp.path());
    auto b = empty_dir.load();
    ASSERT_TRUE(b.ok()) << b.error().message();
    EXPECT_TRUE(b->empty());
}

TEST(StateStore, SaveThenLoadRoundTrips) {
    TempDir tmp;
    StateStore s(tmp.path());
    const OriginMap saved = sample_origins();
    auto st = s.save(saved);
    ASSERT_TRUE(st.ok()) << st.error().message();
    EXPECT_TRUE(fs::is_regular_file(s.path()));
    auto loaded = s.load();
    ASSERT_TRUE(loaded.ok()) << loaded.error().message();
    EXPECT_EQ(*loaded, saved);
    // A second store on the same dir (a restarted daemon) sees the same.
    auto again = StateStore(tmp.path()).load();
    ASSERT_TRUE(again.ok()) << again.error().message();
    EXPECT_EQ(*again, saved);
}

TEST(StateStore, SaveReplacesThePreviousStateAndLeavesNoTempFile) {
    TempDir tmp;
    StateStore s(tmp.path());
    ASSERT_TRUE(s.save(sample_origins()).ok());
    OriginMap smaller = sample_origins();
    smaller.erase(smaller.begin());
    ASSERT_TRUE(s.save(smaller).ok());
    auto loaded = s.load();
    ASSERT_TRUE(loaded.ok()) << loaded.error().message();
    EXPECT_EQ(*loaded, smaller);
    ASSERT_TRUE(s.save(OriginMap{}).ok());
    auto empty = s.load();
    ASSERT_TRUE(empty.ok()) << empty.error().message();
    EXPECT_TRUE(empty->empty());
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(tmp.path())) names.insert(e.path().filename().string());
    EXPECT_EQ(names, std::set<std::string>{"origins.json"});
}

TEST(StateStore, SaveCreatesTheDirectory) {
    TempDir tmp;
    const std::string dir = tmp / "state";
    ASSERT_FALSE(fs::exists(dir));
    StateStore s(dir);
    auto st = s.save(sample_origins());
    ASSERT_TRUE(st.ok()) << st.error().message();
    EXPECT_TRUE(fs::is_directory(dir));
    struct stat sb {};
    ASSERT_EQ(::stat(dir.c_str(), &sb), 0);
    EXPECT_EQ(sb.st_mode & 077, 0u) << "state dir is group/other accessible: " << std::oct << sb.st_mode;
    auto loaded = s.load();
    ASSERT_TRUE(loaded.ok()) << loaded.error().message();
    EXPECT_EQ(*loaded, sample_origins());
}

TEST(StateStore, CorruptOrTruncatedFileIsAnErrorNamingThePath) {
    TempDir tmp;
    StateStore s(tmp.path());
    ASSERT_TRUE(s.save(sample_origins()).ok());
    const std::string good = slurp(s.path());
    ASSERT_GT(good.size(), 10u);
    const std::string cases[] = {
        good.substr(0, good.size() / 2),  // truncated mid-write
        "",                               // empty file
        "not json at all",
        "[1,2,3]",
        R"({"version":99,"origins":[]})",
        R"({"version":1})",
        R"({"version":1,"origins":[{"target":"/x"}]})",
    };
    for (const auto& text : cases) {
        spit(s.path(), text);
        auto r = s.load();
        ASSERT_FALSE(r.ok()) << "loaded: " << text;
        EXPECT_EQ(r.error().path, s.path()) << text;
        EXPECT_NE(r.error().message().find(s.path()), std::string::npos) << r.error().message();
        EXPECT_FALSE(r.error().detail.empty()) << text;
    }
    // The next save replaces the bad file.
    ASSERT_TRUE(s.save(sample_origins()).ok());
    auto r = s.load();
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(*r, sample_origins());
}

TEST(StateStore, UnreadableStateIsAnErrorNotEmpty) {
    TempDir tmp;
    // The state file is a directory: open succeeds, read fails with EISDIR.
    fs::create_directory(tmp / "origins.json");
    StateStore s(tmp.path());
    auto r = s.load();
    ASSERT_FALSE(r.ok()) << "loaded " << r->size() << " origins";
    EXPECT_EQ(r.error().err, EISDIR) << r.error().message();
    EXPECT_EQ(r.error().path, s.path());
}

TEST(StateStore, SaveIntoAFileInsteadOfADirFails) {
    TempDir tmp;
    spit(tmp / "afile", "x");
    StateStore s(tmp / "afile");
    auto st = s.save(sample_origins());
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().err, ENOTDIR) << st.error().message();
    EXPECT_NE(st.error().message().find(tmp / "afile"), std::string::npos) << st.error().message();
    EXPECT_EQ(slurp(tmp / "afile"), "x");
}

} // namespace
} // namespace fh
