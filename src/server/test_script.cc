#include "server/test_script.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace dsv4::server {

ScriptedCompletions ScriptedCompletions::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(cat("--test-completions: cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
  const std::string what = cat("--test-completions: ", path);
  if (!j.is_array()) throw Error(what + " is not a JSON array of completions");
  ScriptedCompletions s;
  for (size_t i = 0; i < j.size(); ++i) {
    const nlohmann::json& e = j[i];
    if (e.is_string()) {
      s.left_.push_back(Entry{"", e.get<std::string>()});
    } else if (e.is_object() && e.contains("match") && e["match"].is_string() && e.contains("completion") &&
               e["completion"].is_string()) {
      s.left_.push_back(Entry{e["match"].get<std::string>(), e["completion"].get<std::string>()});
    } else {
      throw Error(cat(what, ": entry ", i, " is neither a string nor {\"match\": string, \"completion\": string}"));
    }
  }
  return s;
}

std::optional<std::string> ScriptedCompletions::next(const std::string& prompt) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = left_.begin(); it != left_.end(); ++it) {
    if (prompt.find(it->match) == std::string::npos) continue;
    std::string s = std::move(it->completion);
    left_.erase(it);
    return s;
  }
  return std::nullopt;
}

}  // namespace dsv4::server
