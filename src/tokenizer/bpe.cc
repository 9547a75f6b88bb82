#include "tokenizer/bpe.h"

#include <algorithm>
#include <atomic>

#include "core/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/utf8.h"

namespace dsv4 {

BpeModel BpeModel::from_json(const nlohmann::json& model) {
  if (model.value("type", "BPE") != "BPE") throw Error(cat("tokenizer.json: model type '", model.value("type", ""), "' is not BPE"));
  if (model.value("byte_fallback", false)) throw Error("tokenizer.json: BPE byte_fallback is not supported");
  if (model.contains("dropout") && !model["dropout"].is_null()) throw Error("tokenizer.json: BPE dropout is not supported");
  for (const char* f : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(f) && model[f].is_string() && !model[f].get<std::string>().empty())
      throw Error(cat("tokenizer.json: BPE ", f, " is not supported"));
  }
  BpeModel m;
  static std::atomic<uint64_t> next_instance{1};
  m.instance_ = next_instance++;
  const auto& vocab = model.at("vocab");
  if (!vocab.is_object()) throw Error("tokenizer.json: model.vocab must be an object");
  std::unordered_map<std::string, int32_t> ids;
  ids.reserve(vocab.size() * 2);
  m.entries_.reserve(vocab.size());
  for (const auto& [tok, id] : vocab.items()) {
    if (!id.is_number_integer()) throw Error(cat("tokenizer.json: model.vocab[\"", tok, "\"] is not an integer"));
    const auto v = id.get<int32_t>();
    ids.emplace(tok, v);
    m.entries_.emplace_back(v, tok);
  }
  for (int b = 0; b < 256; ++b) {
    std::string s;
    utf8::append(s, byte_level::byte_to_char()[b]);
    auto it = ids.find(s);
    if (it == ids.end()) throw Error(cat("tokenizer.json: vocab has no token for byte 0x", std::hex, b));
    m.byte_ids_[b] = it->second;
  }
  const auto& merges = model.at("merges");
  m.merges_.reserve(merges.size() * 2);
  int32_t rank = 0;
  for (const auto& mj : merges) {
    std::string left, right;
    if (mj.is_string()) {
      const auto& s = mj.get_ref<const std::string&>();
      const auto sp = s.find(' ');
      if (sp == std::string::npos) throw Error(cat("tokenizer.json: merge #", rank, " '", s, "' has no space"));
      left = s.substr(0, sp);
      right = s.substr(sp + 1);
    } else if (mj.is_array() && mj.size() == 2) {
      left = mj[0].get<std::string>();
      right = mj[1].get<std::string>();
    } else {
      throw Error(cat("tokenizer.json: merge #", rank, " is neither \"a b\" nor [a, b]"));
    }
    const auto a = ids.find(left), b = ids.find(right), ab = ids.find(left + right);
    if (a == ids.end() || b == ids.end() || ab == ids.end())
      throw Error(cat("tokenizer.json: merge #", rank, " '", left, " ", right, "' uses a token missing from the vocab"));
    // A repeated pair keeps its first (lowest) rank.
    m.merges_.emplace(key(a->second, b->second), Merge{rank, ab->second});
    ++rank;
  }
  return m;
}

namespace {

struct Sym {
  int32_t id;
  int32_t prev;  // index of the previous live symbol, -1 at the start
  int32_t next;  // index of the next live symbol, -1 at the end
};

struct Cand {
  int32_t rank;
  int32_t pos;  // index of the left symbol
  int32_t left, right, merged;
};

// Min-heap order on (rank, pos): the lowest rank wins, ties go to the leftmost pair.
bool heap_less(const Cand& a, const Cand& b) { return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos; }

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
};

struct PieceCache {
  static constexpr std::size_t kMaxPiece = 32, kMaxEntries = 1 << 16;
  uint64_t owner = 0;
  std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> map;
};

}  // namespace

void BpeModel::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  const std::size_t n = piece.size();
  if (n == 0) return;
  if (n == 1) {
    out.push_back(byte_ids_[static_cast<unsigned char>(piece[0])]);
    return;
  }
  if (n > PieceCache::kMaxPiece) {
    merge(piece, out);
    return;
  }
  thread_local PieceCache cache;
  if (cache.owner != instance_ || cache.map.size() >= PieceCache::kMaxEntries) {
    cache.map.clear();
    cache.owner = instance_;
  }
  if (auto it = cache.map.find(piece); it != cache.map.end()) {
    out.insert(out.end(), it->second.begin(), it->second.end());
    return;
  }
  const std::size_t start = out.size();
  merge(piece, out);
  cache.map.emplace(std::string(piece), std::vector<int32_t>(out.begin() + static_cast<std::ptrdiff_t>(start), out.end()));
}

void BpeModel::merge(std::string_view piece, std::vector<int32_t>& out) const {
  const std::size_t n = piece.size();
  thread_local std::vector<Sym> syms;
  thread_local std::vector<Cand> heap;
  syms.resize(n);
  for (std::size_t i = 0; i < n; ++i)
    syms[i] = Sym{byte_ids_[static_cast<unsigned char>(piece[i])], static_cast<int32_t>(i) - 1,
                  i + 1 < n ? static_cast<int32_t>(i + 1) : -1};
  heap.clear();
  auto push = [&](int32_t pos) {
    const int32_t nx = syms[pos].next;
    if (nx < 0) return;
    auto it = merges_.find(key(syms[pos].id, syms[nx].id));
    if (it == merges_.end()) return;
    heap.push_back(Cand{it->second.rank, pos, syms[pos].id, syms[nx].id, it->second.id});
    std::push_heap(heap.begin(), heap.end(), heap_less);
  };
  for (std::size_t i = 0; i + 1 < n; ++i) push(static_cast<int32_t>(i));
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), heap_less);
    const Cand c = heap.back();
    heap.pop_back();
    Sym& l = syms[c.pos];
    // Stale candidates: the left symbol was merged away (id -1) or either side changed.
    if (l.id != c.left || l.next < 0 || syms[l.next].id != c.right) continue;
    const int32_t r = l.next;
    l.id = c.merged;
    l.next = syms[r].next;
    if (l.next >= 0) syms[l.next].prev = c.pos;
    syms[r].id = -1;
    if (l.prev >= 0) push(l.prev);
    push(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = syms[i].next) out.push_back(syms[i].id);
}

}  // namespace dsv4
