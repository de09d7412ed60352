// N strings kept end to end in one allocation, for records held per target
// or per volume by the thousand: N std::strings cost 32 bytes each inline,
// and each one longer than 15 bytes a heap block of its own besides.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace fh {

template <std::size_t N>
class PackedStrings {
public:
    PackedStrings() = default;
    // Packs `fields`, in this order.
    explicit PackedStrings(const std::array<std::string_view, N>& fields) {
        std::size_t size = 0;
        for (std::string_view f : fields) size += f.size();
        text_.reserve(size);
        for (std::size_t i = 0; i < N; ++i) {
            text_.append(fields[i]);
            ends_[i] = static_cast<std::uint32_t>(text_.size());
        }
    }

    // Returns field `i` (< N), valid while this object is neither changed
    // nor moved (a short text lives inside the object itself).
    std::string_view operator[](std::size_t i) const {
        const std::uint32_t begin = i == 0 ? 0 : ends_[i - 1];
        return std::string_view(text_).substr(begin, ends_[i] - begin);
    }

private:
    std::string text_;                     // the fields end to end
    std::array<std::uint32_t, N> ends_{};  // where each field ends in text_
};

} // namespace fh
