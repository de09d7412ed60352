// Tests of PackedStrings (core/packed_strings.h).
#include "core/packed_strings.h"

#include <gtest/gtest.h>

namespace fh {
namespace {

TEST(PackedStrings, ReturnsEachFieldAsPacked) {
    const std::string path = "/var/lib/kubelet/pods/0f3c5a1e-7d2b-4c89-9e61-2a4b8c0d1e2f/volumes/x/mount";
    const PackedStrings<4> p({path, "", "a", "fuse.csi.fluid.io"});
    EXPECT_EQ(p[0], path);
    EXPECT_EQ(p[1], "");
    EXPECT_EQ(p[2], "a");
    EXPECT_EQ(p[3], "fuse.csi.fluid.io");
}

TEST(PackedStrings, EmptyFieldsAndBytesOfAnyValue) {
    const std::string odd("with\0nul and\nnewline", 20);
    const PackedStrings<3> p({"", odd, ""});
    EXPECT_EQ(p[0], "");
    EXPECT_EQ(p[1], odd);
    EXPECT_EQ(p[2], "");
    const PackedStrings<2> none;
    EXPECT_EQ(none[0], "");
    EXPECT_EQ(none[1], "");
}

} // namespace
} // namespace fh
