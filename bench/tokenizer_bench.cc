// Tokenizer benchmarks: tokenizer.json load time, encode throughput on a few MB of English prose
// and of mixed text (code, CJK, digits, emoji, other scripts), decode throughput.
//
// The tokenizer comes from $DSV4_TOKENIZER (a model dir or tokenizer.json), else
// ../shared/tokenizer. Texts are generated deterministically, so runs are comparable.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace {

std::string tokenizer_path() {
  if (const char* p = std::getenv("DSV4_TOKENIZER")) return p;
  return std::string(DSV4_SHARED_DIR) + "/tokenizer";
}

const dsv4::Tokenizer& tok() {
  static const dsv4::Tokenizer t = dsv4::Tokenizer::load(tokenizer_path());
  return t;
}

// Sentences from a fixed word list with punctuation, numbers and paragraph breaks.
std::string english_prose(std::size_t bytes) {
  static const std::vector<std::string> words = {
      "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not",
      "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were",
      "their", "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will", "would",
      "who", "so", "no", "model", "language", "attention", "training", "between", "because", "government",
      "development", "information", "understanding", "particularly", "environment", "significant", "however",
      "available", "experience", "approximately", "responsibility", "implementation", "notwithstanding",
      "characteristics", "Washington", "Europe", "January", "Internet", "university", "children", "water",
      "history", "tokenizer", "efficiently", "don't", "it's", "we're", "they've", "user's", "well-known"};
  std::mt19937 rng(2024);
  std::string s;
  while (s.size() < bytes) {
    const int n = 6 + static_cast<int>(rng() % 18);
    for (int i = 0; i < n; ++i) {
      std::string w = words[rng() % words.size()];
      if (i == 0) w[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(w[0])));
      s += w;
      if (i + 1 < n) s += rng() % 12 == 0 ? ", " : " ";
      if (rng() % 40 == 0) s += std::to_string(rng() % 100000) + " ";
    }
    s += rng() % 8 == 0 ? ".\n\n" : ". ";
  }
  return s;
}

std::string mixed_text(std::size_t bytes) {
  static const std::vector<std::string> parts = {
      "def main(argv):\n    for i in range(10):\n        print(f\"value {i}: {argv[i]!r}\")\n",
      "int main() {\n\tstd::vector<int> v{1, 2, 3};\n\treturn v.size() > 2 ? 0 : 1;\n}\n",
      "{\"id\": 12345, \"name\": \"test\", \"tags\": [\"a\", \"b\"], \"ok\": true}\n",
      "深度求索发布了新的语言模型，支持百万级上下文。", "日本語のテキストも含まれています。カタカナ、ひらがな。",
      "Привет, мир! Это тестовый текст. ", "مرحبا بالعالم ", "नमस्ते दुनिया ", "สวัสดีชาวโลก ",
      "Emoji 😀👍🏽🇯🇵 and symbols ©®™ ± ≠ ∞. ", "Price: $1,234.56 (≈ €1.100,00) on 2024-06-30. ",
      "    indented   with    spaces\t\ttabs\n\n\n", "<think>special tokens</think><｜User｜>", "ＡＢＣ１２３ "};
  std::mt19937 rng(7);
  std::string s = english_prose(bytes / 3);
  while (s.size() < bytes) s += parts[rng() % parts.size()];
  return s;
}

void BM_Load(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(dsv4::Tokenizer::load(tokenizer_path()));
  state.SetLabel(tokenizer_path());
}
BENCHMARK(BM_Load)->Unit(benchmark::kMillisecond)->Iterations(5);

void BM_EncodeEnglish(benchmark::State& state) {
  const std::string text = english_prose(4 << 20);
  tok();  // load outside the timed loop
  std::size_t tokens = 0;
  for (auto _ : state) {
    const auto ids = tok().encode(text);
    tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["bytes_per_token"] = static_cast<double>(text.size()) / static_cast<double>(tokens);
}
BENCHMARK(BM_EncodeEnglish)->Unit(benchmark::kMillisecond);

void BM_EncodeMixed(benchmark::State& state) {
  const std::string text = mixed_text(4 << 20);
  tok();
  for (auto _ : state) benchmark::DoNotOptimize(tok().encode(text).data());
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_EncodeMixed)->Unit(benchmark::kMillisecond);

void BM_Decode(benchmark::State& state) {
  const std::string text = mixed_text(4 << 20);
  const auto ids = tok().encode(text);
  for (auto _ : state) benchmark::DoNotOptimize(tok().decode(ids).data());
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_Decode)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
