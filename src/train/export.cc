#include "train/export.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/error.h"
#include "io/safetensors_writer.h"
#include "kernels/quant.h"
#include "model/inventory.h"
#include "model/synthetic.h"

namespace dsv4::train {

namespace {

uint8_t scale_byte(float s) { return uint8_t(std::bit_cast<uint32_t>(s) >> 23); }  // power of two → E8M0

// FP8 E4M3 with one power-of-two scale per 128×128 block (the encoders of the engine).
void quantize_fp8(const std::vector<float>& v, int64_t rows, int64_t cols, std::vector<uint8_t>* w,
                  std::vector<uint8_t>* scale) {
  const int64_t nrb = (rows + 127) / 128, nkb = (cols + 127) / 128;
  w->assign(size_t(rows * cols), 0);
  scale->assign(size_t(nrb * nkb), 0);
  for (int64_t rb = 0; rb < nrb; ++rb)
    for (int64_t kb = 0; kb < nkb; ++kb) {
      const int64_t r1 = std::min(rows, rb * 128 + 128), k1 = std::min(cols, kb * 128 + 128);
      float amax = 0;
      for (int64_t r = rb * 128; r < r1; ++r)
        for (int64_t k = kb * 128; k < k1; ++k) amax = std::max(amax, std::fabs(v[size_t(r * cols + k)]));
      const float s = kernels::fp8_scale_for(amax);
      (*scale)[size_t(rb * nkb + kb)] = scale_byte(s);
      for (int64_t r = rb * 128; r < r1; ++r)
        for (int64_t k = kb * 128; k < k1; ++k)
          (*w)[size_t(r * cols + k)] = f32_to_e4m3(std::clamp(v[size_t(r * cols + k)] / s, -kE4m3Max, kE4m3Max));
    }
}

// FP4 E2M1 pairs (low nibble = even column) with one scale per 32 columns.
void quantize_fp4(const std::vector<float>& v, int64_t rows, int64_t cols, std::vector<uint8_t>* w,
                  std::vector<uint8_t>* scale) {
  w->assign(size_t(rows * cols / 2), 0);
  scale->assign(size_t(rows * cols / 32), 0);
  for (int64_t b = 0; b < rows * cols / 32; ++b) {
    const float* x = v.data() + b * 32;
    float amax = 0;
    for (int k = 0; k < 32; ++k) amax = std::max(amax, std::fabs(x[k]));
    const float s = kernels::fp4_scale_for(amax);
    (*scale)[size_t(b)] = scale_byte(s);
    for (int k = 0; k < 32; k += 2) {
      const uint8_t lo = f32_to_e2m1(std::clamp(x[k] / s, -kE2m1Max, kE2m1Max));
      const uint8_t hi = f32_to_e2m1(std::clamp(x[k + 1] / s, -kE2m1Max, kE2m1Max));
      (*w)[size_t(b * 16 + k / 2)] = uint8_t(lo | hi << 4);
    }
  }
}

template <class T>
std::vector<uint8_t> bytes_of(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

const std::vector<float>& values_of(const ExportTensors& t, const std::string& name, int64_t numel) {
  auto it = t.values.find(name);
  if (it == t.values.end()) throw Error(cat("export: tensor ", name, " missing"));
  if (int64_t(it->second.size()) != numel)
    throw Error(cat("export: tensor ", name, " has ", it->second.size(), " values, expected ", numel));
  return it->second;
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
  if (!f.flush()) throw Error(cat("cannot write ", path.string()));
}

}  // namespace

void write_checkpoint(const ModelConfig& c, const ExportTensors& t, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(cat("cannot create ", dir, ": ", ec.message()));
  const std::vector<TensorSpec> specs = expected_tensors(c);
  SafetensorsWriter out;
  out.set_metadata("format", "pt");
  for (const TensorSpec& s : specs) {
    const std::string& n = s.name;
    if (s.dtype == DType::F8_E8M0) continue;  // written with its weight
    const std::string scale_name = n.substr(0, n.size() - 7) + ".scale";
    if (s.dtype == DType::I64) {
      auto it = t.ids.find(n);
      if (it == t.ids.end()) throw Error(cat("export: tensor ", n, " missing"));
      out.add(n, DType::I64, s.shape, bytes_of(it->second));
    } else if (s.dtype == DType::F8_E4M3 || s.dtype == DType::I8) {
      const bool fp4 = s.dtype == DType::I8;
      const int64_t rows = s.shape[0], cols = fp4 ? s.shape[1] * 2 : s.shape[1];
      std::vector<uint8_t> w, scale;
      (fp4 ? quantize_fp4 : quantize_fp8)(values_of(t, n, rows * cols), rows, cols, &w, &scale);
      const auto spec = std::find_if(specs.begin(), specs.end(), [&](const TensorSpec& x) { return x.name == scale_name; });
      DSV4_CHECK(spec != specs.end() && spec->nbytes() == int64_t(scale.size()), n, ": scale shape");
      out.add(n, s.dtype, s.shape, std::move(w));
      out.add(scale_name, DType::F8_E8M0, spec->shape, std::move(scale));
    } else if (s.dtype == DType::BF16) {
      const std::vector<float>& v = values_of(t, n, s.numel());
      std::vector<uint16_t> b(v.size());
      for (size_t i = 0; i < v.size(); ++i) b[i] = f32_to_bf16(v[i]);
      out.add(n, DType::BF16, s.shape, bytes_of(b));
    } else {
      out.add(n, DType::F32, s.shape, bytes_of(values_of(t, n, s.numel())));
    }
  }
  const std::filesystem::path d(dir);
  out.write((d / "model.safetensors").string());
  nlohmann::ordered_json index;
  int64_t total = 0;
  for (const TensorSpec& s : specs) total += s.nbytes();
  index["metadata"] = {{"total_size", total}};
  nlohmann::ordered_json map = nlohmann::ordered_json::object();
  std::vector<std::string> names;
  for (const TensorSpec& s : specs) names.push_back(s.name);
  std::sort(names.begin(), names.end());
  for (const std::string& n : names) map[n] = "model.safetensors";
  index["weight_map"] = map;
  write_text(d / "model.safetensors.index.json", index.dump(2) + "\n");
  write_text(d / "config.json", config_json(c));  // last: a directory with config.json is complete
}

}  // namespace dsv4::train
