// The persisted state: learned origins, so that a daemon restarted during an
// outage still knows where each target comes from.
#pragma once

#include <string>

#include "core/error.h"
#include "core/model.h"

namespace fh {

// Returns the JSON text of the state file for these origins (a versioned
// object: {"version":1,"origins":[{target, source_path, root, fstype, source,
// flags:{read_only,nosuid,nodev,noexec}}...]}).
std::string encode_origins(const OriginMap& origins);

// Returns the origins decoded from state file text, or an Error describing
// what is wrong (bad JSON, wrong version, missing or mistyped field).
Result<OriginMap> decode_origins(const std::string& text);

} // namespace fh
