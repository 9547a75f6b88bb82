#include "engine/state_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>

#include "core/error.h"
#include "model/synthetic.h"

namespace dsv4 {

namespace {

constexpr char kMagic[8] = {'D', 'S', 'V', '4', 'S', 'T', 'A', 'T'};
constexpr size_t kHeaderBytes = 8 + 4 + 4 + 8 + 4 + 4;

// Section tags (four ASCII characters, little-endian).
constexpr uint32_t tag(const char (&s)[5]) {
  return uint32_t(uint8_t(s[0])) | uint32_t(uint8_t(s[1])) << 8 | uint32_t(uint8_t(s[2])) << 16 |
         uint32_t(uint8_t(s[3])) << 24;
}
constexpr uint32_t kTokens = tag("TOKN"), kLayer = tag("LAYR"), kMtp = tag("MTPS"), kApp = tag("APPD");

std::array<uint32_t, 256> crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;  // reflected Castagnoli
    t[i] = c;
  }
  return t;
}

// Little-endian byte buffer (x86 only, so a plain copy).
struct Writer {
  std::string out;
  template <class T>
  void put(T v) {
    out.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void bytes(std::span<const uint8_t> b) {
    put<uint64_t>(b.size());
    out.append(reinterpret_cast<const char*>(b.data()), b.size());
  }
  template <class T>
  void vec(const std::vector<T>& v) {
    bytes({reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(T)});
  }
};

struct Reader {
  const uint8_t* p;
  size_t left;
  const char* what;  // the section, for messages
  template <class T>
  T get() {
    T v;
    std::memcpy(&v, take(sizeof v), sizeof v);
    return v;
  }
  const uint8_t* take(size_t n) {
    if (n > left) throw Error(cat("section ", what, " is shorter than its contents"));
    const uint8_t* r = p;
    p += n, left -= n;
    return r;
  }
  std::span<const uint8_t> bytes() {
    const uint64_t n = get<uint64_t>();
    return {take(n), size_t(n)};
  }
  template <class T>
  std::vector<T> vec() {
    std::span<const uint8_t> b = bytes();
    if (b.size() % sizeof(T)) throw Error(cat("section ", what, ": an array of ", b.size(), " bytes"));
    std::vector<T> v(b.size() / sizeof(T));
    if (!b.empty()) std::memcpy(v.data(), b.data(), b.size());
    return v;
  }
};

void put_rows(Writer* w, const KvRows& r) {
  w->put<uint32_t>(uint32_t(r.format()));
  w->put<int64_t>(r.dim());
  w->put<uint64_t>(r.row_bytes());
  w->bytes(r.raw());
}

// Fills `r` (laid out by the model) from the file; its layout must be the model's.
void get_rows(Reader* rd, KvRows* r, const char* name) {
  const auto format = rd->get<uint32_t>();
  const auto dim = rd->get<int64_t>();
  const auto row_bytes = rd->get<uint64_t>();
  if (format != uint32_t(r->format()) || dim != r->dim() || row_bytes != r->row_bytes())
    throw Error(cat("its ", name, " rows are laid out differently from this model's"));
  std::span<const uint8_t> b = rd->bytes();
  if (row_bytes ? b.size() % row_bytes != 0 : !b.empty()) throw Error(cat("its ", name, " rows are not whole rows"));
  r->assign_raw(b);
}

void put_compressor(Writer* w, const CompressorState& c) {
  w->put<int64_t>(c.width);
  w->put<uint8_t>(c.has_prev);
  w->vec(c.cur_kv), w->vec(c.cur_score), w->vec(c.prev_kv), w->vec(c.prev_score);
}

void get_compressor(Reader* rd, CompressorState* c) {
  if (rd->get<int64_t>() != c->width) throw Error("its compressor state is laid out differently from this model's");
  c->has_prev = rd->get<uint8_t>() != 0;
  c->cur_kv = rd->vec<float>(), c->cur_score = rd->vec<float>();
  c->prev_kv = rd->vec<float>(), c->prev_score = rd->vec<float>();
  const size_t w = size_t(c->width);
  if (c->cur_kv.size() != c->cur_score.size() || c->prev_kv.size() != c->prev_score.size() ||
      (w && (c->cur_kv.size() % w || c->prev_kv.size() % w)))
    throw Error("its compressor state has inconsistent sizes");
}

void put_layer(Writer* w, const LayerState& l) {
  w->put<int64_t>(l.head_dim), w->put<int32_t>(l.window_size), w->put<int64_t>(l.index_head_dim);
  put_rows(w, l.window_kv), put_rows(w, l.compressed_kv), put_compressor(w, l.compressor);
  put_rows(w, l.index_keys), put_compressor(w, l.index_compressor);
}

void get_layer(Reader* rd, LayerState* l) {
  if (rd->get<int64_t>() != l->head_dim || rd->get<int32_t>() != l->window_size ||
      rd->get<int64_t>() != l->index_head_dim)
    throw Error("its attention dimensions differ from this model's");
  get_rows(rd, &l->window_kv, "window KV"), get_rows(rd, &l->compressed_kv, "compressed KV");
  if (l->window_kv.size() != l->window_size) throw Error("its window ring has the wrong length");
  get_compressor(rd, &l->compressor);
  get_rows(rd, &l->index_keys, "indexer key"), get_compressor(rd, &l->index_compressor);
}

// The test hook's budget: bytes the writer may still write before "crashing" (−1: no hook).
long long crash_budget() {
  const char* v = std::getenv("DSV4_STATE_FILE_CRASH_AFTER");
  return v && *v ? std::atoll(v) : -1;
}

void write_all(int fd, const std::string& data, const std::string& path) {
  long long budget = crash_budget();
  size_t done = 0;
  while (done < data.size()) {
    size_t n = std::min<size_t>(data.size() - done, 1 << 20);
    if (budget >= 0 && (long long)n > budget) n = size_t(budget);
    const ssize_t w = n ? ::write(fd, data.data() + done, n) : 0;
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) throw Error(cat(path, ": cannot write: ", std::strerror(errno)));
    done += size_t(w);
    if (budget >= 0 && (budget -= w) == 0) ::_exit(86);  // simulated crash (test hook)
  }
}

std::string file_image(const Session& s, const std::string& app, uint64_t fingerprint);

}  // namespace

uint32_t crc32c(std::span<const uint8_t> bytes, uint32_t crc) {
  static const std::array<uint32_t, 256> table = crc_table();
  crc = ~crc;
  for (uint8_t b : bytes) crc = table[(crc ^ b) & 0xff] ^ (crc >> 8);
  return ~crc;
}

uint64_t model_fingerprint(const Model& model) {
  // FNV-1a over the config's JSON and the tensor table with each tensor's edge bytes.
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&h](const void* p, size_t n) {
    for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const uint8_t*>(p)[i]) * 0x100000001b3ull;
  };
  const std::string config = config_json(model.config());
  mix(config.data(), config.size());
  for (const auto& [name, t] : model.tensors().tensors()) {
    mix(name.data(), name.size() + 1);
    mix(&t.dtype, sizeof t.dtype);
    mix(t.shape.data(), t.shape.size() * sizeof(int64_t));
    const size_t edge = std::min<size_t>(t.nbytes, 32);
    mix(t.data, edge);
    mix(t.data + t.nbytes - edge, edge);
  }
  return h;
}

// Reaches into Session (a friend): the state files are the only code that needs all of it.
struct SessionFileAccess {
  static void write_sections(const Session& s, const std::string& app, std::vector<std::pair<uint32_t, std::string>>* out) {
    Writer t;
    t.vec(s.tokens_);
    out->emplace_back(kTokens, std::move(t.out));
    for (size_t i = 0; i < s.state_.layers.size(); ++i) {
      Writer w;
      w.put<uint32_t>(uint32_t(i));
      put_layer(&w, s.state_.layers[i]);
      out->emplace_back(kLayer, std::move(w.out));
    }
    Writer m;
    m.put<uint8_t>(s.options_.keep_mtp);
    if (s.options_.keep_mtp) {
      m.put<int64_t>(s.mtp_.pos);
      put_layer(&m, s.mtp_.layer);
      m.vec(s.unpaired_hidden_);
    }
    out->emplace_back(kMtp, std::move(m.out));
    out->emplace_back(kApp, app);
  }

  // Parses the sections into a copy of the session's state and swaps it in only when all of it
  // is consistent.
  static std::string read_sections(Session* s, std::span<const std::pair<uint32_t, std::span<const uint8_t>>> secs) {
    const Model& model = s->model_;
    const size_t n_layers = size_t(model.config().n_layers);
    if (secs.size() != n_layers + 3) throw Error(cat("it has ", secs.size(), " sections, this model needs ", n_layers + 3));
    auto expect = [&](size_t i, uint32_t t, const char* name) {
      if (secs[i].first != t) throw Error(cat("section ", i, " is not the ", name, " section"));
      return Reader{secs[i].second.data(), secs[i].second.size(), name};
    };
    Reader tr = expect(0, kTokens, "token");
    std::vector<int32_t> tokens = tr.vec<int32_t>();
    for (int32_t t : tokens)
      if (t < 0 || t >= model.config().vocab_size) throw Error(cat("it holds token id ", t, " outside the vocabulary"));
    if (int64_t(tokens.size()) > s->max_context_)
      throw Error(cat("its ", tokens.size(), " tokens exceed the context limit of ", s->max_context_));
    SequenceState state = model.new_sequence();
    state.pos = int64_t(tokens.size());
    for (size_t i = 0; i < n_layers; ++i) {
      Reader r = expect(1 + i, kLayer, "layer");
      if (r.get<uint32_t>() != i) throw Error(cat("layer section ", i, " is out of order"));
      get_layer(&r, &state.layers[i]);
    }
    MtpState mtp = model.new_mtp_state();
    std::vector<float> unpaired;
    Reader mr = expect(1 + n_layers, kMtp, "MTP");
    const bool has_mtp = mr.get<uint8_t>() != 0;
    if (s->options_.keep_mtp) {
      if (!has_mtp) throw Error("it was saved without MTP state, which speculative decoding needs");
      mtp.pos = mr.get<int64_t>();
      get_layer(&mr, &mtp.layer);
      unpaired = mr.vec<float>();
      const size_t stride = size_t(model.config().hc_mult * model.config().dim);
      if (mtp.pos < 0 || mtp.pos > state.pos || unpaired.size() != size_t(state.pos - mtp.pos) * stride)
        throw Error("its MTP state does not match its position");
    }
    Reader ar = expect(2 + n_layers, kApp, "application");
    std::string app(reinterpret_cast<const char*>(ar.p), ar.left);

    s->tokens_ = std::move(tokens);
    s->state_ = std::move(state);
    s->mtp_ = std::move(mtp);
    s->unpaired_hidden_ = std::move(unpaired);
    s->out_ = {}, s->mtp_out_ = {}, s->checkpoint_ = {};
    s->verify_tokens_.clear();
    return app;
  }
};

namespace {

std::string file_image(const Session& s, const std::string& app, uint64_t fingerprint) {
  std::vector<std::pair<uint32_t, std::string>> secs;
  SessionFileAccess::write_sections(s, app, &secs);
  Writer w;
  w.out.append(kMagic, sizeof kMagic);
  w.put<uint32_t>(kStateFileVersion);
  w.put<uint32_t>(uint32_t(s.model().numerics()));
  w.put<uint64_t>(fingerprint);
  w.put<uint32_t>(uint32_t(secs.size()));
  w.put<uint32_t>(crc32c({reinterpret_cast<const uint8_t*>(w.out.data()), w.out.size()}));
  for (const auto& [t, payload] : secs) {
    const size_t start = w.out.size();
    w.put<uint32_t>(t);
    w.put<uint64_t>(payload.size());
    w.out += payload;
    w.put<uint32_t>(crc32c({reinterpret_cast<const uint8_t*>(w.out.data()) + start, w.out.size() - start}));
  }
  return w.out;
}

const char* numerics_name(uint32_t n) { return n == uint32_t(Numerics::kPlain) ? "plain" : "reference"; }

}  // namespace

void save_session(const Session& session, const std::string& path, const std::string& app_data) {
  const std::string image = file_image(session, app_data, model_fingerprint(session.model()));
  const std::string tmp = cat(path, ".tmp.", ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(cat(path, ": cannot create the state file: ", std::strerror(errno)));
  try {
    write_all(fd, image, tmp);
    if (::fsync(fd) != 0) throw Error(cat(tmp, ": fsync failed: ", std::strerror(errno)));
  } catch (...) {
    ::close(fd), ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Error(cat(path, ": cannot replace the state file: ", std::strerror(err)));
  }
  // The rename itself reaches the disk with the directory's fsync.
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) ::fsync(dfd), ::close(dfd);
}

namespace {

// Checks a file's header against `model`; returns its section count.
uint32_t check_header(const Model& model, const uint8_t* b, size_t size, const std::function<Error(std::string)>& fail) {
  if (size < kHeaderBytes || std::memcmp(b, kMagic, sizeof kMagic) != 0)
    throw fail(size < sizeof kMagic ? "not a dsv4 state file (too short)" : "not a dsv4 state file");
  Reader h{b + sizeof kMagic, kHeaderBytes - sizeof kMagic, "header"};
  const auto version = h.get<uint32_t>(), numerics = h.get<uint32_t>();
  const auto fingerprint = h.get<uint64_t>();
  const auto n_sections = h.get<uint32_t>(), header_crc = h.get<uint32_t>();
  if (crc32c({b, kHeaderBytes - 4}) != header_crc) throw fail("checksum mismatch in the header (corrupted file)");
  if (version != kStateFileVersion)
    throw fail(cat("state file format version ", version, "; this build reads version ", kStateFileVersion));
  if (numerics != uint32_t(model.numerics()))
    throw fail(cat("saved in ", numerics_name(numerics), " numerics, but the model runs in ",
                   numerics_name(uint32_t(model.numerics())), " numerics"));
  if (fingerprint != model_fingerprint(model)) throw fail("saved with a different model (the model fingerprint does not match)");
  return n_sections;
}

}  // namespace

std::vector<int32_t> read_state_tokens(const Model& model, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(cat(path, ": cannot open the state file: ", std::strerror(errno)));
  auto fail = [&](const std::string& why) { return Error(cat(path, ": ", why)); };
  std::string head(kHeaderBytes + 12, '\0');
  in.read(head.data(), std::streamsize(head.size()));
  head.resize(size_t(in.gcount()));
  const auto* b = reinterpret_cast<const uint8_t*>(head.data());
  if (check_header(model, b, head.size(), fail) == 0 || head.size() < kHeaderBytes + 12)
    throw fail("truncated (the token section is missing)");
  Reader r{b + kHeaderBytes, 12, "token"};
  if (r.get<uint32_t>() != kTokens) throw fail("section 0 is not the token section");
  const uint64_t len = r.get<uint64_t>();
  if (len > (uint64_t(1) << 40)) throw fail("truncated (section 0 is cut off)");
  std::string rest(size_t(len) + 4, '\0');
  in.read(rest.data(), std::streamsize(rest.size()));
  if (size_t(in.gcount()) != rest.size()) throw fail("truncated (section 0 is cut off)");
  uint32_t crc = crc32c({b + kHeaderBytes, 12});
  crc = crc32c({reinterpret_cast<const uint8_t*>(rest.data()), size_t(len)}, crc);
  uint32_t stored;
  std::memcpy(&stored, rest.data() + len, 4);
  if (crc != stored) throw fail("checksum mismatch in section 0 (corrupted file)");
  Reader t{reinterpret_cast<const uint8_t*>(rest.data()), size_t(len), "token"};
  try {
    std::vector<int32_t> tokens = t.vec<int32_t>();
    for (int32_t id : tokens)
      if (id < 0 || id >= model.config().vocab_size) throw Error(cat("it holds token id ", id, " outside the vocabulary"));
    return tokens;
  } catch (const Error& e) {
    throw fail(e.what());
  }
}

std::string load_session(Session* session, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(cat(path, ": cannot open the state file: ", std::strerror(errno)));
  const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto* b = reinterpret_cast<const uint8_t*>(data.data());
  auto fail = [&](const std::string& why) { return Error(cat(path, ": ", why)); };
  const uint32_t n_sections = check_header(session->model(), b, data.size(), fail);
  std::vector<std::pair<uint32_t, std::span<const uint8_t>>> secs;
  size_t off = kHeaderBytes;
  for (uint32_t i = 0; i < n_sections; ++i) {
    Reader r{b + off, data.size() - off, "?"};
    if (r.left < 12) throw fail(cat("truncated (section ", i, " of ", n_sections, " is missing)"));
    const auto t = r.get<uint32_t>();
    const auto len = r.get<uint64_t>();
    if (len > r.left || r.left - len < 4) throw fail(cat("truncated (section ", i, " of ", n_sections, " is cut off)"));
    std::span<const uint8_t> payload(r.take(len), size_t(len));
    const auto crc = r.get<uint32_t>();
    if (crc32c({b + off, 12 + size_t(len)}) != crc) throw fail(cat("checksum mismatch in section ", i, " (corrupted file)"));
    secs.emplace_back(t, payload);
    off = data.size() - r.left;
  }
  if (off != data.size()) throw fail(cat(data.size() - off, " bytes of garbage after the last section"));
  try {
    return SessionFileAccess::read_sections(session, secs);
  } catch (const Error& e) {
    throw fail(cat("does not fit this session: ", e.what()));
  }
}

}  // namespace dsv4
