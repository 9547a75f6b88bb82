// Constrained decoding costs (src/constrain): building the vocabulary trie, compiling a schema
// to its DFA, a token mask computed cold (one trie walk) and the per-token overhead while
// decoding (mask applied to the logits + the DFA advanced), with masks cached and cold.
//
// The tokenizer comes from $DSV4_TOKENIZER, else ../shared/tokenizer. The decoded tokens are a
// fixed document tokenized by the real tokenizer, so runs are comparable.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <vector>

#include "constrain/token_mask.h"

namespace {

using namespace dsv4;
using namespace dsv4::constrain;

const Tokenizer& tok() {
  static const Tokenizer t = Tokenizer::load(std::getenv("DSV4_TOKENIZER") ? std::getenv("DSV4_TOKENIZER")
                                                                            : std::string(DSV4_SHARED_DIR) + "/tokenizer");
  return t;
}

std::shared_ptr<const Vocabulary> vocab() {
  static const auto v = std::make_shared<const Vocabulary>(tok(), tok().eos_id());
  return v;
}

const char* kPerson = R"({"type": "object", "properties": {"name": {"type": "string", "maxLength": 40},
  "age": {"type": "integer"}, "email": {"type": ["string", "null"]}, "roles": {"type": "array",
  "items": {"enum": ["admin", "user", "guest"]}, "maxItems": 3}, "address": {"type": "object", "properties": {
  "street": {"type": "string"}, "zip": {"type": "string", "maxLength": 10}}, "required": ["street"]}},
  "required": ["name", "age", "roles"], "additionalProperties": false})";
const char* kPersonDoc = R"({"name": "Ada Lovelace", "age": 36, "email": "ada@example.org", "roles": ["admin", "user"],)"
                         R"( "address": {"street": "12 St James's Square, London", "zip": "SW1Y 4JH"}})";

GrammarSpec person() {
  GrammarSpec s;
  s.schema = Json::parse(kPerson);
  return s;
}

GrammarSpec tools(bool thinking) {
  GrammarSpec s;
  s.thinking = thinking;
  s.call_required = true;
  s.tools.push_back({"read_file", Json::parse(R"({"type": "object", "properties": {"path": {"type": "string"},
      "offset": {"type": "integer"}, "limit": {"type": "integer"}}, "required": ["path"]})"), "tools[0]"});
  s.tools.push_back({"bash", Json::parse(R"({"type": "object", "properties": {"command": {"type": "string"},
      "timeout": {"type": "number"}, "background": {"type": "boolean"}}, "required": ["command"]})"), "tools[1]"});
  s.tools.push_back({"edit", Json::parse(R"({"type": "object", "properties": {"path": {"type": "string"},
      "edits": {"type": "array", "items": {"type": "object", "properties": {"old": {"type": "string"},
      "new": {"type": "string"}}, "required": ["old", "new"]}}}, "required": ["path", "edits"]})"), "tools[2]"});
  return s;
}

GrammarSpec json_object() {
  GrammarSpec s;
  s.json_object = true;
  return s;
}

void BM_VocabularyTrie(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(Vocabulary(tok(), tok().eos_id()));
  state.counters["nodes"] = double(vocab()->nodes().size());
}
BENCHMARK(BM_VocabularyTrie)->Unit(benchmark::kMillisecond)->Iterations(3);

void compile(benchmark::State& state, GrammarSpec (*make)()) {
  size_t states = 0;
  for (auto _ : state) states = build_dfa(make()).size();
  state.counters["dfa_states"] = double(states);
}
BENCHMARK_CAPTURE(compile, person_schema, person)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(compile, three_tools, [] { return tools(false); })->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(compile, three_tools_thinking, [] { return tools(true); })->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(compile, json_object, json_object)->Unit(benchmark::kMillisecond);

// One cold mask: a trie walk from the state `prefix` leads to.
void mask_cold(benchmark::State& state, const char* prefix) {
  const Dfa dfa = build_dfa(person());
  const int s = dfa.walk(dfa.start(), prefix);
  size_t allowed = 0;
  for (auto _ : state) {
    Constraint c(vocab(), dfa);
    const auto m = c.mask(s);
    allowed = 0;
    for (uint64_t w : *m) allowed += size_t(__builtin_popcountll(w));
  }
  state.counters["allowed_tokens"] = double(allowed);
}
BENCHMARK_CAPTURE(mask_cold, document_start, "")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(mask_cold, inside_free_string, R"({"name": "Ada", "age": 36, "roles": [], "address": {"street": "12 St)")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(mask_cold, inside_number, R"({"name": "Ada", "age": 3)")->Unit(benchmark::kMicrosecond);

// Per decoded token, as the server does it: copy the logits, mask them, advance the DFA.
void per_token(benchmark::State& state, bool warm) {
  const std::vector<int32_t> ids = tok().encode(kPersonDoc);
  const Dfa dfa = build_dfa(person());
  std::vector<float> logits(size_t(tok().vocab_size()), 0.5f);
  auto run = [&](const Constraint& c) {
    int s = c.start();
    for (int32_t id : ids) {
      std::vector<float> masked(logits);
      c.apply(s, masked);
      benchmark::DoNotOptimize(masked.data());
      s = c.advance(s, id);
      if (s < 0) throw Error("the benchmark document left its schema");
    }
  };
  const Constraint cached(vocab(), dfa);
  if (warm) run(cached);
  for (auto _ : state) {
    if (warm) {
      run(cached);
    } else {
      Constraint fresh(vocab(), dfa);
      run(fresh);
    }
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(ids.size()));
  state.counters["tokens"] = double(ids.size());
}
BENCHMARK_CAPTURE(per_token, masks_cached, true)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(per_token, masks_cold, false)->Unit(benchmark::kMicrosecond);

// The baseline the overhead adds to: copying the logits alone.
void BM_LogitsCopy(benchmark::State& state) {
  std::vector<float> logits(size_t(tok().vocab_size()), 0.5f);
  for (auto _ : state) {
    std::vector<float> copy(logits);
    benchmark::DoNotOptimize(copy.data());
  }
}
BENCHMARK(BM_LogitsCopy)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
