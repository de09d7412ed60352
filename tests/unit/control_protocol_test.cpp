#include "core/control_protocol.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

namespace fh {
namespace {

using nlohmann::json;

// Returns the request parsed from `line`, failing the test on an error.
ControlRequest request_of(const std::string& line) {
    auto parsed = parse_control_request(line);
    if (const auto* error = std::get_if<ControlError>(&parsed)) {
        ADD_FAILURE() << "unexpected error for " << line << ": " << to_string(error->code) << ": " << error->message;
        return {};
    }
    return std::get<ControlRequest>(parsed);
}

// Returns the error parsed from `line`, failing the test when it parses.
ControlError error_of(std::string_view line) {
    auto parsed = parse_control_request(line);
    if (const auto* error = std::get_if<ControlError>(&parsed)) return *error;
    ADD_FAILURE() << "parsed, expected an error: " << line;
    return {};
}

ControlTarget sample_target() {
    return ControlTarget{"/var/lib/kubelet/pods/1f2e/volumes/kubernetes.io~csi/pvc-1/mount",
                         "1f2e",
                         "pvc-1",
                         "fuse.csi.fluid.io",
                         "default-ds",
                         "volume",
                         "fuse.juicefs",
                         "healthy",
                         "",
                         3,
                         912345};
}

ControlDaemonSummary sample_daemon() {
    return ControlDaemonSummary{"0.1.0", 4242, "replace", "fusectl", "open_tree=yes move_mount_beneath=yes",
                                1,       0,    3,         17,        9,   0, "fanotify", 12};
}

// ---- requests ---------------------------------------------------------------

TEST(ControlRequest, StatusAndHealParse) {
    EXPECT_EQ(request_of(R"({"command":"status"})").command, ControlCommand::Status);
    const ControlRequest heal = request_of(R"({"command":"heal","target":"/k/pods/u/volumes/v/mount"})");
    EXPECT_EQ(heal.command, ControlCommand::Heal);
    EXPECT_EQ(heal.target, "/k/pods/u/volumes/v/mount");
    // Key order, whitespace and a CR before the newline (nc, socat) do not matter.
    const ControlRequest spaced = request_of(" { \"target\" : \"/a/b\" , \"command\" : \"heal\" }\r");
    EXPECT_EQ(spaced.command, ControlCommand::Heal);
    EXPECT_EQ(spaced.target, "/a/b");
}

TEST(ControlRequest, HealTargetLosesTrailingSlashesAsInMountinfo) {
    EXPECT_EQ(request_of(R"({"command":"heal","target":"/a/b///"})").target, "/a/b");
    EXPECT_EQ(request_of(R"({"command":"heal","target":"/"})").target, "/");
}

TEST(ControlRequest, EncodedRequestsParseBack) {
    for (const ControlRequest& r : {ControlRequest{ControlCommand::Status, ""},
                                    ControlRequest{ControlCommand::Heal, "/k/pods/u/volumes/with space\nand newline"}}) {
        const std::string line = encode_control_request(r);
        ASSERT_EQ(line.back(), '\n');
        EXPECT_EQ(line.find('\n'), line.size() - 1) << "one line, whatever the target holds: " << line;
        const ControlRequest back = request_of(line.substr(0, line.size() - 1));
        EXPECT_EQ(back.command, r.command);
        EXPECT_EQ(back.target, r.target);
    }
    EXPECT_EQ(encode_control_request({ControlCommand::Status, ""}), "{\"command\":\"status\"}\n");
    EXPECT_EQ(encode_control_request({ControlCommand::Heal, "/t"}), "{\"command\":\"heal\",\"target\":\"/t\"}\n");
}

struct BadRequestCase {
    const char* name;
    std::string line;
    ControlErrorCode code;
    std::string message;
};

// gtest prints a failing parameter with this instead of its bytes.
void PrintTo(const BadRequestCase& c, std::ostream* os) { *os << c.name; }

class ControlRequestErrors : public testing::TestWithParam<BadRequestCase> {};

TEST_P(ControlRequestErrors, AreClear) {
    const ControlError e = error_of(GetParam().line);
    EXPECT_EQ(to_string(e.code), std::string(to_string(GetParam().code)));
    EXPECT_EQ(e.message, GetParam().message);
}

const BadRequestCase kBadRequests[] = {
    {"Empty", "", ControlErrorCode::BadRequest,
     "empty request: expected a JSON object such as {\"command\":\"status\"}"},
    {"Blank", " \t\r", ControlErrorCode::BadRequest,
     "empty request: expected a JSON object such as {\"command\":\"status\"}"},
    {"NotJson", "status", ControlErrorCode::BadRequest,
     "invalid JSON: parse error at line 1, column 1: syntax error while parsing value - invalid literal; last "
     "read: 's'"},
    {"TruncatedJson", R"({"command":"sta)", ControlErrorCode::BadRequest,
     "invalid JSON: parse error at line 1, column 16: syntax error while parsing value - invalid string: missing "
     "closing quote; last read: '\"sta'"},
    {"TwoObjectsOnOneLine", R"({"command":"status"}{"command":"status"})", ControlErrorCode::BadRequest,
     "invalid JSON: parse error at line 1, column 21: syntax error while parsing value - unexpected '{'; expected "
     "end of input"},
    {"NotAnObject", R"(["status"])", ControlErrorCode::BadRequest,
     "a request must be a JSON object such as {\"command\":\"status\"}, got array"},
    {"NoCommand", R"({"target":"/a"})", ControlErrorCode::BadRequest, "missing \"command\" (status or heal)"},
    {"CommandNotAString", R"({"command":1})", ControlErrorCode::BadRequest,
     "\"command\" must be a string (status or heal), got number"},
    {"UnknownCommand", R"({"command":"reboot"})", ControlErrorCode::UnknownCommand,
     "unknown command \"reboot\": expected status or heal"},
    {"CommandIsCaseSensitive", R"({"command":"STATUS"})", ControlErrorCode::UnknownCommand,
     "unknown command \"STATUS\": expected status or heal"},
    {"UnknownKey", R"({"command":"status","verbose":true})", ControlErrorCode::BadRequest,
     "unknown key \"verbose\" in a status request"},
    {"TargetOnStatus", R"({"command":"status","target":"/a"})", ControlErrorCode::BadRequest,
     "unknown key \"target\" in a status request"},
    {"HealWithoutTarget", R"({"command":"heal"})", ControlErrorCode::BadRequest,
     "heal needs \"target\": the absolute path of a target"},
    {"HealTargetNotAString", R"({"command":"heal","target":["/a"]})", ControlErrorCode::BadRequest,
     "\"target\" must be a string (an absolute path), got array"},
    {"HealTargetRelative", R"({"command":"heal","target":"pods/u"})", ControlErrorCode::BadRequest,
     "\"target\" must be an absolute path, got \"pods/u\""},
    {"HealTargetEmpty", R"({"command":"heal","target":""})", ControlErrorCode::BadRequest,
     "\"target\" must be an absolute path, got \"\""},
    {"HealTargetWithNul", R"({"command":"heal","target":"/a\u0000b"})", ControlErrorCode::BadRequest,
     "\"target\" contains a NUL byte"},
    {"HealMisspeltKey", R"({"command":"heal","taget":"/a"})", ControlErrorCode::BadRequest,
     "unknown key \"taget\" in a heal request"},
};

INSTANTIATE_TEST_SUITE_P(ControlRequest, ControlRequestErrors, testing::ValuesIn(kBadRequests),
                         [](const testing::TestParamInfo<BadRequestCase>& i) { return std::string(i.param.name); });

// Found by fuzzing (tests/fuzz/regressions/control): nlohmann throws
// out_of_range, not parse_error, for a number beyond a double; it escaped the
// parser and would have ended the daemon from its loop.
TEST(ControlRequest, ANumberBeyondADoubleIsABadRequest) {
    for (const char* line : {"1e999", R"({"command":1e999})", R"({"command":"heal","target":-1e400})"}) {
        const ControlError e = error_of(line);
        EXPECT_EQ(e.code, ControlErrorCode::BadRequest) << line;
        EXPECT_EQ(e.message.rfind("invalid JSON: number overflow parsing '", 0), 0u) << e.message;
    }
}

TEST(ControlRequest, ErrorMessagesQuoteAtMost80CharactersOfAValue) {
    const ControlError e = error_of(R"({"command":")" + std::string(500, 'x') + R"("})");
    EXPECT_EQ(e.code, ControlErrorCode::UnknownCommand);
    EXPECT_EQ(e.message, "unknown command \"" + std::string(80, 'x') + "...\": expected status or heal");
}

TEST(ControlRequest, OversizedIsRefusedAtTheLimit) {
    // A valid request padded with spaces to exactly the limit still parses.
    std::string at_limit = R"({"command":"status"})";
    at_limit += std::string(kMaxControlRequestBytes - at_limit.size(), ' ');
    ASSERT_EQ(at_limit.size(), kMaxControlRequestBytes);
    EXPECT_EQ(request_of(at_limit).command, ControlCommand::Status);
    const ControlError e = error_of(at_limit + " ");
    EXPECT_EQ(e.code, ControlErrorCode::RequestTooLarge);
    EXPECT_EQ(e.message, "request of 65537 bytes is longer than the limit of 65536 bytes");
}

TEST(ControlRequest, ErrorCodeNamesRoundTrip) {
    const std::vector<ControlErrorCode> all{
        ControlErrorCode::BadRequest,       ControlErrorCode::UnknownCommand, ControlErrorCode::RequestTooLarge,
        ControlErrorCode::PermissionDenied, ControlErrorCode::Busy,           ControlErrorCode::UnknownTarget,
        ControlErrorCode::Timeout,          ControlErrorCode::Internal};
    for (const ControlErrorCode c : all) EXPECT_EQ(control_error_code_from(to_string(c)), c) << to_string(c);
    EXPECT_EQ(std::string(to_string(ControlErrorCode::PermissionDenied)), "permission-denied");
    EXPECT_EQ(control_error_code_from("no-such-code"), std::nullopt);
}

// ---- responses --------------------------------------------------------------

TEST(ControlResponse, StatusEncodesAsDocumentedAndParsesBack) {
    const ControlTarget t = sample_target();
    ControlTarget broken = t;
    broken.target = "/var/lib/kubelet/pods/9a/volume-subpaths/pvc-2/app/0";
    broken.kind = "subpath";
    broken.state = "broken";
    broken.reason = "source /runtime/ds/fuse is not mounted yet";
    broken.heals = 0;
    broken.last_outage_us = 0;
    const std::string line = encode_status_response(sample_daemon(), {t, broken});
    ASSERT_EQ(line.back(), '\n');
    EXPECT_EQ(line.find('\n'), line.size() - 1);

    // The field names are the protocol: scripts read them with jq.
    const json doc = json::parse(line);
    EXPECT_EQ(doc["ok"], true);
    EXPECT_EQ(doc["daemon"]["version"], "0.1.0");
    EXPECT_EQ(doc["daemon"]["pid"], 4242);
    EXPECT_EQ(doc["daemon"]["strategy"], "replace");
    EXPECT_EQ(doc["daemon"]["detection"], "fusectl");
    EXPECT_EQ(doc["daemon"]["kernel"], "open_tree=yes move_mount_beneath=yes");
    EXPECT_EQ(doc["daemon"]["targets"], 1);
    EXPECT_EQ(doc["daemon"]["broken"], 0);
    EXPECT_EQ(doc["daemon"]["heals"], 3);
    EXPECT_EQ(doc["daemon"]["mount_events"], 17);
    EXPECT_EQ(doc["daemon"]["reconciles"], 9);
    EXPECT_EQ(doc["daemon"]["reconcile_running_us"], 0);
    EXPECT_EQ(doc["daemon"]["mount_tracking"], "fanotify");
    EXPECT_EQ(doc["daemon"]["unrelated_mount_events"], 12);
    ASSERT_EQ(doc["targets"].size(), 2u);
    const json& first = doc["targets"][0];
    EXPECT_EQ(first["target"], t.target);
    EXPECT_EQ(first["pod_uid"], "1f2e");
    EXPECT_EQ(first["volume"], "pvc-1");
    EXPECT_EQ(first["driver"], "fuse.csi.fluid.io");
    EXPECT_EQ(first["volume_handle"], "default-ds");
    EXPECT_EQ(first["kind"], "volume");
    EXPECT_EQ(first["fstype"], "fuse.juicefs");
    EXPECT_EQ(first["state"], "healthy");
    EXPECT_EQ(first["reason"], "");
    EXPECT_EQ(first["heals"], 3);
    EXPECT_EQ(first["last_outage_us"], 912345);

    const Result<ControlResponse> back = parse_control_response(line);
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_FALSE(back->error);
    EXPECT_FALSE(back->target);
    ASSERT_TRUE(back->daemon);
    EXPECT_EQ(*back->daemon, sample_daemon());
    EXPECT_EQ(back->targets, (std::vector<ControlTarget>{t, broken}));
}

TEST(ControlResponse, StatusTextIsTheOneDocumentsDumpWithTargetsWrittenOneByOne) {
    // encode_status_response writes the targets one at a time (memory); the
    // text must be exactly what dumping the whole document gives, invalid
    // UTF-8 replaced the same way, for no targets, one and several.
    ControlTarget odd = sample_target();
    odd.target = "/var/lib/kubelet/pods/9a/volumes/x/with \"quotes\", a\ttab and \xff bad UTF-8";
    odd.reason = "line\nbreak";
    for (const std::vector<ControlTarget>& targets :
         {std::vector<ControlTarget>{}, std::vector<ControlTarget>{odd},
          std::vector<ControlTarget>{sample_target(), odd, sample_target()}}) {
        const std::string line = encode_status_response(sample_daemon(), targets);
        const auto doc = nlohmann::ordered_json::parse(line);
        ASSERT_EQ(doc["targets"].size(), targets.size());
        EXPECT_EQ(line, doc.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n")
            << "keys in order, one line, the same escapes";
    }
}

TEST(ControlResponse, EmptyStatusParsesBack) {
    const Result<ControlResponse> back = parse_control_response(encode_status_response(sample_daemon(), {}));
    ASSERT_TRUE(back) << back.error().message();
    ASSERT_TRUE(back->daemon);
    EXPECT_TRUE(back->targets.empty());
}

TEST(ControlResponse, HealEncodesTheTargetAndParsesBack) {
    const std::string line = encode_heal_response(sample_target());
    const json doc = json::parse(line);
    EXPECT_EQ(doc["ok"], true);
    EXPECT_EQ(doc["target"]["state"], "healthy");
    EXPECT_FALSE(doc.contains("targets"));
    const Result<ControlResponse> back = parse_control_response(line);
    ASSERT_TRUE(back) << back.error().message();
    ASSERT_TRUE(back->target);
    EXPECT_EQ(*back->target, sample_target());
    EXPECT_FALSE(back->daemon);
    EXPECT_FALSE(back->error);
}

TEST(ControlResponse, ErrorEncodesCodeAndMessage) {
    const std::string line = encode_error_response({ControlErrorCode::UnknownTarget, "/x is not a target"});
    EXPECT_EQ(line, "{\"ok\":false,\"error\":{\"code\":\"unknown-target\",\"message\":\"/x is not a target\"}}\n");
    const Result<ControlResponse> back = parse_control_response(line);
    ASSERT_TRUE(back) << back.error().message();
    ASSERT_TRUE(back->error);
    EXPECT_EQ(back->error->code, ControlErrorCode::UnknownTarget);
    EXPECT_EQ(back->error->message, "/x is not a target");
}

TEST(ControlResponse, AnErrorCodeFromANewerDaemonKeepsItsMessage) {
    const Result<ControlResponse> back =
        parse_control_response(R"({"ok":false,"error":{"code":"overheated","message":"too hot"}})");
    ASSERT_TRUE(back) << back.error().message();
    ASSERT_TRUE(back->error);
    EXPECT_EQ(back->error->code, ControlErrorCode::Internal);
    EXPECT_EQ(back->error->message, "too hot");
}

TEST(ControlResponse, PathsThatAreNotUtf8StillEncodeAsValidJson) {
    ControlTarget t = sample_target();
    t.target = "/pods/u/volumes/caf\xe9/mount";  // Latin-1 "café": not UTF-8
    const std::string line = encode_heal_response(t);
    const Result<ControlResponse> back = parse_control_response(line);
    ASSERT_TRUE(back) << back.error().message() << "\n" << line;
    ASSERT_TRUE(back->target);
    EXPECT_EQ(back->target->target, "/pods/u/volumes/caf\xef\xbf\xbd/mount") << "the bad byte becomes U+FFFD";
}

TEST(ControlResponse, UnknownKeysAreIgnored) {
    json doc = json::parse(encode_heal_response(sample_target()));
    doc["future"] = 1;
    doc["target"]["future"] = "x";
    const Result<ControlResponse> back = parse_control_response(doc.dump());
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(*back->target, sample_target());
}

struct BadResponseCase {
    const char* name;
    std::string line;
    std::string message;
};

void PrintTo(const BadResponseCase& c, std::ostream* os) { *os << c.name; }

class ControlResponseErrors : public testing::TestWithParam<BadResponseCase> {};

TEST_P(ControlResponseErrors, NameWhatIsMalformed) {
    const Result<ControlResponse> r = parse_control_response(GetParam().line);
    ASSERT_FALSE(r) << GetParam().line;
    EXPECT_EQ(r.error().message(), GetParam().message);
}

const BadResponseCase kBadResponses[] = {
    {"NotJson", "fuse-healerd says hi",
     "parse control response: invalid JSON: parse error at line 1, column 2: syntax error while parsing value - "
     "invalid literal; last read: 'fu'"},
    {"NotAnObject", "[]", "parse control response: expected a JSON object, got array"},
    {"NoOk", R"({"targets":[]})", "parse control response: ok: missing"},
    {"OkNotBoolean", R"({"ok":"yes"})", "parse control response: ok: expected a boolean, got string"},
    {"ErrorMissing", R"({"ok":false})", "parse control response: error: missing"},
    {"ErrorWithoutMessage", R"({"ok":false,"error":{"code":"busy"}})",
     "parse control response: error.message: missing"},
    {"NeitherStatusNorHeal", R"({"ok":true})",
     "parse control response: neither \"targets\" (a status answer) nor \"target\" (a heal answer)"},
    {"StatusWithoutDaemon", R"({"ok":true,"targets":[]})", "parse control response: daemon: missing"},
    {"TargetsNotAnArray", R"({"ok":true,"daemon":{"version":"1","pid":1,"strategy":"s","detection":"d",)"
                          R"("kernel":"k","targets":0,"broken":0,"heals":0,"mount_events":0,"reconciles":0,)"
                          R"("reconcile_running_us":0,"mount_tracking":"m","unrelated_mount_events":0},"targets":{}})",
     "parse control response: targets: expected an array, got object"},
    {"NumberBeyondADouble", R"({"ok":false,"error":1e999})",
     "parse control response: invalid JSON: number overflow parsing '1e999'"},
    // Found by fuzz_control: numbers out of the field's range were wrapped.
    {"HealsOutOfRange", R"({"ok":true,"target":{"target":"/t","pod_uid":"u","volume":"v","driver":"",)"
                        R"("volume_handle":"","kind":"volume","fstype":"fuse","state":"healthy","reason":"",)"
                        R"("heals":4294967298,"last_outage_us":0}})",
     "parse control response: target.heals: expected an integer from -2147483648 to 2147483647, got 4294967298"},
    {"OutageOutOfRange", R"({"ok":true,"target":{"target":"/t","pod_uid":"u","volume":"v","driver":"",)"
                         R"("volume_handle":"","kind":"volume","fstype":"fuse","state":"healthy","reason":"",)"
                         R"("heals":0,"last_outage_us":9223372036854775808}})",
     "parse control response: target.last_outage_us: expected an integer from -9223372036854775808 to "
     "9223372036854775807, got 9223372036854775808"},
    {"NegativeMountEvents", R"({"ok":true,"daemon":{"version":"1","pid":1,"strategy":"s","detection":"d",)"
                            R"("kernel":"k","targets":0,"broken":0,"heals":0,"mount_events":-1,"reconciles":0,)"
                            R"("reconcile_running_us":0,"mount_tracking":"m","unrelated_mount_events":0},"targets":[]})",
     "parse control response: daemon.mount_events: expected an integer from 0 to 18446744073709551615, got -1"},
    {"HealTargetMistyped", R"({"ok":true,"target":{"target":"/t","pod_uid":"u","volume":"v","driver":"",)"
                           R"("volume_handle":"","kind":"volume","fstype":"fuse","state":"healthy","reason":"",)"
                           R"("heals":"3","last_outage_us":0}})",
     "parse control response: target.heals: expected an integer, got string"},
};

INSTANTIATE_TEST_SUITE_P(ControlResponse, ControlResponseErrors, testing::ValuesIn(kBadResponses),
                         [](const testing::TestParamInfo<BadResponseCase>& i) { return std::string(i.param.name); });

// ---- rendering ----------------------------------------------------------------

TEST(ControlRender, CellsAreOneWordWithMountinfoEscapes) {
    EXPECT_EQ(escape_control_cell("pvc-1"), "pvc-1");
    EXPECT_EQ(escape_control_cell(""), "-");
    EXPECT_EQ(escape_control_cell("my volume"), "my\\040volume");
    EXPECT_EQ(escape_control_cell("a\nb\tc\\d"), "a\\012b\\011c\\134d");
    EXPECT_EQ(escape_control_cell("\x1b[31mred"), "\\033[31mred") << "no terminal escape reaches the screen";
    EXPECT_EQ(escape_control_cell("café"), "café") << "UTF-8 is printed as is";
}

TEST(ControlRender, OutageDurations) {
    EXPECT_EQ(format_outage(0), "-");
    EXPECT_EQ(format_outage(-5), "-");
    EXPECT_EQ(format_outage(1), "1us");
    EXPECT_EQ(format_outage(999), "999us");
    EXPECT_EQ(format_outage(1000), "1.0ms");
    EXPECT_EQ(format_outage(912345), "912.3ms");
    EXPECT_EQ(format_outage(999949), "999.9ms");
    EXPECT_EQ(format_outage(999950), "1.00s") << "rounds up into the next unit, not to 1000.0ms";
    EXPECT_EQ(format_outage(4250000), "4.25s");
    EXPECT_EQ(format_outage(59994999), "59.99s");
    EXPECT_EQ(format_outage(59995000), "1m00s");
    EXPECT_EQ(format_outage(187000000), "3m07s");
    EXPECT_EQ(format_outage(3599499999), "59m59s");
    EXPECT_EQ(format_outage(3599500000), "1h00m");
    EXPECT_EQ(format_outage(7500000000), "2h05m");
    // Found by fuzz_control (UBSan, tests/fuzz/regressions/control): the
    // rounding overflowed near INT64_MAX, which any answer may carry.
    EXPECT_EQ(format_outage(INT64_MAX), "2562047788h01m");
    EXPECT_EQ(format_outage(INT64_MAX - 49), "2562047788h01m");
}

TEST(ControlRender, StatusTableAlignsColumns) {
    ControlTarget global = sample_target();
    global.target = "/k/plugins/csi/globalmount";
    global.pod_uid = "";
    global.volume = "pv-7";
    global.kind = "global";
    global.state = "broken";
    global.heals = 0;
    global.last_outage_us = 0;
    ControlTarget vol = sample_target();
    vol.target = "/k/pods/1f2e/volumes/v/mount";
    ControlDaemonSummary d = sample_daemon();
    d.targets = 2;
    d.broken = 1;
    EXPECT_EQ(render_status_table(d, {global, vol}),
              "fuse-healerd 0.1.0, pid 4242: strategy replace, detection fusectl, mount tracking fanotify\n"
              "kernel: open_tree=yes move_mount_beneath=yes\n"
              "targets: 2 tracked, 1 broken; 3 healed since start; 17 mount events (12 unrelated), 9 reconciles\n"
              "\n"
              "POD UID  VOLUME  TARGET                        FSTYPE        STATE    HEALS  LAST OUTAGE\n"
              "-        pv-7    /k/plugins/csi/globalmount    fuse.juicefs  broken   0      -\n"
              "1f2e     pvc-1   /k/pods/1f2e/volumes/v/mount  fuse.juicefs  healthy  3      912.3ms\n");
}

TEST(ControlRender, NamesWithSpacesAndNewlinesCannotBreakOrForgeRows) {
    ControlTarget t = sample_target();
    t.pod_uid = "u";
    t.volume = "my vol\nu  x  /fake  fuse  healthy  9  -";
    t.target = "/k/pods/u/volumes/my vol/mount";
    t.last_outage_us = 0;
    t.heals = 0;
    const std::string table = render_status_table(sample_daemon(), {t});
    const std::string header = "POD UID  VOLUME";
    const std::size_t rows_start = table.find(header);
    ASSERT_NE(rows_start, std::string::npos) << table;
    const std::string rows = table.substr(rows_start);
    // The header and exactly one row.
    EXPECT_EQ(std::count(rows.begin(), rows.end(), '\n'), 2) << rows;
    EXPECT_NE(rows.find("my\\040vol\\012u\\040\\040x\\040\\040/fake\\040\\040fuse\\040\\040healthy\\040\\0409\\040\\040-"),
              std::string::npos)
        << rows;
    EXPECT_NE(rows.find("/k/pods/u/volumes/my\\040vol/mount"), std::string::npos) << rows;
    // Each row splits into the 7 columns (awk-style), whatever the names hold;
    // the header's "POD UID" and "LAST OUTAGE" are two words each.
    std::istringstream lines(rows);
    std::string line;
    std::getline(lines, line);
    std::getline(lines, line);
    std::istringstream words(line);
    std::vector<std::string> cells;
    for (std::string w; words >> w;) cells.push_back(w);
    EXPECT_EQ(cells.size(), 7u) << line;
    EXPECT_EQ(line.back(), '-') << "no trailing spaces: " << line;
}

TEST(ControlRender, DaemonSummaryEscapesControlCharactersButKeepsSpaces) {
    ControlDaemonSummary d = sample_daemon();
    d.kernel_features = "open_tree=yes\nfake line";
    d.reconcile_running_us = 2500000;
    const std::string table = render_status_table(d, {});
    EXPECT_EQ(table,
              "fuse-healerd 0.1.0, pid 4242: strategy replace, detection fusectl, mount tracking fanotify\n"
              "kernel: open_tree=yes\\012fake line\n"
              "targets: 1 tracked, 0 broken; 3 healed since start; 17 mount events (12 unrelated), 9 reconciles; a reconcile has "
              "been running for 2.50s\n"
              "\n"
              "no targets tracked\n");
}

// Why the daemon runs degraded: in the JSON (an array of texts, absent
// from older daemons' answers) and one line each in the table.
TEST(ControlResponse, DegradedListsParseBackAndMayBeAbsent) {
    ControlDaemonSummary d = sample_daemon();
    EXPECT_EQ(json::parse(encode_status_response(d, {}))["daemon"]["degraded"], json::array());
    d.degraded = {"pod index: the inotify watch limit is reached", "state: failed to save /s/origins.json"};
    const std::string line = encode_status_response(d, {});
    EXPECT_EQ(json::parse(line)["daemon"]["degraded"][1], "state: failed to save /s/origins.json");
    auto back = parse_control_response(line);
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(*back->daemon, d);
    json old = json::parse(line);
    old["daemon"].erase("degraded");
    back = parse_control_response(old.dump());
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_TRUE(back->daemon->degraded.empty());
    old["daemon"]["degraded"] = "not a list";
    EXPECT_FALSE(parse_control_response(old.dump()));
    old["daemon"]["degraded"] = json::array({1});
    EXPECT_FALSE(parse_control_response(old.dump()));
}

// The status of a daemon from before mount tracking (no "mount_tracking",
// no "unrelated_mount_events", no "degraded") still parses and renders; the
// fields every version sends stay required, and one present is checked.
TEST(ControlResponse, AnOlderDaemonsStatusParsesAndSaysWhatItLacks) {
    json old = json::parse(encode_status_response(sample_daemon(), {}));
    for (const char* key : {"mount_tracking", "unrelated_mount_events", "degraded"}) old["daemon"].erase(key);
    auto back = parse_control_response(old.dump());
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(back->daemon->mount_tracking, "");
    EXPECT_EQ(back->daemon->unrelated_mount_events, 0u);
    const std::string table = render_status_table(*back->daemon, {});
    EXPECT_NE(table.find("mount tracking not reported (an older daemon)"), std::string::npos) << table;
    EXPECT_EQ(table.find("unrelated"), std::string::npos) << table;
    EXPECT_NE(table.find(std::to_string(sample_daemon().mount_events) + " mount events, "), std::string::npos) << table;

    json wrong = old;
    wrong["daemon"]["mount_tracking"] = 7;
    EXPECT_FALSE(parse_control_response(wrong.dump()));
    json no_events = old;
    no_events["daemon"].erase("mount_events");
    EXPECT_FALSE(parse_control_response(no_events.dump()));
    // A current daemon's line keeps its "(N unrelated)".
    EXPECT_NE(render_status_table(sample_daemon(), {}).find(" unrelated), "), std::string::npos);
}

TEST(ControlRender, DegradedReasonsAreOneLineEach) {
    ControlDaemonSummary d = sample_daemon();
    d.degraded = {"pod index: no watches", "state: failed to save /s/a\nb"};
    const std::string table = render_status_table(d, {});
    EXPECT_NE(table.find("9 reconciles\nDEGRADED: pod index: no watches\nDEGRADED: state: failed to save /s/a\\012b\n\n"),
              std::string::npos)
        << table;
}

TEST(ControlRender, HealResult) {
    EXPECT_EQ(render_heal_result(sample_target()),
              "/var/lib/kubelet/pods/1f2e/volumes/kubernetes.io~csi/pvc-1/mount: healthy (heals 3, last outage "
              "912.3ms)\n");
    ControlTarget t = sample_target();
    t.target = "/k/my vol";
    t.state = "broken";
    t.reason = "source /runtime/ds is not mounted yet\n";
    t.heals = 0;
    t.last_outage_us = 0;
    EXPECT_EQ(render_heal_result(t),
              "/k/my\\040vol: broken: source /runtime/ds is not mounted yet\\012 (heals 0, last outage -)\n");
}

} // namespace
} // namespace fh
