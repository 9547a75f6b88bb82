// Generation and streaming of synthetic checkpoint weights (synthetic.h).
//
// Every tensor of expected_tensors(config) is produced in fixed row chunks; chunk i of tensor T
// draws from its own stream seeded by (seed, name of T, i), so chunks can be generated on any
// number of threads and the bytes stay the same. A quantised weight and its `.scale` are written
// back to back into the same shard: the scales fall out of quantising the weight's chunks.
#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/error.h"
#include "kernels/quant.h"
#include "model/inventory.h"
#include "model/synthetic.h"

namespace dsv4 {

uint8_t detail::e2m1_branchless(float q) {
  const float a = std::fabs(q);
  const uint8_t sign = uint8_t((std::bit_cast<uint32_t>(q) >> 28) & 8);
  // Thresholds between the magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6; at a tie the even code wins
  // (0.25→0, 0.75→1, 1.25→1, 1.75→2, 2.5→2, 3.5→4, 5→4), hence > and >= alternate.
  const uint8_t m = uint8_t((a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) + (a >= 3.5f) + (a > 5.0f));
  return sign | m;
}

namespace {

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t s = a ^ (b * 0xd6e8feb86659fd93ull);
  return splitmix64(s);
}
uint64_t hash_name(const std::string& s) {  // FNV-1a: stable across platforms, unlike std::hash
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : s) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}

// Standard-normal quantiles at (i + 0.5) / 65536. Drawing a 16-bit index gives four normals
// per 64-bit random number — cheap enough to fill billions of weights at disk speed, and the
// 2^-16 resolution and ±4.3σ tails are far finer than the 3-bit FP8 / 1-bit FP4 mantissas the
// values are quantised to. Built once by bisection on erfc (exact to float precision).
const float* normal_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (int i = 32768; i < 65536; ++i) {
      double p = (i + 0.5) / 65536.0, lo = 0, hi = 8;
      for (int it = 0; it < 60; ++it) {
        double mid = 0.5 * (lo + hi);
        (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
      }
      t[size_t(i)] = float(0.5 * (lo + hi));
      t[size_t(65535 - i)] = -t[size_t(i)];
    }
    return t;
  }();
  return table.data();
}

struct Rng {
  uint64_t s;
  uint64_t next() { return splitmix64(s); }
  double uniform() { return double(next() >> 11) * 0x1p-53; }  // [0, 1), from bits: portable
  void normals(float* out, int64_t n, float mean, float std) {
    const float* t = normal_table();
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
      uint64_t r = next();
      for (int k = 0; k < 4; ++k) out[i + k] = mean + std * t[(r >> (16 * k)) & 0xffff];
    }
    if (i < n) {
      uint64_t r = next();
      for (int k = 0; i < n; ++i, ++k) out[i] = mean + std * t[(r >> (16 * k)) & 0xffff];
    }
  }
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// One tensor to write, with its scale when it is a quantised weight.
struct Item {
  const TensorSpec* weight;
  const TensorSpec* scale = nullptr;  // "<p>.scale" of an FP8/FP4 "<p>.weight"
  int64_t bytes() const { return weight->nbytes() + (scale ? scale->nbytes() : 0); }
};

// How the values of a tensor are drawn (golden README §7; gains chosen so the residual rms grows
// slowly and logits stay O(1) — see synthetic_test).
struct Dist {
  enum Kind { kNormal, kUniform, kEmbed, kHcBase, kTid2eid } kind = kNormal;
  float a = 0, b = 1;  // normal: mean, std; uniform: lo, hi
};

Dist dist_for(const TensorSpec& s, const ModelConfig& c) {
  const std::string& n = s.name;
  if (n == "embed.weight") return {Dist::kEmbed};
  if (ends_with(n, "norm.weight")) return {Dist::kUniform, 0.8f, 1.2f};
  if (ends_with(n, ".tid2eid")) return {Dist::kTid2eid};
  if (ends_with(n, "_base")) return {Dist::kHcBase, 0, 0.5f};
  if (ends_with(n, "_scale")) return {Dist::kUniform, 0.3f, 1.0f};  // hc_*_scale
  if (ends_with(n, "attn_sink")) return {Dist::kNormal, 3.0f, 1.0f};
  if (ends_with(n, ".ape")) return {Dist::kNormal, 0.0f, 0.3f};
  if (ends_with(n, "gate.bias")) return {Dist::kNormal, 0.0f, 0.05f};
  if (s.shape.size() != 2) throw Error(cat("synthetic weights: no distribution for tensor ", n));
  // Matrices: N(0, gain²/fan_in) with fan_in the logical input width.
  int64_t fan_in = s.shape[1] * (s.dtype == DType::I8 ? 2 : 1);
  if (ends_with(n, "_fn")) fan_in = int64_t(c.hc_mult) * c.dim;
  float gain = 1.0f;
  if (n == "head.weight") gain = 2.0f;  // logits std ≈ 2, like the golden models
  // Projections whose outputs add into the residual streams: smaller, so the residual grows slowly.
  else if (ends_with(n, "wo_b.weight") || ends_with(n, "w2.weight")) gain = 0.5f;
  // MTP: e_proj and h_proj outputs are summed.
  else if (ends_with(n, "e_proj.weight") || ends_with(n, "h_proj.weight")) gain = 0.7f;
  return {Dist::kNormal, 0.0f, gain / std::sqrt(float(fan_in))};
}

// Generates one tensor in row chunks.
class TensorGen {
 public:
  TensorGen(const Item& item, const ModelConfig& c, uint64_t seed, const std::vector<float>* embed_mean)
      : item_(item), s_(*item.weight), c_(c), dist_(dist_for(s_, c)), embed_mean_(embed_mean) {
    rows_ = s_.shape.size() == 2 ? s_.shape[0] : 1;
    cols_ = s_.shape.empty() ? 1 : s_.shape.back() * (s_.dtype == DType::I8 ? 2 : 1);  // logical width
    if (s_.dtype == DType::F8_E4M3) chunk_rows_ = 128;  // one band of 128×128 scale blocks
    else chunk_rows_ = std::max<int64_t>(1, (int64_t(1) << 20) / cols_);
    key_ = mix(seed, hash_name(s_.name));
    DSV4_CHECK(s_.dtype != DType::I8 || cols_ % 32 == 0, s_.name, ": FP4 width not a multiple of 32");
  }
  int64_t chunks() const { return (rows_ + chunk_rows_ - 1) / chunk_rows_; }
  int64_t chunk_rows() const { return chunk_rows_; }
  int64_t row_bytes() const { return s_.nbytes() / rows_; }

  // Rows [i·chunk_rows, …) into `out` (that chunk's bytes) and their scales into `scale`
  // (the whole scale tensor). Thread-safe for distinct chunks.
  void chunk(int64_t i, uint8_t* out, uint8_t* scale) const {
    const int64_t r0 = i * chunk_rows_, nr = std::min(chunk_rows_, rows_ - r0), n = nr * cols_;
    Rng rng{mix(key_, uint64_t(i))};
    if (dist_.kind == Dist::kTid2eid) return tid2eid(rng, nr, out);
    std::vector<float> v(static_cast<size_t>(n));
    if (dist_.kind == Dist::kUniform) {
      for (float& x : v) x = dist_.a + (dist_.b - dist_.a) * float(rng.uniform());
    } else {
      rng.normals(v.data(), n, dist_.kind == Dist::kEmbed ? 0.0f : dist_.a, dist_.kind == Dist::kEmbed ? 1.0f : dist_.b);
    }
    if (dist_.kind == Dist::kEmbed)  // a common mean vector: hidden states share a direction, as trained ones do
      for (int64_t r = 0; r < nr; ++r)
        for (int64_t k = 0; k < cols_; ++k) v[size_t(r * cols_ + k)] += (*embed_mean_)[size_t(k)];
    if (dist_.kind == Dist::kHcBase && s_.shape[0] == c_.hc_mix_dim())  // comb favours keeping each stream
      for (int j = 0; j < c_.hc_mult; ++j) v[size_t(2 * c_.hc_mult + j * c_.hc_mult + j)] += 2.0f;
    encode(v.data(), r0, nr, out, scale);
  }

 private:
  void encode(const float* v, int64_t r0, int64_t nr, uint8_t* out, uint8_t* scale) const {
    const int64_t n = nr * cols_;
    switch (s_.dtype) {
      case DType::F32: std::memcpy(out, v, size_t(n) * 4); break;
      case DType::BF16:
        for (int64_t k = 0; k < n; ++k) {
          uint16_t b = f32_to_bf16(v[k]);
          std::memcpy(out + 2 * k, &b, 2);
        }
        break;
      case DType::F8_E4M3: {  // 128×128 blocks: one UE8M0 scale per block (spec §3.4)
        const int64_t nkb = (cols_ + 127) / 128;
        DSV4_CHECK(item_.scale && item_.scale->shape[1] == nkb, s_.name, ": FP8 scale shape");
        for (int64_t kb = 0; kb < nkb; ++kb) {
          const int64_t k0 = kb * 128, k1 = std::min(cols_, k0 + 128);
          float amax = 0;
          for (int64_t r = 0; r < nr; ++r)
            for (int64_t k = k0; k < k1; ++k) amax = std::max(amax, std::fabs(v[r * cols_ + k]));
          const float s = kernels::fp8_scale_for(amax);
          scale[(r0 / 128) * nkb + kb] = uint8_t(std::bit_cast<uint32_t>(s) >> 23);
          for (int64_t r = 0; r < nr; ++r)
            for (int64_t k = k0; k < k1; ++k)
              out[r * cols_ + k] = f32_to_e4m3(std::clamp(v[r * cols_ + k] / s, -kE4m3Max, kE4m3Max));
        }
        break;
      }
      case DType::I8: {  // FP4 pairs, 1×32 blocks along the input dim
        DSV4_CHECK(item_.scale, s_.name, ": FP4 weight without scale");
        // kernels::fp4_quantize's math with the branch-free encoder: routed experts are most of
        // a real-width checkpoint, and the generic encoder's loop is what limits the speed.
        for (int64_t b = 0; b < nr * cols_ / 32; ++b) {
          const float* x = v + b * 32;
          float amax = 0;
          for (int k = 0; k < 32; ++k) amax = std::max(amax, std::fabs(x[k]));
          const float s = kernels::fp4_scale_for(amax), inv = 1.0f / s;  // exact: s is a power of two
          scale[r0 * (cols_ / 32) + b] = uint8_t(std::bit_cast<uint32_t>(s) >> 23);
          uint8_t codes[32];
          for (int k = 0; k < 32; ++k) codes[k] = detail::e2m1_branchless(std::clamp(x[k] * inv, -kE2m1Max, kE2m1Max));
          uint8_t* o = out + b * 16;
          for (int j = 0; j < 16; ++j) o[j] = uint8_t(codes[2 * j] | (codes[2 * j + 1] << 4));
        }
        break;
      }
      default: DSV4_CHECK(false, s_.name, ": unexpected dtype ", dtype_name(s_.dtype));
    }
  }

  // Hash routing table: each row K distinct experts (partial Fisher–Yates), I64 little-endian.
  void tid2eid(Rng& rng, int64_t nr, uint8_t* out) const {
    const int E = c_.n_routed_experts, K = int(cols_);
    std::vector<int64_t> ids(static_cast<size_t>(E));
    for (int64_t r = 0; r < nr; ++r) {
      for (int e = 0; e < E; ++e) ids[size_t(e)] = e;
      for (int k = 0; k < K; ++k) std::swap(ids[size_t(k)], ids[size_t(k + int(rng.next() % uint64_t(E - k)))]);
      std::memcpy(out + r * K * 8, ids.data(), size_t(K) * 8);
    }
  }

  const Item& item_;
  const TensorSpec& s_;
  const ModelConfig& c_;
  Dist dist_;
  const std::vector<float>* embed_mean_;
  int64_t rows_ = 1, cols_ = 1, chunk_rows_ = 1;
  uint64_t key_ = 0;
};

class ShardFile {
 public:
  explicit ShardFile(const std::string& path) : path_(path), f_(std::fopen(path.c_str(), "wb")) {
    if (!f_) throw Error(cat("cannot create ", path, ": ", std::strerror(errno)));
    std::setvbuf(f_, nullptr, _IOFBF, 1 << 22);
  }
  ~ShardFile() {
    if (f_) std::fclose(f_);
  }
  void write(const void* p, size_t n) {
    if (n && std::fwrite(p, 1, n, f_) != n) throw Error(cat("error writing ", path_, ": ", std::strerror(errno)));
  }
  void close() {
    FILE* f = f_;
    f_ = nullptr;
    if (std::fclose(f) != 0) throw Error(cat("error closing ", path_, ": ", std::strerror(errno)));
  }

 private:
  std::string path_;
  FILE* f_;
};

// Writes one item's weight (in slabs of chunks generated in parallel) and then its scale.
void write_item(const Item& item, const ModelConfig& c, uint64_t seed, const std::vector<float>& embed_mean,
                int threads, ShardFile& file, const std::function<void(int64_t, const std::string&)>& advance) {
  TensorGen gen(item, c, seed, &embed_mean);
  std::vector<uint8_t> scale(item.scale ? size_t(item.scale->nbytes()) : 0);
  const int64_t chunk_bytes = gen.chunk_rows() * gen.row_bytes();
  const int64_t per_slab = std::max<int64_t>(1, (int64_t(64) << 20) / chunk_bytes);
  const int64_t total = item.weight->nbytes();
  std::vector<uint8_t> slab;
  for (int64_t c0 = 0; c0 < gen.chunks(); c0 += per_slab) {
    const int64_t c1 = std::min(gen.chunks(), c0 + per_slab);
    const int64_t bytes = std::min(total, c1 * chunk_bytes) - c0 * chunk_bytes;
    slab.resize(size_t(bytes));
    std::atomic<int64_t> next{c0};
    auto work = [&] {
      for (int64_t i; (i = next.fetch_add(1)) < c1;) gen.chunk(i, slab.data() + (i - c0) * chunk_bytes, scale.data());
    };
    const int nt = int(std::min<int64_t>(threads, c1 - c0));
    std::vector<std::thread> pool;
    for (int t = 1; t < nt; ++t) pool.emplace_back(work);
    work();
    for (std::thread& t : pool) t.join();
    file.write(slab.data(), slab.size());
    advance(bytes, item.weight->name);
  }
  if (item.scale) {
    file.write(scale.data(), scale.size());
    advance(int64_t(scale.size()), item.scale->name);
  }
}

std::vector<Item> plan_items(const std::vector<TensorSpec>& specs) {
  std::map<std::string, const TensorSpec*> by_name;
  for (const TensorSpec& s : specs) by_name[s.name] = &s;
  std::vector<Item> items;
  for (const TensorSpec& s : specs) {
    if (ends_with(s.name, ".scale") && s.dtype == DType::F8_E8M0) continue;  // written with its weight
    Item it{&s};
    if (s.dtype == DType::F8_E4M3 || s.dtype == DType::I8) {
      auto f = by_name.find(s.name.substr(0, s.name.size() - 7) + ".scale");
      DSV4_CHECK(ends_with(s.name, ".weight") && f != by_name.end(), "quantised tensor without scale: ", s.name);
      it.scale = f->second;
    }
    items.push_back(it);
  }
  return items;
}

}  // namespace

int64_t synthetic_checkpoint_bytes(const ModelConfig& c) {
  int64_t total = 0;
  for (const TensorSpec& s : expected_tensors(c)) total += s.nbytes();
  return total;
}

void write_synthetic_checkpoint(const ModelConfig& c, const std::string& out_dir, uint64_t seed,
                                const ProgressFn& progress, const SyntheticOptions& options) {
  namespace fs = std::filesystem;
  // Round-trip through config.json first: the checkpoint must load, so its config must validate.
  const std::string config_text = config_json(c);
  parse_config(config_text, "synthetic config");
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw Error(cat("cannot create directory ", out_dir, ": ", ec.message()));

  const std::vector<TensorSpec> specs = expected_tensors(c);
  const std::vector<Item> items = plan_items(specs);
  int64_t total = 0;
  for (const Item& it : items) total += it.bytes();

  // Shards: items in inventory order (layer by layer), a new shard when the next item would
  // overflow the target; an item larger than the target gets a shard of its own.
  const int64_t target = options.shard_bytes > 0 ? options.shard_bytes
                         : c.dim <= 1024         ? int64_t(64) << 20
                                                 : int64_t(1536) << 20;
  std::vector<std::vector<const Item*>> shards(1);
  int64_t cur = 0;
  for (const Item& it : items) {
    if (cur > 0 && cur + it.bytes() > target) shards.emplace_back(), cur = 0;
    shards.back().push_back(&it);
    cur += it.bytes();
  }

  // The mean vector shared by all embedding rows (golden README §7).
  std::vector<float> embed_mean(size_t(c.dim));
  Rng{mix(seed, hash_name("embed.mean"))}.normals(embed_mean.data(), c.dim, 0.0f, 1.0f);

  const int threads = options.threads > 0 ? options.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  int64_t done = 0;
  auto advance = [&](int64_t bytes, const std::string& name) {
    done += bytes;
    if (progress) progress(done, total, name);
  };
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  std::map<std::string, std::string> sorted_map;  // the official index lists names sorted
  for (size_t si = 0; si < shards.size(); ++si) {
    char fname[64];
    std::snprintf(fname, sizeof fname, "model-%05zu-of-%05zu.safetensors", si + 1, shards.size());
    nlohmann::ordered_json header;
    header["__metadata__"] = {{"format", "pt"}};
    uint64_t off = 0;
    for (const Item* it : shards[si]) {
      for (const TensorSpec* s : {it->weight, it->scale}) {
        if (!s) continue;
        header[s->name] = {{"dtype", std::string(dtype_name(s->dtype))}, {"shape", s->shape},
                           {"data_offsets", {off, off + uint64_t(s->nbytes())}}};
        off += uint64_t(s->nbytes());
        sorted_map[s->name] = fname;
      }
    }
    std::string h = header.dump();
    while (h.size() % 8) h += ' ';  // data starts 8-byte aligned, as the Python writer does
    ShardFile file((fs::path(out_dir) / fname).string());
    uint8_t le[8];
    for (int i = 0; i < 8; ++i) le[i] = uint8_t(uint64_t(h.size()) >> (8 * i));
    file.write(le, 8);
    file.write(h.data(), h.size());
    for (const Item* it : shards[si]) write_item(*it, c, seed, embed_mean, threads, file, advance);
    file.close();
  }
  for (const auto& [name, file] : sorted_map) weight_map[name] = file;
  nlohmann::ordered_json index;
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = weight_map;
  auto write_text = [&](const std::string& name, const std::string& text) {
    ShardFile f((fs::path(out_dir) / name).string());
    f.write(text.data(), text.size());
    f.close();
  };
  write_text("model.safetensors.index.json", index.dump(2) + "\n");
  write_text("config.json", config_text);  // last: a directory with config.json is complete
}

}  // namespace dsv4
