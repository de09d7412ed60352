// Tests of NamespaceWorkers: jobs enter real mount namespaces (of child
// processes that unshared one; nothing is mounted), run at the same time,
// and every thread is back in the daemon's namespace afterwards.
#include "engine/ns_worker.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace fh {
namespace {

// Returns the inode of the calling thread's mount namespace, or 0.
std::uint64_t own_ns_inode() {
    struct stat st {};
    if (::stat("/proc/thread-self/ns/mnt", &st) != 0) return 0;
    return st.st_ino;
}

// A child process in a mount namespace of its own, killed on destruction.
class NamespaceChild {
public:
    NamespaceChild() {
        int p[2];
        if (::pipe(p) != 0) return;
        pid_ = ::fork();
        if (pid_ == 0) {
            ::close(p[0]);
            const char ok = ::unshare(CLONE_NEWNS) == 0 ? 'y' : 'n';
            (void)!::write(p[1], &ok, 1);
            for (;;) ::pause();
        }
        ::close(p[1]);
        char ok = 'n';
        if (pid_ > 0 && ::read(p[0], &ok, 1) == 1 && ok == 'y') {
            const std::string path = "/proc/" + std::to_string(pid_) + "/ns/mnt";
            fd_.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
            struct stat st {};
            if (fd_.valid() && ::fstat(fd_.get(), &st) == 0) inode_ = st.st_ino;
        }
        ::close(p[0]);
    }
    ~NamespaceChild() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
    }
    int fd() const { return fd_.get(); }
    std::uint64_t inode() const { return inode_; }

private:
    pid_t pid_ = -1;
    sys::UniqueFd fd_;
    std::uint64_t inode_ = 0;
};

// Returns ok once `count` callers have arrived, or an Error after 10 s:
// jobs that wait for each other prove they ran at the same time.
Status meet(std::atomic<int>& arrived, int count) {
    ++arrived;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (arrived.load() < count) {
        if (std::chrono::steady_clock::now() > deadline)
            return Error{"meet", {}, ETIMEDOUT, "the jobs did not run at the same time"};
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    return {};
}

TEST(NamespaceWorkers, JobsEnterTheirNamespacesTogetherAndThreadsComeHome) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (unshare and setns of mount namespaces)";
    const std::uint64_t home = own_ns_inode();
    ASSERT_NE(home, 0u);
    constexpr int kThreads = 4;
    std::vector<std::unique_ptr<NamespaceChild>> children;
    for (int i = 0; i < kThreads; ++i) {
        children.push_back(std::make_unique<NamespaceChild>());
        ASSERT_NE(children.back()->inode(), 0u);
        ASSERT_NE(children.back()->inode(), home);
    }
    NamespaceWorkers workers(kThreads);
    ASSERT_EQ(workers.size(), static_cast<std::size_t>(kThreads));

    std::atomic<int> arrived{0};
    std::vector<std::uint64_t> seen(kThreads, 0);
    std::vector<NamespaceWorkers::Job> jobs;
    for (int i = 0; i < kThreads; ++i)
        jobs.emplace_back([&, i](NamespaceWorkers::Entry& entry) -> Status {
            if (own_ns_inode() != home) return Error{"start", {}, EINVAL, "a job did not start at home"};
            if (Status s = entry.enter(children[i]->fd()); !s) return s;
            seen[i] = own_ns_inode();
            return meet(arrived, kThreads);
        });
    std::vector<Status> results = workers.run_all(jobs);
    ASSERT_EQ(results.size(), jobs.size());
    for (int i = 0; i < kThreads; ++i) {
        EXPECT_TRUE(results[i]) << results[i].error().message();
        EXPECT_EQ(seen[i], children[i]->inode()) << "job " << i;
    }

    // Every thread is back home: four jobs that meet must run on all four.
    std::atomic<int> arrived_home{0};
    std::vector<std::uint64_t> at_home(kThreads, 0);
    std::vector<NamespaceWorkers::Job> check;
    for (int i = 0; i < kThreads; ++i)
        check.emplace_back([&, i](NamespaceWorkers::Entry&) -> Status {
            at_home[i] = own_ns_inode();
            return meet(arrived_home, kThreads);
        });
    results = workers.run_all(check);
    for (int i = 0; i < kThreads; ++i) {
        EXPECT_TRUE(results[i]) << results[i].error().message();
        EXPECT_EQ(at_home[i], home) << "job " << i;
    }
}

TEST(NamespaceWorkers, AFailedEntryFailsOnlyItsJob) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (unshare and setns of mount namespaces)";
    NamespaceChild child;
    ASSERT_NE(child.inode(), 0u);
    NamespaceWorkers workers(2);
    std::vector<NamespaceWorkers::Job> jobs;
    jobs.emplace_back([](NamespaceWorkers::Entry& entry) { return entry.enter(-1); });
    jobs.emplace_back([&](NamespaceWorkers::Entry& entry) -> Status {
        if (Status s = entry.enter(child.fd()); !s) return s;
        if (own_ns_inode() != child.inode()) return Error{"enter", {}, EINVAL, "not in the child's namespace"};
        return {};
    });
    std::vector<Status> results = workers.run_all(jobs);
    ASSERT_EQ(results.size(), 2u);
    ASSERT_FALSE(results[0]);
    EXPECT_EQ(results[0].error().err, EBADF);
    EXPECT_TRUE(results[1]) << results[1].error().message();
    EXPECT_TRUE(workers.run_all({}).empty());
}

// The caller is woken once, when the last job is done (not after each):
// batches of many short jobs, some finishing at once on several threads,
// each return only after every job ran exactly once. A lost wake-up would
// hang here.
TEST(NamespaceWorkers, RunAllReturnsOnceEveryJobOfManyIsDone) {
    NamespaceWorkers workers(4);
    for (int batch = 0; batch < 50; ++batch) {
        constexpr int kJobs = 200;
        std::vector<std::atomic<int>> runs(kJobs);
        std::atomic<int> done{0};
        std::vector<NamespaceWorkers::Job> jobs;
        for (int i = 0; i < kJobs; ++i)
            jobs.emplace_back([&, i](NamespaceWorkers::Entry&) -> Status {
                if (i % 7 == batch % 7) std::this_thread::sleep_for(std::chrono::microseconds(50));
                ++runs[i];
                ++done;
                return i % 3 == 0 ? Status{Error{"job", std::to_string(i), EIO, {}}} : Status{};
            });
        std::vector<Status> results = workers.run_all(jobs);
        ASSERT_EQ(done.load(), kJobs) << "batch " << batch;
        ASSERT_EQ(results.size(), static_cast<std::size_t>(kJobs));
        for (int i = 0; i < kJobs; ++i) {
            EXPECT_EQ(runs[i].load(), 1) << "batch " << batch << ", job " << i;
            EXPECT_EQ(static_cast<bool>(results[i]), i % 3 != 0) << "batch " << batch << ", job " << i;
        }
    }
}

} // namespace
} // namespace fh
