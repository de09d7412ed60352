// What the phases share (internal to the campaign driver).
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "campaign.h"

namespace fh::campaign {

// Starts fuse-healerd and waits until it is ready and has saved the origin
// of every target (a crash before that would leave it nothing to heal from
// once a stale source is lazily unmounted). Throws on failure.
void start_daemon(Daemon& daemon, Node& node, const std::string& extra_toml = "");

// The daemon's log lines, sorted by what they say.
struct LogWatch {
    std::map<std::string, int> healed;  // "mount healed" lines by target
    std::map<std::string, int> broken;  // "mount broken" lines by target
    std::map<std::string, int> other;   // other warnings and errors, normalized
    int server_died = 0;
    int rate_limit_summaries = 0;       // "heal event lines not logged", "FUSE death lines not logged" (the daemon's rate limits of repeats)
    std::int64_t max_since_event_us = 0;
    std::string slowest_heal;           // the "mount healed" line with the largest since_event_us

    void take(const std::vector<std::string>& lines);
    void clear();  // all but lines() and max_since_event_us
    std::int64_t lines() const { return lines_; }
    // The most frequent other warnings/errors, one per line.
    std::string other_text(std::size_t max = 5) const;

private:
    std::int64_t lines_ = 0;
};

// Reads the log until every target of the `crashed` datasets has a heal
// line, or `timeout`. Returns whether they all did.
bool wait_heal_lines(LogTail& tail, LogWatch& watch, Node& node, const std::set<std::size_t>& crashed,
                     std::chrono::milliseconds timeout);

// Fails `r` for every target of a crashed dataset healed other than once
// (zero times is allowed with allow_unlogged: the daemon was killed between
// a heal and its log line), and for every heal of a target whose daemon did
// not crash; adds the heals to r.heals.
void check_heal_lines(PhaseResult& r, const std::string& when, Node& node, const std::set<std::size_t>& crashed,
                      const std::map<std::string, int>& healed, bool allow_unlogged = false);

// Counts bad states and fails `r` for the first few.
void record_bad(PhaseResult& r, const std::string& when, const std::vector<std::string>& bad);

// The mount checks, the readers' events and the host reader's findings.
void check_everything(PhaseResult& r, const std::string& when, Node& node);

std::string tail_text(const std::string& s, std::size_t n = 3000);

// Copies the fuse-healerd logs of the sandbox into o.keep_logs (when set),
// named <tag>-<log name>.
void keep_logs(const Options& o, Sandbox& sb, const std::string& tag);

// One request on the control socket; returns the response line, or nullopt
// when there is none within `timeout`. *latency_us gets the round trip.
std::optional<std::string> control_request(const std::string& socket_path, const std::string& request,
                                           std::chrono::milliseconds timeout, std::int64_t* latency_us = nullptr);

// What fuse-healerctl status says (the control socket's status response).
struct StatusView {
    std::int64_t targets = -1, broken = -1, heals = -1, reconciles = -1;  // the daemon's summary
    struct Target {
        std::string state;
        std::int64_t heals = 0;  // heals of this target since the daemon started
    };
    std::map<std::string, Target> by_target;
};
// Asks the daemon for its status; nullopt when it does not answer in 2 s.
std::optional<StatusView> daemon_status(const std::string& socket_path);

}  // namespace fh::campaign
