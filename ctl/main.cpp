// fuse-healerctl: everything but main lives in the engine library
// (engine/ctl_client.h).
#include "engine/ctl_client.h"

int main(int argc, char** argv) { return fh::run_fuse_healerctl(argc, argv); }
