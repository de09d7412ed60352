#include "core/flat_multimap.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <vector>

#include "core/fnv1a.h"

namespace fh {
namespace {

std::vector<std::uint64_t> values_under(const FlatHashMultimap<std::uint64_t>& m, std::uint64_t hash) {
    std::vector<std::uint64_t> out;
    m.for_each(hash, [&](std::uint64_t v) {
        out.push_back(v);
        return true;
    });
    std::sort(out.begin(), out.end());
    return out;
}

TEST(FlatHashMultimap, KeepsEveryValueOfAHashAndErasesOnePairAtATime) {
    FlatHashMultimap<std::uint64_t> m;
    EXPECT_TRUE(values_under(m, 7).empty());
    EXPECT_FALSE(m.erase(7, 1));
    m.insert(7, 1);
    m.insert(7, 2);
    m.insert(7, 2);  // a pair twice is kept twice
    m.insert(8, 3);
    EXPECT_EQ(m.size(), 4u);
    EXPECT_EQ(values_under(m, 7), (std::vector<std::uint64_t>{1, 2, 2}));
    EXPECT_EQ(values_under(m, 8), (std::vector<std::uint64_t>{3}));
    EXPECT_TRUE(m.erase(7, 2));
    EXPECT_EQ(values_under(m, 7), (std::vector<std::uint64_t>{1, 2}));
    EXPECT_FALSE(m.erase(8, 1));  // the hash is there, not that pair
    EXPECT_TRUE(m.erase(8, 3));
    EXPECT_TRUE(values_under(m, 8).empty());
    EXPECT_EQ(m.size(), 2u);
}

TEST(FlatHashMultimap, ForEachStopsWhenAsked) {
    FlatHashMultimap<std::uint64_t> m;
    for (std::uint64_t v = 1; v <= 5; ++v) m.insert(42, v);
    int calls = 0;
    m.for_each(42, [&](std::uint64_t) { return ++calls < 2; });
    EXPECT_EQ(calls, 2);
}

// The erase's backward shift is where open addressing goes wrong: a pair
// left behind an empty slot is lost to lookups. Random inserts and erases,
// hashes drawn from a small set so that runs are long and wrap around the
// table's end, checked against std::multimap after every operation.
TEST(FlatHashMultimap, AgreesWithStdMultimapThroughRandomInsertsAndErases) {
    for (const std::uint64_t distinct_hashes : {3ULL, 40ULL, 5000ULL}) {
        std::mt19937_64 rng(distinct_hashes);
        FlatHashMultimap<std::uint64_t> m;
        std::multimap<std::uint64_t, std::uint64_t> want;
        std::vector<std::pair<std::uint64_t, std::uint64_t>> pairs;
        const int ops = distinct_hashes == 3 ? 3000 : 20000;
        for (int op = 0; op < ops; ++op) {
            const bool add = pairs.empty() || rng() % 3 != 0;
            if (add) {
                const std::uint64_t h = fnv1a_mix(kFnv1aOffsetBasis, rng() % distinct_hashes);
                const std::uint64_t v = 1 + rng() % 1000;
                m.insert(h, v);
                want.emplace(h, v);
                pairs.emplace_back(h, v);
            } else {
                const std::size_t k = rng() % pairs.size();
                const auto [h, v] = pairs[k];
                pairs[k] = pairs.back();
                pairs.pop_back();
                ASSERT_TRUE(m.erase(h, v)) << "op " << op;
                auto [lo, hi] = want.equal_range(h);
                want.erase(std::find_if(lo, hi, [v = v](const auto& p) { return p.second == v; }));
            }
            ASSERT_EQ(m.size(), want.size()) << "op " << op;
            if (op % 97 == 0 || distinct_hashes == 3) {
                for (auto it = want.begin(); it != want.end(); it = want.upper_bound(it->first)) {
                    std::vector<std::uint64_t> expected;
                    for (auto [lo, hi] = want.equal_range(it->first); lo != hi; ++lo) expected.push_back(lo->second);
                    std::sort(expected.begin(), expected.end());
                    ASSERT_EQ(values_under(m, it->first), expected) << "op " << op << ", hash " << it->first;
                }
            }
        }
        // At most three quarters full, a power of two.
        EXPECT_LE(m.size() * 4, m.capacity() * 3);
        EXPECT_EQ(m.capacity() & (m.capacity() - 1), 0u);
    }
}

TEST(FlatHashMultimap, ReserveMakesRoomAtOnce) {
    FlatHashMultimap<std::uint64_t> m;
    m.reserve(10000);
    const std::size_t slots = m.capacity();
    EXPECT_GE(slots * 3, 10000u * 4);
    for (std::uint64_t v = 1; v <= 10000; ++v) m.insert(fnv1a_mix(kFnv1aOffsetBasis, v), v);
    EXPECT_EQ(m.capacity(), slots);
    // 16 bytes a slot: 256 KiB for 10,000 pairs.
    EXPECT_EQ(slots, 16384u);
    for (std::uint64_t v = 1; v <= 10000; ++v)
        ASSERT_EQ(values_under(m, fnv1a_mix(kFnv1aOffsetBasis, v)), (std::vector<std::uint64_t>{v}));
}

}  // namespace
}  // namespace fh
