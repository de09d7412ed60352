// Fuzz target: the state file (core/state_codec.h), read at every start; a
// daemon killed while writing it, a full disk or a hand edit can leave
// anything there.
//
// Invariants: no exception escapes; an error is "decode state" with a
// detail; decoded origins encode to a file that decodes to the same origins
// (a file we write is one we read back whole).
#include "core/state_codec.h"
#include "fuzz_check.h"

using fh::fuzz::show;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text = fh::fuzz::text_of(data, size);
    fh::Result<fh::OriginMap> r = [&] {
        try {
            return fh::decode_origins(text);
        } catch (const std::exception& e) {
            fh::fuzz::fail(__FILE__, __LINE__, "no exception", std::string("decode_origins threw: ") + e.what());
        }
    }();
    if (!r) {
        FH_FUZZ_CHECK(r.error().what == "decode state" && !r.error().detail.empty(),
                      "error without context: " + r.error().message());
        return 0;
    }
    for (const auto& [target, o] : *r) {
        FH_FUZZ_CHECK(!target.empty() && target.front() == '/' && target.find('\0') == std::string::npos,
                      "decoded target is not an absolute path: " + show(target));
        FH_FUZZ_CHECK(!o.source_path.empty() && o.source_path.front() == '/', "source_path " + show(o.source_path));
        FH_FUZZ_CHECK(!o.root.empty() && o.root.front() == '/', "root " + show(o.root));
    }
    const std::string encoded = fh::encode_origins(*r);
    const fh::Result<fh::OriginMap> again = fh::decode_origins(encoded);
    FH_FUZZ_CHECK(again.ok(), "an encoded state does not decode: " + again.error().message() + "\n" + show(encoded));
    FH_FUZZ_CHECK(*again == *r, "round trip changed the origins of " + show(text));
    return 0;
}
