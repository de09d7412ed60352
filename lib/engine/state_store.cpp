#include "engine/state_store.h"

#include <sys/stat.h>

#include <filesystem>

#include "core/state_codec.h"
#include "engine/sys.h"

namespace fh {

Result<OriginMap> StateStore::load() const {
    auto text = sys::read_small_file(path());
    if (!text) {
        if (text.error().err == ENOENT) return OriginMap{};
        return text.error();
    }
    auto decoded = decode_origins(*text);
    if (!decoded) {
        Error e = decoded.error();
        if (e.path.empty()) e.path = path();
        return e;
    }
    return decoded;
}

Status StateStore::save(const OriginMap& origins) const {
    // Parents as needed; the state dir itself private to root (0700).
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(dir_).parent_path(), ec);
    if (ec) return Error{"mkdir -p", dir_, ec.value(), {}};
    if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) return errno_error("mkdir", dir_);
    return sys::write_file_atomically(path(), encode_origins(origins));
}

} // namespace fh
