// A main for the fuzz targets without libFuzzer: runs LLVMFuzzerTestOneInput
// once on each file named on the command line, and on every regular file of
// each directory named (sorted by name, not recursive). ctest runs it on the
// seed corpus and the regression inputs of its target with the normal build,
// so a fixed crash stays fixed without clang. Files whose name starts with a
// dot are not inputs (.gitkeep).
//
//   replay_<target> DIR_OR_FILE...
//
// Exits 0 after the last input (an invariant that fails aborts first, naming
// the input on stderr), 1 when the arguments name no input at all (a replay
// of nothing would pass silently).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

int main(int argc, char** argv) {
    namespace fs = std::filesystem;
    std::vector<fs::path> inputs;
    for (int i = 1; i < argc; ++i) {
        const fs::path arg(argv[i]);
        std::error_code ec;
        if (fs::is_directory(arg, ec)) {
            std::vector<fs::path> here;
            for (const auto& entry : fs::directory_iterator(arg))
                // Dot files (.gitkeep) keep an empty directory in git.
                if (entry.is_regular_file() && entry.path().filename().string().front() != '.')
                    here.push_back(entry.path());
            std::sort(here.begin(), here.end());
            inputs.insert(inputs.end(), here.begin(), here.end());
        } else if (fs::is_regular_file(arg, ec)) {
            inputs.push_back(arg);
        } else {
            std::fprintf(stderr, "replay: %s: not a file or directory\n", argv[i]);
            return 1;
        }
    }
    if (inputs.empty()) {
        std::fprintf(stderr, "replay: no input found in the arguments\n");
        return 1;
    }
    for (const fs::path& p : inputs) {
        std::ifstream in(p, std::ios::binary);
        if (!in) {
            std::fprintf(stderr, "replay: cannot read %s\n", p.c_str());
            return 1;
        }
        const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
        // Named before it runs: an abort in the target leaves this as the
        // last line.
        std::fprintf(stderr, "replay: %s (%zu bytes)\n", p.c_str(), bytes.size());
        LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    }
    std::printf("replay: %zu inputs, every invariant held\n", inputs.size());
    return 0;
}
