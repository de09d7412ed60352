#include "core/state_codec.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>

namespace fh {
namespace {

using nlohmann::json;

const std::string kPods = "/var/lib/kubelet/pods/0b6f1c1e-4a52-4c0e-9a51-6f1f2b8e9d01";

OriginMap sample() {
    OriginMap m;
    m[kPods + "/volumes/kubernetes.io~csi/pvc-1/mount"] =
        Origin{"/runtime-mnt/fuse/default/ds/fuse", "/", "fuse.juicefs", "JuiceFS:vol",
               MountFlags{false, true, true, false}};
    m[kPods + "/volume-subpaths/pvc-1/app/0"] =
        Origin{"/runtime-mnt/fuse/default/ds/fuse", "/sub", "fuse.juicefs", "JuiceFS:vol",
               MountFlags{true, true, true, true}};
    m["/var/lib/kubelet/plugins/kubernetes.io/csi/fuse.csi.fluid.io/abc/globalmount"] =
        Origin{"/runtime-mnt/fuse/default/ds/fuse", "/", "fuse", "", MountFlags{}};
    return m;
}

OriginMap round_trip(const OriginMap& m) {
    auto r = decode_origins(encode_origins(m));
    if (!r) {
        ADD_FAILURE() << r.error().message();
        return {};
    }
    return *r;
}

// A valid one-origin document, to break one field at a time.
json valid_doc() {
    return json::parse(R"({"version": 1, "origins": [{
        "target": "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount",
        "source_path": "/runtime/ds/fuse", "root": "/", "fstype": "fuse", "source": "ds",
        "flags": {"read_only": false, "nosuid": true, "nodev": true, "noexec": false}}]})");
}

// Expects decoding to fail with a detail containing `detail`.
void expect_error(const std::string& text, const std::string& detail) {
    auto r = decode_origins(text);
    ASSERT_FALSE(r.ok()) << "decoded: " << text;
    EXPECT_EQ(r.error().what, "decode state");
    EXPECT_NE(r.error().detail.find(detail), std::string::npos)
        << "detail: " << r.error().detail << "\nwanted: " << detail;
}

TEST(StateCodec, RoundTrip) {
    OriginMap m = sample();
    EXPECT_EQ(round_trip(m), m);
    EXPECT_EQ(round_trip({}), OriginMap{});
}

TEST(StateCodec, Format) {
    json doc = json::parse(encode_origins(sample()));
    EXPECT_EQ(doc["version"], 1);
    ASSERT_EQ(doc["origins"].size(), 3u);
    const json& first = doc["origins"][0];  // OriginMap order: by target
    EXPECT_EQ(first["target"],
              "/var/lib/kubelet/plugins/kubernetes.io/csi/fuse.csi.fluid.io/abc/globalmount");
    EXPECT_EQ(first["source_path"], "/runtime-mnt/fuse/default/ds/fuse");
    EXPECT_EQ(first["root"], "/");
    EXPECT_EQ(first["fstype"], "fuse");
    EXPECT_EQ(first["source"], "");
    EXPECT_EQ(first["flags"],
              json::parse(R"({"read_only":false,"nosuid":false,"nodev":false,"noexec":false})"));
    EXPECT_EQ(doc["origins"][2]["flags"]["read_only"], false);
    EXPECT_EQ(doc["origins"][1]["flags"]["read_only"], true);
    EXPECT_EQ(json::parse(encode_origins({})),
              json::parse(R"({"version":1,"origins":[]})"));
}

TEST(StateCodec, OddPathsRoundTrip) {
    OriginMap m;
    m["/k/pods/u/volumes/kubernetes.io~csi/my vol\\1/mount"] =
        Origin{"/runtime/a b\\c/fuse", "/sub dir", "fuse.x", "src with \"quotes\"", MountFlags{}};
    m["/k/pods/u/volume-subpaths/v/tab\tand\nnewline/0"] =
        Origin{"/runtime/new\nline", "/d\\e\tf", "fuse", "JuiceFS:vol", MountFlags{true, false, false, false}};
    m["/k/pods/u/volumes/\xc3\xa9t\xc3\xa9/mount"] =  // UTF-8 "été"
        Origin{"/runtime/\xe6\x97\xa5", "/", "fuse", "", MountFlags{}};
    EXPECT_EQ(round_trip(m), m);
    // The state file stays one JSON text: newlines inside paths are escaped.
    std::string text = encode_origins(m);
    EXPECT_EQ(text.find("new\nline"), std::string::npos);
}

TEST(StateCodec, InvalidUtf8OriginIsLeftOut) {
    OriginMap m = sample();
    m["/k/pods/u/volumes/latin1-\xe9/mount"] = Origin{"/runtime/x", "/", "fuse", "", MountFlags{}};
    m["/k/pods/u/volumes/v/mount"] = Origin{"/runtime/\xff", "/", "fuse", "", MountFlags{}};
    std::string text;
    ASSERT_NO_THROW(text = encode_origins(m));
    EXPECT_EQ(round_trip(m), sample());
}

TEST(StateCodec, RejectsBadJson) {
    expect_error("", "bad JSON");
    expect_error("{\"version\": 1, \"origins\": [", "bad JSON");
    expect_error("not json", "bad JSON");
    expect_error(std::string("{\"version\"\0: 1}", 15), "bad JSON");
    expect_error("{\"version\": 1e999, \"origins\": []}", "bad JSON: [json.exception.out_of_range.406] number overflow");
    expect_error("[]", "not a JSON object");
    expect_error("null", "not a JSON object");
}

TEST(StateCodec, RejectsWrongVersion) {
    json d = valid_doc();
    ASSERT_TRUE(decode_origins(d.dump()).ok());
    d["version"] = 2;
    expect_error(d.dump(), "version 2 is not 1");
    d["version"] = 0;
    expect_error(d.dump(), "version 0 is not 1");
    d["version"] = "1";
    expect_error(d.dump(), "version: not an integer");
    d["version"] = 1.0;
    expect_error(d.dump(), "version: not an integer");
    d.erase("version");
    expect_error(d.dump(), "version: missing");
}

TEST(StateCodec, RejectsMissingOrMistypedFields) {
    json d = valid_doc();
    d.erase("origins");
    expect_error(d.dump(), "origins: missing");
    d["origins"] = json::object();
    expect_error(d.dump(), "origins: not an array");
    d["origins"] = json::array({42});
    expect_error(d.dump(), "origins[0]: not an object");

    for (const char* key : {"target", "source_path", "root", "fstype", "source", "flags"}) {
        json m = valid_doc();
        m["origins"][0].erase(key);
        expect_error(m.dump(), std::string("origins[0].") + key + ": missing");
        m["origins"][0][key] = 7;
        expect_error(m.dump(), std::string("origins[0].") + key + ": not a");
    }
    for (const char* key : {"read_only", "nosuid", "nodev", "noexec"}) {
        json m = valid_doc();
        m["origins"][0]["flags"].erase(key);
        expect_error(m.dump(), std::string("origins[0].flags.") + key + ": missing");
        m["origins"][0]["flags"][key] = "true";
        expect_error(m.dump(), std::string("origins[0].flags.") + key + ": not a boolean");
        m["origins"][0]["flags"][key] = 1;
        expect_error(m.dump(), std::string("origins[0].flags.") + key + ": not a boolean");
    }
    // The failing element is named by index.
    json two = valid_doc();
    two["origins"].push_back(two["origins"][0]);
    two["origins"][1]["target"] = "/other";
    two["origins"][1]["fstype"] = nullptr;
    expect_error(two.dump(), "origins[1].fstype: not a string");
}

TEST(StateCodec, RejectsNonAbsolutePaths) {
    for (const char* key : {"target", "source_path", "root"}) {
        for (const char* bad : {"", "relative/path", "./x", " /x"}) {
            json d = valid_doc();
            d["origins"][0][key] = bad;
            expect_error(d.dump(), std::string("origins[0].") + key + ": not an absolute path");
        }
        json d = valid_doc();
        d["origins"][0][key] = std::string("/a\0b", 4);
        expect_error(d.dump(), std::string("origins[0].") + key + ": contains a NUL byte");
    }
}

// The daemon writes target and source paths as the kernel prints them: a
// "..", "." or empty component means the file was edited (a target would
// never match; a source would resolve elsewhere). A root may end in
// "//deleted" (core/mountinfo.h): it is kept.
TEST(StateCodec, RejectsTargetsAndSourcesThatAreNotNormalized) {
    for (const char* key : {"target", "source_path"}) {
        for (const char* bad : {"/runtime/../etc", "/runtime/./ds", "/runtime//ds", "/runtime/ds/", "/.."}) {
            json d = valid_doc();
            d["origins"][0][key] = bad;
            expect_error(d.dump(), std::string("origins[0].") + key + ": not a normalized absolute path: " + bad);
        }
    }
    json d = valid_doc();
    d["origins"][0]["root"] = "/sub//deleted";
    auto r = decode_origins(d.dump());
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(r->begin()->second.root, "/sub//deleted");
    d["origins"][0]["target"] = "/k/pods/.../volumes/..x/mount";  // odd names, not components
    EXPECT_TRUE(decode_origins(d.dump()).ok());
}

TEST(StateCodec, RejectsDuplicateTargets) {
    json d = valid_doc();
    d["origins"].push_back(d["origins"][0]);
    expect_error(d.dump(), "origins[1].target: duplicate");
}

TEST(StateCodec, IgnoresUnknownFields) {
    json d = valid_doc();
    d["written_by"] = "fuse-healer 0.1.0";
    d["origins"][0]["learned_at"] = 1700000000;
    auto r = decode_origins(d.dump());
    ASSERT_TRUE(r.ok()) << r.error().message();
    ASSERT_EQ(r->size(), 1u);
    const Origin& o = r->begin()->second;
    EXPECT_EQ(o.source_path, "/runtime/ds/fuse");
    EXPECT_EQ(o.flags, (MountFlags{false, true, true, false}));
}

TEST(StateCodec, DecodeNeverThrows) {
    for (const std::string& text :
         {std::string("{\"version\": 1, \"origins\": [{\"target\": \"\\ud800\"}]}"),
          std::string("{\"version\": 18446744073709551615, \"origins\": []}"),
          std::string("{\"version\": -1e999}"), std::string(100000, '['),
          std::string("\xff\xfe{}"), std::string("{\"version\": 1, \"origins\": [null]}")}) {
        EXPECT_NO_THROW({
            auto r = decode_origins(text);
            EXPECT_FALSE(r.ok());
        });
    }
}

} // namespace
} // namespace fh
