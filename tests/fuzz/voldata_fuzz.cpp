// Fuzz target: kubelet's vol_data.json (core/voldata.h), which any pod's
// volume directory holds and the daemon reads on inotify events.
//
// Invariants: no exception escapes; an error is "parse vol_data" with the
// name and a detail; a parsed file's fields, written back as JSON, parse to
// the same fields.
#include <nlohmann/json.hpp>

#include "core/voldata.h"
#include "fuzz_check.h"

using fh::fuzz::show;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text = fh::fuzz::text_of(data, size);
    const std::string name = "/pods/uid/volumes/kubernetes.io~csi/pvc/vol_data.json";
    fh::Result<fh::VolumeData> r = [&] {
        try {
            return fh::parse_vol_data(text, name);
        } catch (const std::exception& e) {
            fh::fuzz::fail(__FILE__, __LINE__, "no exception", std::string("parse_vol_data threw: ") + e.what());
        }
    }();
    if (!r) {
        FH_FUZZ_CHECK(r.error().what == "parse vol_data" && r.error().path == name && !r.error().detail.empty(),
                      "error without context: " + r.error().message());
        return 0;
    }
    const fh::VolumeData& v = *r;
    nlohmann::json doc{{"driverName", v.driver_name}, {"volumeHandle", v.volume_handle}, {"specVolID", v.spec_vol_id}};
    if (!v.pod_uid.empty()) doc["podUID"] = v.pod_uid;
    const std::string again_text = doc.dump();  // the strings came from JSON: valid UTF-8, dump() cannot throw
    const fh::Result<fh::VolumeData> again = fh::parse_vol_data(again_text, name);
    FH_FUZZ_CHECK(again.ok(), "written back, it does not parse: " + again.error().message());
    FH_FUZZ_CHECK(again->driver_name == v.driver_name && again->volume_handle == v.volume_handle &&
                      again->spec_vol_id == v.spec_vol_id && again->pod_uid == v.pod_uid,
                  "round trip changed the fields of " + show(text));
    return 0;
}
