// fh_fault_campaign: the fault campaign's driver (see campaign.h and
// tests/fault/run-campaign.sh, which gives it the short and long modes'
// numbers).
//
//   fh_fault_campaign [--phases cycles,crashloop,daemonkill,hang] [--seed N]
//                     [--targets N] [--cycles N] [--crash-loop S:N[,S:N...]]
//                     [--daemon-kills N] [--hang-seconds N] [--hang-requests N]
//                     [--reader-interval-us N] [--fast-reader-interval-us N]
//                     [--host-reader-interval-us N] [--heal-timeout-ms N]
//                     [--max-failures N] [--table FILE] [--keep-logs DIR] [--verbose]
//
// It enters a private mount namespace first (nothing it mounts reaches the
// machine's table) and needs root and /dev/fuse: without them it exits 77
// (skipped). Exit 0: every check passed; 1: a check failed (the table and
// the failures are printed); 64: bad command line.
#include <unistd.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include "campaign.h"

namespace fh::campaign {
namespace {

[[noreturn]] void usage(const std::string& why) {
    std::cerr << "fh_fault_campaign: " << why
              << "\nusage: fh_fault_campaign [--phases cycles,crashloop,daemonkill,hang] [--seed N] [--targets N]\n"
                 "         [--cycles N] [--crash-loop SECONDS:CRASHES[,...]] [--daemon-kills N]\n"
                 "         [--hang-seconds N] [--hang-requests N] [--reader-interval-us N]\n"
                 "         [--fast-reader-interval-us N] [--host-reader-interval-us N] [--heal-timeout-ms N]\n"
                 "         [--max-failures N] [--table FILE] [--keep-logs DIR] [--verbose]\n";
    std::exit(64);
}

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::string part;
    std::istringstream in(s);
    while (std::getline(in, part, sep))
        if (!part.empty()) out.push_back(part);
    return out;
}

long long number(const std::string& flag, const std::string& v) {
    char* end = nullptr;
    long long n = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end || n < 0) usage(flag + " wants a whole number >= 0, got \"" + v + "\"");
    return n;
}

std::string row(const PhaseResult& r) {
    std::ostringstream o;
    o << "| " << r.phase << " | " << r.cycles << " | " << r.heals << " | " << r.failures << " | "
      << (r.max_heal_delay_us ? fmt_us(r.max_heal_delay_us) : "-") << " | "
      << (r.max_since_event_us ? fmt_us(r.max_since_event_us) : "-") << " | " << r.leaked_mounts << " | "
      << r.bad_states << " | " << r.daemon_crashes << " | " << static_cast<long long>(r.seconds + 0.5) << " s |";
    return o.str();
}

}  // namespace
}  // namespace fh::campaign

int main(int argc, char** argv) {
    using namespace fh::campaign;
    if (argc > 1 && std::strcmp(argv[1], "--block") == 0) return run_blocker(argc, argv);

    Options o;
    o.seed = static_cast<std::uint64_t>(monotonic_usec()) ^ static_cast<std::uint64_t>(getpid());
    std::string table_path;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage(a + " needs a value");
            return argv[++i];
        };
        if (a == "--phases") o.phases = split(value(), ',');
        else if (a == "--seed") o.seed = static_cast<std::uint64_t>(number(a, value()));
        else if (a == "--targets") o.targets = static_cast<int>(number(a, value()));
        else if (a == "--cycles") o.cycles = static_cast<int>(number(a, value()));
        else if (a == "--crash-loop") {
            o.crash_loops.clear();
            for (const auto& spec : split(value(), ',')) {
                auto colon = spec.find(':');
                if (colon == std::string::npos) usage("--crash-loop wants SECONDS:CRASHES, got \"" + spec + "\"");
                CrashLoopSpec c;
                c.restart_after_s = std::atof(spec.substr(0, colon).c_str());
                c.crashes = static_cast<int>(number(a, spec.substr(colon + 1)));
                if (c.restart_after_s <= 0) usage("--crash-loop: the restart delay must be > 0: \"" + spec + "\"");
                o.crash_loops.push_back(c);
            }
        } else if (a == "--daemon-kills") o.daemon_kills = static_cast<int>(number(a, value()));
        else if (a == "--hang-seconds") o.hang_seconds = static_cast<int>(number(a, value()));
        else if (a == "--hang-requests") o.hang_requests = static_cast<int>(number(a, value()));
        else if (a == "--reader-interval-us") o.reader_interval_us = static_cast<int>(number(a, value()));
        else if (a == "--fast-reader-interval-us") o.fast_reader_interval_us = static_cast<int>(number(a, value()));
        else if (a == "--host-reader-interval-us") o.host_reader_interval_us = static_cast<int>(number(a, value()));
        else if (a == "--heal-timeout-ms") o.heal_timeout = std::chrono::milliseconds(number(a, value()));
        else if (a == "--max-failures") o.max_failures = static_cast<int>(number(a, value()));
        else if (a == "--table") table_path = value();
        else if (a == "--verbose") o.verbose = true;
        else if (a == "--keep-logs") o.keep_logs = value();
        else usage("unknown argument \"" + a + "\"");
    }
    for (const auto& p : o.phases)
        if (p != "cycles" && p != "crashloop" && p != "daemonkill" && p != "hang") usage("unknown phase \"" + p + "\"");
    if (o.targets < 6) usage("--targets must be at least 6 (two per dataset)");

    std::string why;
    if (!enter_private_mount_namespace(&why)) {
        std::cout << "SKIP: " << why << std::endl;
        return 77;
    }
    if (!Daemon::available(&why)) {
        std::cout << "SKIP: " << why << std::endl;
        return 77;
    }
    // Children die with the thread that forked them (PR_SET_PDEATHSIG): the
    // phases start every process from this, the main thread.
    std::cerr << "campaign: seed " << o.seed << " (--seed " << o.seed << " repeats the random choices)" << std::endl;
    Rng rng(o.seed);
    const int mounts_before = static_cast<int>(read_mountinfo_lines().size());
    std::vector<PhaseResult> results;
    auto guarded = [&](const std::string& name, auto&& fn) {
        const auto t0 = Clock::now();
        try {
            fn();
        } catch (const std::exception& e) {
            PhaseResult r;
            r.phase = name + " (aborted)";
            r.fail(std::string("phase aborted: ") + e.what());
            r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
            results.push_back(r);
        }
    };
    for (const auto& p : o.phases) {
        std::cerr << "campaign: phase " << p << std::endl;
        if (p == "cycles")
            guarded("cycles", [&] {
                for (auto& r : run_cycles(o, rng)) results.push_back(std::move(r));
            });
        else if (p == "crashloop")
            guarded("crash loops", [&] {
                for (auto& r : run_crash_loops(o, rng)) results.push_back(std::move(r));
            });
        else if (p == "daemonkill")
            guarded("fuse-healerd killed", [&] { results.push_back(run_daemon_kills(o, rng)); });
        else if (p == "hang")
            guarded("hung FUSE daemon", [&] { results.push_back(run_hang(o, rng)); });
    }

    // Nothing may be left: no child, no mount.
    PhaseResult leftovers;
    leftovers.phase = "after the campaign";
    // waitpid(-1, WNOHANG): 0 while a child runs, its pid for an unreaped
    // one, -1 (ECHILD) when there is none.
    int status = 0;
    if (pid_t left = waitpid(-1, &status, WNOHANG); left >= 0)
        leftovers.fail(left == 0 ? "a child process is still running" : "child " + std::to_string(left) + " was not reaped");
    const int mounts_after = static_cast<int>(read_mountinfo_lines().size());
    if (mounts_after != mounts_before) {
        leftovers.leaked_mounts = std::abs(mounts_after - mounts_before);
        leftovers.fail("the driver's mount namespace has " + std::to_string(mounts_after) + " mounts, " +
                       std::to_string(mounts_before) + " at the start");
    }
    if (leftovers.failures) results.push_back(leftovers);

    std::ostringstream table;
    table << "| phase | cycles | heals | failures | max heal delay | max since_event_us | leaked mounts | bad states "
             "| fuse-healerd crashes | time |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    std::int64_t failures = 0;
    for (const auto& r : results) {
        table << row(r) << "\n";
        failures += r.failures;
    }
    std::ostringstream notes;
    for (const auto& r : results)
        for (const auto& n : r.notes) notes << "- " << r.phase << ": " << n << "\n";
    std::cout << "\nseed " << o.seed << "\n\n" << table.str() << "\n" << notes.str();
    if (failures) {
        std::cout << "\nFAILURES:\n";
        for (const auto& r : results)
            for (const auto& p : r.problems) std::cout << "- " << r.phase << ": " << p << "\n";
    }
    std::cout << (failures ? "\nRESULT: FAIL (" + std::to_string(failures) + " failures)\n" : "\nRESULT: PASS\n");
    if (!table_path.empty()) {
        std::ofstream f(table_path);
        f << table.str() << "\n" << notes.str();
    }
    return failures ? 1 : 0;
}
