#include "core/voldata.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>

namespace fh {
namespace {

using nlohmann::json;

const std::string kName =
    "/var/lib/kubelet/pods/0b6f1c1e-4a52-4c0e-9a51-6f1f2b8e9d01/volumes/kubernetes.io~csi/pvc-1/vol_data.json";

// As kubelet writes it (one line, keys sorted).
const std::string kSample =
    R"({"attachmentID":"csi-7c0e2b4a9d1f3e5c8a6b0d2f4e6a8c0b2d4f6e8a0c2b4d6f8e0a2c4b6d8f0e2a",)"
    R"("driverName":"fuse.csi.fluid.io","nodeName":"n1",)"
    R"("podUID":"0b6f1c1e-4a52-4c0e-9a51-6f1f2b8e9d01","specVolID":"pvc-1",)"
    R"("volumeHandle":"default-ds","volumeLifecycleMode":"Persistent","volumeName":"pvc-1"})";

void expect_error(const std::string& text, const std::string& detail) {
    auto r = parse_vol_data(text, kName);
    ASSERT_FALSE(r.ok()) << "parsed: " << text;
    EXPECT_EQ(r.error().what, "parse vol_data");
    EXPECT_EQ(r.error().path, kName);
    EXPECT_NE(r.error().detail.find(detail), std::string::npos)
        << "detail: " << r.error().detail << "\nwanted: " << detail;
}

TEST(VolData, KubeletSample) {
    auto r = parse_vol_data(kSample, kName);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(r->driver_name, "fuse.csi.fluid.io");
    EXPECT_EQ(r->volume_handle, "default-ds");
    EXPECT_EQ(r->spec_vol_id, "pvc-1");
    EXPECT_EQ(r->pod_uid, "0b6f1c1e-4a52-4c0e-9a51-6f1f2b8e9d01");
}

TEST(VolData, PodUidIsOptional) {
    json d = json::parse(kSample);
    d.erase("podUID");
    auto r = parse_vol_data(d.dump(), kName);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(r->pod_uid, "");
    EXPECT_EQ(r->driver_name, "fuse.csi.fluid.io");
}

TEST(VolData, UnknownFieldsAreIgnored) {
    json d = json::parse(kSample);
    d["seLinuxMountContext"] = "system_u:object_r:container_file_t:s0";
    d["someFutureField"] = json::object({{"nested", true}});
    auto r = parse_vol_data(d.dump(2), kName);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(r->spec_vol_id, "pvc-1");
}

TEST(VolData, RequiredFields) {
    for (const char* key : {"driverName", "volumeHandle", "specVolID"}) {
        json d = json::parse(kSample);
        d.erase(key);
        expect_error(d.dump(), std::string(key) + ": missing");
        d[key] = 42;
        expect_error(d.dump(), std::string(key) + ": not a string");
        d[key] = nullptr;
        expect_error(d.dump(), std::string(key) + ": not a string");
    }
    json d = json::parse(kSample);
    d["podUID"] = json::array();
    expect_error(d.dump(), "podUID: not a string");
}

TEST(VolData, BadJson) {
    expect_error("", "bad JSON");
    expect_error(kSample.substr(0, kSample.size() / 2), "bad JSON");  // a torn write
    expect_error("{\"driverName\": 1e999}", "bad JSON: [json.exception.out_of_range.406] number overflow");
    expect_error("[\"driverName\"]", "not a JSON object");
    expect_error("\"fuse.csi.fluid.io\"", "not a JSON object");
    EXPECT_EQ(parse_vol_data("{", "x.json").error().message().rfind("parse vol_data x.json: bad JSON", 0),
              0u);
}

} // namespace
} // namespace fh
