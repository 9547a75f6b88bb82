#include "apps/cli/saved_state.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "engine/state_file.h"

namespace dsv4::cli {

using nlohmann::ordered_json;

SavedConversation load_conversation(Session* session, const std::string& path) {
  const std::string app = load_session(session, path);
  SavedConversation c;
  try {
    const ordered_json j = ordered_json::parse(app);
    c.history = j.at("history");
    c.pending = j.at("pending").get<std::vector<int32_t>>();
    c.has_rng = j.contains("rng");
    if (c.has_rng) c.seed = j.at("seed").get<uint64_t>(), c.rng = j.at("rng").get<uint64_t>();
    if (!c.history.is_array()) throw Error("history is not an array");
  } catch (const std::exception& e) {
    // Checksums passed, so this is a file some other program wrote into the blob.
    throw Error(cat(path, ": not a dsv4 conversation (", e.what(), ")"));
  }
  return c;
}

void save_conversation(const Session& session, const SavedConversation& c, const std::string& path) {
  ordered_json j = {{"history", c.history}, {"pending", c.pending}};
  if (c.has_rng) j["seed"] = c.seed, j["rng"] = c.rng;
  save_session(session, path, j.dump());
}

void check_can_save(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw Error(cat(path, ": cannot create the state file there: ", std::strerror(errno)));
}

std::vector<int32_t> unconsumed(const Session& session, int64_t expected, const GenerateResult& r, int32_t eos) {
  const int64_t missing = expected - session.position();
  DSV4_CHECK(missing >= 0 && missing <= int64_t(r.tokens.size()), "generated ids unaccounted for");
  std::vector<int32_t> v(r.tokens.end() - missing, r.tokens.end());
  if (r.finish == FinishReason::kStop) v.push_back(eos);  // the stop token is never appended
  return v;
}

std::vector<int32_t> close_answer(const std::vector<int32_t>& pending, int32_t eos) {
  std::vector<int32_t> v = pending;
  if (!v.empty() && v.back() != eos) v.push_back(eos);
  return v;
}

}  // namespace dsv4::cli
