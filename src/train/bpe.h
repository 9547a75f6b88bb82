// A small byte-level BPE tokenizer trained by dsv4 on a corpus, written as an HF tokenizer.json
// that the engine's tokenizer (src/tokenizer) loads: the V4 pre-tokenizer, the GPT-2 byte
// alphabet, 256 byte tokens, merges learned greedily (most frequent adjacent pair over the
// corpus' pre-tokenized pieces; ties to the smaller pair of ids), then the V4 added tokens the
// chat format uses (BOS, EOS, pad, User, Assistant, think tags, DSML, latest_reminder) with the
// flags of the official table.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace dsv4::train {

// Number of added (special) tokens a trained tokenizer ends with.
int bpe_added_token_count();

// Throws Error if `text` is empty or not valid UTF-8 (naming the byte offset), or if
// vocab_size leaves no room for the 256 byte tokens and the added tokens.
nlohmann::ordered_json train_bpe(std::string_view text, int vocab_size);

// Writes dir/tokenizer.json and dir/tokenizer_config.json (bos/eos as in V4).
void write_tokenizer(const nlohmann::ordered_json& tokenizer_json, const std::string& dir);

}  // namespace dsv4::train
