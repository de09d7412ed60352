#include "engine/cli.h"

#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "core/config.h"
#include "engine/event_loop.h"
#include "engine/logging.h"

namespace fh {

namespace {

std::optional<LogLevel> parse_level(const std::string& s) {
    for (LogLevel l : {LogLevel::Trace, LogLevel::Debug, LogLevel::Info, LogLevel::Warn, LogLevel::Error})
        if (s == to_string(l)) return l;
    return std::nullopt;
}

} // namespace

int run_fuse_healerd(int argc, char** argv) {
    // glibc gives each thread that allocates an arena of its own (up to 8
    // per CPU), and keeps what is freed in each. The daemon's threads (loop,
    // heal worker, namespace workers, probes, libuv's pool) allocate little
    // at once, but the heal worker's table snapshots (6 MiB at 10,000
    // mounts) left each arena holding megabytes: two arenas keep the peak
    // RSS about half as high (docs/PERFORMANCE.md, "Memory"). Set before any
    // thread starts.
    ::mallopt(M_ARENA_MAX, 2);
    // Blocks of 64 KiB and more (mountinfo texts of 10,000 lines, a
    // namespace walk's buffers, status answers, table snapshots' vectors)
    // are mmapped and given back whole when freed. glibc's default starts
    // at 128 KiB but raises the threshold to the size of each mmapped block
    // freed (up to 32 MiB), so after the first reconcile such blocks came
    // from the heap, among the long-lived ones, and left partly used pages
    // that malloc_trim cannot give back. Setting it turns that off. At
    // 10,000 mounts: RSS 3 s after heal cycles 21.5 -> 19.2 MiB, ready 22.6
    // -> 18.8 MiB; CPU per mount event and under churn unchanged
    // (docs/PERFORMANCE.md, Session 7).
    ::mallopt(M_MMAP_THRESHOLD, 64 * 1024);
    CLI::App app{"fuse-healerd: heals stale FUSE mounts in Kubernetes pod volumes, the moment their FUSE "
                 "daemon mounts again."};
    app.set_version_flag("--version", std::string("fuse-healerd ") + FUSE_HEALER_VERSION);
    std::string config_path;
    bool check_only = false;
    std::string level_text;
    std::vector<std::string> disabled;
    app.add_option("--config", config_path, std::string("config file (default ") + kDefaultConfigPath + ")");
    app.add_flag("--check-config", check_only, "load and validate the config, print the result and exit");
    app.add_option("--log-level", level_text, "trace, debug, info, warn or error (overrides [log] level)");
    app.add_option("--disable-kernel-feature", disabled,
                   "force the fallback for a kernel feature: open_tree, mount_setattr, move_mount_beneath, "
                   "openat2, statx_mnt_id, fusectl, statmount, fanotify_mount or fuse_fdinfo (repeatable; for testing "
                   "old-kernel paths)");
    app.footer("Exit codes: 0 ok, 1 runtime failure, 64 bad command line, 78 bad config file.");
    try {
        app.parse(argc, argv);
    } catch (const CLI::Success& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        app.exit(e);
        return kExitUsage;
    }
    std::optional<LogLevel> level_override;
    if (!level_text.empty()) {
        level_override = parse_level(level_text);
        if (!level_override) {
            std::cerr << "fuse-healerd: --log-level must be one of trace, debug, info, warn, error; got \""
                      << level_text << "\"\n";
            return kExitUsage;
        }
    }
    std::set<std::string> disabled_set;
    for (const auto& d : disabled) {
        if (!is_known_kernel_feature(d)) {
            std::cerr << "fuse-healerd: unknown kernel feature \"" << d << "\" for --disable-kernel-feature\n";
            return kExitUsage;
        }
        disabled_set.insert(d);
    }

    const bool is_default = config_path.empty();
    if (is_default) config_path = kDefaultConfigPath;
    // SIGHUP reloads this path later; make it independent of the cwd.
    if (config_path[0] != '/') {
        if (char* abs = ::realpath(config_path.c_str(), nullptr)) {
            config_path = abs;
            std::free(abs);
        }
    }
    auto loaded = load_config(config_path, is_default);
    if (auto* err = std::get_if<ConfigError>(&loaded)) {
        if (stderr_is_journal() && !check_only)
            log_config_error("fuse-healerd: config error", *err);  // with CONFIG_FILE=, CONFIG_LINE=
        else
            std::cerr << "fuse-healerd: config error: " << err->to_string() << "\n";
        return kExitConfig;
    }
    Config config = std::get<Config>(loaded);
    if (check_only) {
        std::cout << "config OK: " << (config.loaded_from.empty() ? "built-in defaults (" + config_path + " absent)"
                                                                  : config.loaded_from)
                  << "\n";
        return kExitOk;
    }
    if (level_override) config.log_level = *level_override;
    setup_logging(config.log_level);

    DaemonOptions opts;
    opts.config_path = config_path;
    opts.config_path_is_default = is_default;
    opts.log_level_override = level_override;
    opts.disabled_features = disabled_set;
    Daemon daemon(config, opts);
    return daemon.run();
}

} // namespace fh
