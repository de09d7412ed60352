// Tests of the pod of a process read from its cgroup (core/pod_cgroup.h),
// with /proc/<pid>/cgroup as kubelet's two cgroup drivers leave it.
#include "core/pod_cgroup.h"

#include <gtest/gtest.h>

namespace fh {
namespace {

const std::string UID = "7f2c3b1a-1234-4c1d-9e1f-0123456789ab";

TEST(PodCgroup, SystemdDriverOnCgroupV2) {
    EXPECT_EQ(pod_uid_from_cgroup("0::/kubepods.slice/kubepods-burstable.slice/"
                                  "kubepods-burstable-pod7f2c3b1a_1234_4c1d_9e1f_0123456789ab.slice/"
                                  "cri-containerd-0123abcd.scope\n"),
              UID);
    // Guaranteed pods have no QoS level in the path.
    EXPECT_EQ(pod_uid_from_cgroup("0::/kubepods.slice/kubepods-pod7f2c3b1a_1234_4c1d_9e1f_0123456789ab.slice/"
                                  "cri-containerd-0123abcd.scope\n"),
              UID);
}

TEST(PodCgroup, CgroupfsDriverOnCgroupV1AndHybrid) {
    const std::string v1 = "12:pids:/kubepods/besteffort/pod" + UID + "/0123abcd\n"
                           "11:memory:/kubepods/besteffort/pod" + UID + "/0123abcd\n"
                           "1:name=systemd:/kubepods/besteffort/pod" + UID + "/0123abcd\n"
                           "0::/\n";
    EXPECT_EQ(pod_uid_from_cgroup(v1), UID);
    EXPECT_EQ(pod_uid_from_cgroup("0::/kubepods/pod" + UID + "/0123abcd"), UID);  // no final newline
}

TEST(PodCgroup, StaticPodsHaveAHashForUid) {
    EXPECT_EQ(pod_uid_from_cgroup("0::/kubepods/burstable/pod0123456789abcdef0123456789abcdef/x\n"),
              "0123456789abcdef0123456789abcdef");
}

TEST(PodCgroup, NoPodIsEmpty) {
    EXPECT_EQ(pod_uid_from_cgroup(""), "");
    EXPECT_EQ(pod_uid_from_cgroup("0::/system.slice/containerd.service\n"), "");
    EXPECT_EQ(pod_uid_from_cgroup("0::/kubepods.slice/kubepods-besteffort.slice\n"), "");  // the QoS level itself
    EXPECT_EQ(pod_uid_from_cgroup("0::/user.slice/podman-pod1234.slice\n"), "");          // not kubelet's
    EXPECT_EQ(pod_uid_from_cgroup("0::/kubepods/pod" + UID.substr(1) + "/c\n"), "");      // not a UID
    EXPECT_EQ(pod_uid_from_cgroup("0::/kubepods/podzf2c3b1a-1234-4c1d-9e1f-0123456789ab/c\n"), "");
    EXPECT_EQ(pod_uid_from_cgroup("garbage\n0:\n"), "");
}

TEST(PodCgroup, DisagreeingLinesAreUnknown) {
    const std::string other = "00000000-1111-2222-3333-444444444444";
    EXPECT_EQ(pod_uid_from_cgroup("2:pids:/kubepods/pod" + UID + "/c\n1:name=systemd:/kubepods/pod" + other + "/c\n"),
              "");
    // A line without a pod (a controller the container was not moved in) does not disagree.
    EXPECT_EQ(pod_uid_from_cgroup("2:pids:/kubepods/pod" + UID + "/c\n1:cpu:/\n"), UID);
}

TEST(PodCgroup, ThePathMayHoldColons) {
    EXPECT_EQ(pod_uid_from_cgroup("0::/a:b/kubepods/pod" + UID + "/c\n"), UID);
}

} // namespace
} // namespace fh
