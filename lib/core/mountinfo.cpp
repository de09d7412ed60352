// Parsing of /proc/<pid>/mountinfo with libmount, and the indexes of a table.
//
// What libmount 2.38 (Debian 12) does with a mountinfo line, checked against
// real captures (tests/data):
// - It unescapes the root, the mountpoint, the fs type, the source and both
//   option strings: the kernel writes space, tab, newline and backslash as
//   \040, \011, \012 and \134, and they come back as the raw bytes.
// - It keeps a root ending in "//deleted" as printed. The kernel appends that
//   marker (dentry_path()) when the dentry the mount shows was unlinked, e.g. a
//   bind-mounted subPath directory removed through the filesystem. We keep the
//   root raw: it is not a path that exists, and "/a//deleted" is never mistaken
//   for a live "/a". An unlink done behind a FUSE filesystem's back (on its
//   backing store, by another client) shows no marker until a lookup through
//   the mount finds the entry gone and the kernel drops the dentry.
// - It keeps a mountpoint ending in " (deleted)". That suffix is what
//   /proc/mounts appends to an unlinked mountpoint; mountinfo never appends
//   it, so such a mountpoint is really named so. Older libmount stripped it
//   blindly; 2.38's parser compares with "\040(deleted)" after unescaping, so
//   it never matches. A capture in tests/data pins the behaviour we rely on.
// - It replaces a source of "/dev/root" with the device it finds on this host;
//   FUSE sources never are "/dev/root".
// - By default it skips a line it cannot parse, and it guesses the format from
//   the first line (anything not starting with two numbers is read as fstab).
//   We turn both into errors: a table that silently lacks a mount would make
//   the daemon believe a target is gone.
#include "core/mountinfo.h"

#include <libmount/libmount.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <iterator>
#include <memory>
#include <set>
#include <string_view>

namespace fh {

// glibc's <sys/sysmacros.h> defines major() and minor() as function-like
// macros; the parentheses keep them from rewriting these member names.
unsigned (MountEntry::major)() const { return major(device); }
unsigned (MountEntry::minor)() const { return minor(device); }

namespace {

// What the libmount error callback saw; reached through the table userdata.
struct ParseErrors {
    int first_bad_line = 0;  // 1-based, 0 when every line parsed
};

int on_bad_line(libmnt_table* tb, const char* /*filename*/, int line) {
    auto* errors = static_cast<ParseErrors*>(mnt_table_get_userdata(tb));
    if (errors->first_bad_line == 0) errors->first_bad_line = line;
    return -EINVAL;  // negative: stop parsing instead of skipping the line
}

struct TableDeleter {
    void operator()(libmnt_table* tb) const { mnt_unref_table(tb); }
};
using TablePtr = std::unique_ptr<libmnt_table, TableDeleter>;

struct IterDeleter {
    void operator()(libmnt_iter* it) const { mnt_free_iter(it); }
};

struct FileCloser {
    void operator()(FILE* f) const { (void)std::fclose(f); } // a read stream: nothing to lose
};

std::string str(const char* s) { return s ? std::string(s) : std::string(); }

Error parse_error(const std::string& name, std::string detail) {
    return Error{"parse mountinfo", name, EINVAL, std::move(detail)};
}

// Parses a positive decimal peer group id; returns 0 when `s` is not one.
int parse_group_id(std::string_view s) {
    int v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size() || v <= 0) return 0;
    return v;
}

// Parses the optional fields ("shared:2 master:1 propagate_from:1
// unbindable"). Returns the offending field, or "" when all are valid.
// Unknown tags are skipped: proc(5) allows new ones.
std::string parse_propagation(std::string_view fields, Propagation& p) {
    while (!fields.empty()) {
        std::size_t sp = fields.find(' ');
        std::string_view field = fields.substr(0, sp);
        fields = sp == std::string_view::npos ? std::string_view() : fields.substr(sp + 1);
        if (field.empty()) continue;
        if (field == "unbindable") {
            p.unbindable = true;
            continue;
        }
        std::size_t colon = field.find(':');
        std::string_view tag = field.substr(0, colon);
        std::string_view value =
            colon == std::string_view::npos ? std::string_view() : field.substr(colon + 1);
        int* slot = tag == "shared" ? &p.shared_group : tag == "master" ? &p.master_group : nullptr;
        // propagate_from is validated but not kept: it names the group events
        // come from when the master is out of the reader's root (a chroot);
        // healing needs only the direct master.
        if (slot == nullptr && tag != "propagate_from") continue;
        int id = parse_group_id(value);
        if (id == 0) return std::string(field);
        if (slot) *slot = id;
    }
    return {};
}

// Converts a parsed libmount table. `rc` is the parser's return value.
Result<MountTable> to_mount_table(libmnt_table* tb, int rc, const ParseErrors& errors,
                                  const std::string& name) {
    // libmount guessed fstab format: the first line did not start with a
    // mount id and a parent id. Checked first because the lines after it then
    // fail as fstab lines, which would blame the wrong line.
    libmnt_fs* first = nullptr;
    if (mnt_table_first_fs(tb, &first) == 0 && !mnt_fs_is_kernel(first))
        return parse_error(name, "the first line is not in mountinfo format");
    if (errors.first_bad_line != 0)
        return parse_error(name, "line " + std::to_string(errors.first_bad_line) +
                                     ": not a valid mountinfo line");
    if (rc < 0) return Error{"read mountinfo", name, -rc, {}};

    std::unique_ptr<libmnt_iter, IterDeleter> it(mnt_new_iter(MNT_ITER_FORWARD));
    if (!it) return Error{"parse mountinfo", name, ENOMEM, {}};
    std::vector<MountEntry> entries;
    entries.reserve(mnt_table_get_nents(tb));
    std::set<int> ids;
    libmnt_fs* fs = nullptr;
    while (mnt_table_next_fs(tb, it.get(), &fs) == 0) {
        MountEntry e;
        e.mount_id = mnt_fs_get_id(fs);
        e.parent_id = mnt_fs_get_parent_id(fs);
        e.device = mnt_fs_get_devno(fs);
        e.root = str(mnt_fs_get_root(fs));
        e.mountpoint = str(mnt_fs_get_target(fs));
        e.fstype = str(mnt_fs_get_fstype(fs));
        e.source = str(mnt_fs_get_source(fs));
        e.vfs_options = str(mnt_fs_get_vfs_options(fs));
        e.fs_options = str(mnt_fs_get_fs_options(fs));
        e.flags = parse_mount_flags(e.vfs_options);
        const std::string where = "mount id " + std::to_string(e.mount_id);
        std::string bad = parse_propagation(str(mnt_fs_get_optional_fields(fs)), e.propagation);
        if (!bad.empty()) return parse_error(name, where + ": bad optional field \"" + bad + "\"");
        // find_id() needs unique ids; the kernel never prints one twice.
        if (!ids.insert(e.mount_id).second) return parse_error(name, "duplicate " + where);
        entries.push_back(std::move(e));
    }
    return MountTable(std::move(entries));
}

// Runs `parse` on a fresh table with our error callback, then converts.
template <typename Parse>
Result<MountTable> parse_with(const std::string& name, Parse parse) {
    TablePtr tb(mnt_new_table());
    if (!tb) return Error{"parse mountinfo", name, ENOMEM, {}};
    ParseErrors errors;
    mnt_table_set_userdata(tb.get(), &errors);
    mnt_table_set_parser_errcb(tb.get(), on_bad_line);
    int rc = parse(tb.get());
    return to_mount_table(tb.get(), rc, errors, name);
}

} // namespace

MountTable::MountTable(std::vector<MountEntry> entries) : entries_(std::move(entries)) {
    by_id_.resize(entries_.size());
    for (std::uint32_t i = 0; i < by_id_.size(); ++i) by_id_[i] = i;
    by_mountpoint_ = by_id_;
    // Stable: among equal ids the first in the table is found; among equal
    // mountpoints, table order is kept.
    std::stable_sort(by_id_.begin(), by_id_.end(),
                     [&](std::uint32_t a, std::uint32_t b) { return entries_[a].mount_id < entries_[b].mount_id; });
    std::stable_sort(by_mountpoint_.begin(), by_mountpoint_.end(), [&](std::uint32_t a, std::uint32_t b) {
        return entries_[a].mountpoint < entries_[b].mountpoint;
    });
}

const MountEntry* MountTable::find_id(int mount_id) const {
    auto it = std::lower_bound(by_id_.begin(), by_id_.end(), mount_id,
                               [&](std::uint32_t i, int id) { return entries_[i].mount_id < id; });
    return it == by_id_.end() || entries_[*it].mount_id != mount_id ? nullptr : &entries_[*it];
}

std::pair<std::vector<std::uint32_t>::const_iterator, std::vector<std::uint32_t>::const_iterator> MountTable::at(
    std::string_view mountpoint) const {
    auto lo = std::lower_bound(by_mountpoint_.begin(), by_mountpoint_.end(), mountpoint,
                               [&](std::uint32_t i, std::string_view m) { return entries_[i].mountpoint < m; });
    auto hi = lo;
    while (hi != by_mountpoint_.end() && entries_[*hi].mountpoint == mountpoint) ++hi;
    return {lo, hi};
}

const MountEntry* MountTable::topmost_at(const std::string& mountpoint) const {
    // Most paths hold one mount: no stack to order (classify and the planner
    // ask for each of 2,000 targets every step).
    auto [lo, hi] = at(mountpoint);
    if (lo == hi) return nullptr;
    if (std::next(lo) == hi) return &entries_[*lo];
    auto stack = stack_at(mountpoint);
    return stack.empty() ? nullptr : stack.back();
}

// The order is found through parent ids, not table order: a mount moved
// beneath another (MOVE_MOUNT_BENEATH) is listed after the one it carries,
// and mount propagation attaches copies in whatever order it walks the peers.
std::vector<const MountEntry*> MountTable::stack_at(const std::string& mountpoint) const {
    auto [lo, hi] = at(mountpoint);
    if (lo == hi) return {};
    if (std::next(lo) == hi) return {&entries_[*lo]};
    std::vector<const MountEntry*> here;
    std::set<int> ids_here;
    for (auto it = lo; it != hi; ++it) {
        here.push_back(&entries_[*it]);
        ids_here.insert(entries_[*it].mount_id);
    }
    // The mount sitting on each mount here: the first one in table order
    // whose parent it is. Indexed once, so that a tall stack (a stacking
    // healer leaves a dead layer per outage) costs O(n log n), not O(n^2)
    // per call (1000 layers took seconds to classify).
    std::map<int, const MountEntry*> on_top_of;
    for (const MountEntry* e : here)
        if (e->parent_id != e->mount_id) on_top_of.emplace(e->parent_id, e);
    // Walks up from `bottom` through the mounts sitting on each other. One
    // chain per bottom: the kernel never puts two mounts on the same
    // (parent, mountpoint). The visited set stops on cyclic (corrupt) input.
    std::set<int> visited;
    std::vector<std::vector<const MountEntry*>> chains;
    auto walk_from = [&](const MountEntry* bottom) {
        std::vector<const MountEntry*> chain;
        for (const MountEntry* cur = bottom; cur && visited.insert(cur->mount_id).second;) {
            chain.push_back(cur);
            const auto next = on_top_of.find(cur->mount_id);
            cur = next == on_top_of.end() ? nullptr : next->second;
        }
        if (!chain.empty()) chains.push_back(std::move(chain));
    };
    // A namespace's root mount is listed as its own parent.
    for (const MountEntry* e : here)
        if (e->parent_id == e->mount_id || !ids_here.count(e->parent_id)) walk_from(e);
    for (const MountEntry* e : here) walk_from(e);  // only cyclic leftovers remain

    // Several chains at one path happen when a parent mount was covered after
    // something was mounted below it. The chain whose top was attached last is
    // the likeliest visible one; it goes last so that its top is topmost_at().
    auto position = [&](const MountEntry* e) { return e - entries_.data(); };
    std::stable_sort(chains.begin(), chains.end(), [&](const auto& a, const auto& b) {
        return position(a.back()) < position(b.back());
    });
    std::vector<const MountEntry*> out;
    for (const auto& chain : chains) out.insert(out.end(), chain.begin(), chain.end());
    return out;
}

bool MountTable::is_topmost(const MountEntry& e) const {
    auto [lo, hi] = at(e.mountpoint);
    for (auto it = lo; it != hi; ++it) {
        const MountEntry& other = entries_[*it];
        if (other.parent_id == e.mount_id && other.mount_id != e.mount_id) return false;
    }
    return true;
}

bool MountTable::is_reached(const MountEntry& e) const {
    auto [lo, hi] = at(e.mountpoint);
    if (lo == hi) return false;
    if (std::next(lo) == hi) return &entries_[*lo] == &e;
    // The ids a mount here sits on: the chain tops are the others (as
    // is_topmost() says of each, in one pass).
    std::set<int> covered;
    for (auto it = lo; it != hi; ++it)
        if (entries_[*it].parent_id != entries_[*it].mount_id) covered.insert(entries_[*it].parent_id);
    if (covered.count(e.mount_id)) return false;
    const auto tops = std::count_if(lo, hi, [&](std::uint32_t i) { return !covered.count(entries_[i].mount_id); });
    // Several chain tops here: the order decides (see stack_at).
    return tops == 1 || topmost_at(e.mountpoint) == &e;
}

std::vector<const MountEntry*> MountTable::with_device(dev_t device) const {
    std::vector<const MountEntry*> out;
    for (const MountEntry& e : entries_)
        if (e.device == device) out.push_back(&e);
    return out;
}

Result<MountTable> parse_mountinfo_text(const std::string& text, const std::string& name) {
    return parse_with(name, [&](libmnt_table* tb) {
        // libmount parses FILE streams only; fmemopen reads the text in place.
        std::unique_ptr<FILE, FileCloser> f(
            fmemopen(const_cast<char*>(text.data()), text.size(), "r"));
        if (!f) return -errno;
        return mnt_table_parse_stream(tb, f.get(), name.c_str());
    });
}

Result<MountTable> parse_mountinfo(std::istream& in, const std::string& name) {
    std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    if (in.bad()) return Error{"read mountinfo", name, EIO, {}};
    return parse_mountinfo_text(text, name);
}

Result<MountTable> read_mountinfo(const std::string& path) {
    // Like any mountinfo reader, this is not atomic: the kernel prints the
    // table across several read() calls, and a mount attached or detached in
    // between may or may not show. A change also marks the open file POLLPRI
    // (proc(5)), the cue to read the table again.
    return parse_with(path, [&](libmnt_table* tb) { return mnt_table_parse_file(tb, path.c_str()); });
}

namespace {

// Calls `found(dev)` with the device of each line of mountinfo `text` that is
// one of `devices`, until it returns false.
template <typename Found>
void for_each_device_among(std::string_view text, const std::set<dev_t>& devices, Found found) {
    if (devices.empty()) return;
    while (!text.empty()) {
        const std::size_t eol = text.find('\n');
        std::string_view line = text.substr(0, eol);
        text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
        // "<mount id> <parent id> <major>:<minor> ..."
        const std::size_t a = line.find(' ');
        const std::size_t b = a == std::string_view::npos ? a : line.find(' ', a + 1);
        if (b == std::string_view::npos) continue;
        const std::string_view dev = line.substr(b + 1, line.find(' ', b + 1) - (b + 1));
        const std::size_t colon = dev.find(':');
        if (colon == std::string_view::npos) continue;
        unsigned major_number = 0, minor_number = 0;
        const auto r1 = std::from_chars(dev.data(), dev.data() + colon, major_number);
        const auto r2 = std::from_chars(dev.data() + colon + 1, dev.data() + dev.size(), minor_number);
        if (r1.ec != std::errc() || r2.ec != std::errc() || r1.ptr != dev.data() + colon ||
            r2.ptr != dev.data() + dev.size())
            continue;
        const dev_t d = makedev(major_number, minor_number);
        if (devices.count(d) && !found(d)) return;
    }
}

} // namespace

bool mountinfo_has_device(std::string_view text, const std::set<dev_t>& devices) {
    bool any = false;
    for_each_device_among(text, devices, [&](dev_t) {
        any = true;
        return false;  // one is enough
    });
    return any;
}

std::vector<dev_t> mountinfo_devices_among(std::string_view text, const std::set<dev_t>& devices) {
    std::vector<dev_t> out;
    for_each_device_among(text, devices, [&](dev_t d) {
        if (std::find(out.begin(), out.end(), d) == out.end()) out.push_back(d);
        return out.size() < devices.size();  // all found: the rest cannot add one
    });
    std::sort(out.begin(), out.end());
    return out;
}

MountFlags parse_mount_flags(const std::string& vfs_options) {
    MountFlags flags;
    std::string_view rest = vfs_options;
    while (!rest.empty()) {
        std::size_t comma = rest.find(',');
        std::string_view opt = rest.substr(0, comma);
        rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
        if (opt == "ro") flags.read_only = true;
        else if (opt == "nosuid") flags.nosuid = true;
        else if (opt == "nodev") flags.nodev = true;
        else if (opt == "noexec") flags.noexec = true;
    }
    return flags;
}

std::string root_without_deleted_marker(const std::string& root) {
    constexpr std::string_view kDeleted = "//deleted";
    if (root.size() < kDeleted.size() || root.compare(root.size() - kDeleted.size(), kDeleted.size(), kDeleted) != 0)
        return root;
    std::string bare = root.substr(0, root.size() - kDeleted.size());
    return bare.empty() ? "/" : bare;
}

} // namespace fh
