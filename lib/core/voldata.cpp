// kubelet's vol_data.json, e.g.
// {"attachmentID":"csi-...","driverName":"fuse.csi.fluid.io","nodeName":"n1",
//  "specVolID":"pvc-1","volumeHandle":"default-ds","volumeLifecycleMode":"Persistent",
//  "podUID":"...","volumeName":"pvc-1"}
#include "core/voldata.h"

#include <exception>

#include <nlohmann/json.hpp>

namespace fh {
namespace {

using nlohmann::json;

Error vol_data_error(const std::string& name, std::string detail) {
    return Error{"parse vol_data", name, 0, std::move(detail)};
}

// Reads a string field into `out`. Returns "" on success, else why not.
std::string read_string(const json& doc, const char* key, bool required, std::string& out) {
    auto it = doc.find(key);
    if (it == doc.end()) return required ? std::string(key) + ": missing" : std::string();
    if (!it->is_string()) return std::string(key) + ": not a string";
    out = it->get<std::string>();
    return {};
}

Result<VolumeData> parse(const std::string& json_text, const std::string& name) {
    json doc;
    try {
        doc = json::parse(json_text);
    } catch (const json::exception& e) {  // parse_error, and out_of_range for "1e999"
        return vol_data_error(name, std::string("bad JSON: ") + e.what());
    }
    if (!doc.is_object()) return vol_data_error(name, "not a JSON object");
    VolumeData v;
    // Some kubelet versions do not write podUID; the pod directory names it.
    for (const auto& why : {read_string(doc, "driverName", true, v.driver_name),
                            read_string(doc, "volumeHandle", true, v.volume_handle),
                            read_string(doc, "specVolID", true, v.spec_vol_id),
                            read_string(doc, "podUID", false, v.pod_uid)})
        if (!why.empty()) return vol_data_error(name, why);
    return v;
}

} // namespace

Result<VolumeData> parse_vol_data(const std::string& json_text, const std::string& name) {
    // Nothing above throws but allocation; callers get an Error either way.
    try {
        return parse(json_text, name);
    } catch (const std::exception& e) {
        return vol_data_error(name, e.what());
    }
}

} // namespace fh
