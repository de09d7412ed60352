// Main of the integration-test executables: enters a private mount namespace
// once, before gtest (or anything else) starts a thread, so that no mount made
// by a test reaches the machine's table. When that is impossible (not root, no
// /dev/fuse), every test is skipped with the reason.
#include <gtest/gtest.h>

#include <iostream>
#include <string>

#include "harness.h"

namespace {

class PrivateNamespaceEnvironment : public ::testing::Environment {
public:
    void SetUp() override {
        const std::string& why = fh::test::namespace_skip_reason();
        if (why.empty()) return;
        // A skip here runs no test at all; print the marker ctest's
        // gtest_discover_tests looks for so they show up as skipped there.
        std::cout << "[  SKIPPED ] every test: " << why << std::endl;
        GTEST_SKIP() << why;
    }
};

}  // namespace

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    // Test discovery only lists names: no namespace needed for that.
    if (!GTEST_FLAG_GET(list_tests)) {
        std::string why;
        if (!fh::test::enter_private_mount_namespace(&why)) fh::test::set_namespace_skip_reason(why);
    }
    ::testing::AddGlobalTestEnvironment(new PrivateNamespaceEnvironment);
    return RUN_ALL_TESTS();
}
