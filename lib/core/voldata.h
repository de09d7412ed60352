// kubelet writes <root_dir>/pods/<uid>/volumes/kubernetes.io~csi/<vol>/vol_data.json
// for every CSI volume; it names the driver and the volume behind a mount.
#pragma once

#include <string>

#include "core/error.h"

namespace fh {

struct VolumeData {
    std::string driver_name;    // "driverName"
    std::string volume_handle;  // "volumeHandle"
    std::string spec_vol_id;    // "specVolID"
    std::string pod_uid;        // "podUID"
};

// Returns the fields of a vol_data.json text, or an Error (bad JSON, or a
// required field missing or not a string). Unknown fields are ignored: kubelet
// adds fields across versions.
Result<VolumeData> parse_vol_data(const std::string& json_text, const std::string& name);

} // namespace fh
