// Learned origins on disk (<state dir>/origins.json), written atomically so a
// crash mid-write leaves the previous state intact.
#pragma once

#include <string>

#include "core/error.h"
#include "core/model.h"

namespace fh {

class StateStore {
public:
    explicit StateStore(std::string dir) : dir_(std::move(dir)) {}

    // Returns the saved origins; an empty map when no state file exists yet;
    // an Error when the file is unreadable or corrupt (the caller logs it and
    // starts empty; the next save replaces the bad file).
    Result<OriginMap> load() const;

    // Saves the origins atomically, creating the directory if needed.
    // Returns an Error naming the failing step (e.g. a full or read-only disk).
    Status save(const OriginMap& origins) const;

    // Returns the state file path.
    std::string path() const { return dir_ + "/origins.json"; }

private:
    std::string dir_;
};

} // namespace fh
