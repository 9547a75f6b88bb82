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
  if (!j.is_array()) throw Error(cat("--test-completions: ", path, " is not a JSON array of strings"));
  ScriptedCompletions s;
  for (size_t i = 0; i < j.size(); ++i) {
    if (!j[i].is_string()) throw Error(cat("--test-completions: ", path, ": entry ", i, " is not a string"));
    s.left_.push_back(j[i].get<std::string>());
  }
  return s;
}

std::optional<std::string> ScriptedCompletions::next() {
  std::lock_guard<std::mutex> lock(mu_);
  if (left_.empty()) return std::nullopt;
  std::string s = std::move(left_.front());
  left_.pop_front();
  return s;
}

}  // namespace dsv4::server
