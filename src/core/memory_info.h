// How much memory this process may really use. Inside a container the machine's free memory
// says little: the cgroup's limit is what the OOM killer enforces, so every "does it fit in
// RAM" decision (copying weights, the expert cache's budget, the server's KV budget) asks here.
#pragma once

#include <cstdint>
#include <string>

namespace dsv4 {

// Bytes of memory this process may still use: the smaller of /proc/meminfo's MemAvailable and
// the cgroup's limit (v2 memory.max, v1 memory.limit_in_bytes; "no limit" is ignored). `root`
// is prepended to those paths (tests use a fake tree). 0 when nothing could be read.
uint64_t available_memory(const std::string& root = "");

// The tightest memory limit of this process's cgroups in bytes, less what the cgroup already
// uses besides page cache (0: no limit set or none readable).
uint64_t cgroup_memory_limit(const std::string& root = "");

}  // namespace dsv4
