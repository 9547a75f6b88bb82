// State files: one Session's state on disk (docs/state-file.md).
//
// A file holds everything a Session needs to continue exactly where it stopped: the token ids,
// every layer's window ring, compressed KV and compressor / indexer state, the MTP block's
// state, plus an opaque application blob (the CLI keeps its chat history and sampler RNG there).
// KV rows are written as the numerics stores them (FP8 / FP4 codes with their scales in
// reference numerics), so a restored session gives bit-identical logits.
//
// The header names the format version, the numerics and a fingerprint of the model (config and
// tensor table); every section carries a CRC32C. Loading checks all of it and throws Error
// naming the cause (not a state file, other version, other numerics, other model, truncated,
// checksum mismatch) — never a silently wrong continuation. Saving writes a temporary file in
// the same directory, fsyncs it and renames it over the target, so a crash leaves the old file
// or the new one.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "engine/session.h"

namespace dsv4 {

inline constexpr uint32_t kStateFileVersion = 1;

// CRC32C (Castagnoli) of `bytes`, continuing from `crc` (0 to start).
uint32_t crc32c(std::span<const uint8_t> bytes, uint32_t crc = 0);

// What identifies the model a state belongs to: config plus every tensor's name, dtype, shape
// and first and last bytes (cheap even for a mapped 100+ GB checkpoint).
uint64_t model_fingerprint(const Model& model);

// Writes `session` (and `app_data`) to `path` crash-safely. Throws Error naming the file on
// I/O failure. Test hook: $DSV4_STATE_FILE_CRASH_AFTER=N makes the writer _exit(86) after N
// bytes of the temporary file (a simulated crash mid-write).
void save_session(const Session& session, const std::string& path, const std::string& app_data = "");

// Replaces `session`'s state by the file's and returns its application blob. On any error the
// session is left unchanged.
std::string load_session(Session* session, const std::string& path);

// The token ids a state file holds, reading only its header and token section (cheap: for
// indexing a directory of state files). Checks the magic, version, numerics and fingerprint
// against `model` and both checksums; throws Error naming the file and the cause. The rest of
// the file is only checked by load_session().
std::vector<int32_t> read_state_tokens(const Model& model, const std::string& path);

}  // namespace dsv4
