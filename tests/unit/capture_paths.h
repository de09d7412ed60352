// Paths in the captured mountinfo files under tests/data (see its README:
// every capture was made under /tmp/fhcap), and a loader for them.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "core/mountinfo.h"

namespace fh::capture {

inline const std::string kData = FH_TEST_DATA_DIR;
inline const std::string CT = "/tmp/fhcap";
inline const std::string CK = CT + "/kubelet";
inline const std::string CSRC = CT + "/runtime/ds1/fuse";
inline const std::string CSRC2 = CT + "/runtime/ds2/fuse";
inline const std::string CPOD1 = "0b6f1c1e-4a52-4c0e-9a51-6f1f2b8e9d01";
inline const std::string CPOD2 = "5d2e7a90-13c4-4b8f-8e3d-2c7a9f04b6e2";
inline const std::string CPOD3 = "9e8d7c6b-5a4f-4e3d-8c1b-0a9f8e7d6c5b";
inline const std::string CGLOBAL = CK + "/plugins/kubernetes.io/csi/fuse.csi.fluid.io/"
                                        "3f1c9a8e5b2d4c6f8a0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f1a3c5e7b9d1f3a/"
                                        "globalmount";
inline const std::string CVOL1 = CK + "/pods/" + CPOD1 + "/volumes/kubernetes.io~csi/pvc-1/mount";
inline const std::string CSUB1 = CK + "/pods/" + CPOD1 + "/volume-subpaths/pvc-1/app/0";
inline const std::string CVOL1B = CK + "/pods/" + CPOD1 + "/volumes/kubernetes.io~csi/pvc-2/mount";
inline const std::string CVOL2 = CK + "/pods/" + CPOD2 + "/volumes/kubernetes.io~csi/pvc-1/mount";
inline const std::string CVOL3 = CK + "/pods/" + CPOD3 + "/volumes/kubernetes.io~csi/my vol\\1/mount";
inline const std::string CSUB3 = CK + "/pods/" + CPOD3 + "/volume-subpaths/my vol\\1/tab\tand\nnewline/0";

// Returns the captured table tests/data/<name>, or an empty table after
// recording a test failure.
inline MountTable load(const std::string& name) {
    auto r = read_mountinfo(kData + "/" + name);
    if (!r) {
        ADD_FAILURE() << r.error().message();
        return {};
    }
    return *r;
}

} // namespace fh::capture
