// fuse-healerd: everything but the command line lives in the engine library.
#include "engine/cli.h"

int main(int argc, char** argv) { return fh::run_fuse_healerd(argc, argv); }
