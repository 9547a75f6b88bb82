// `dsv4 serve --test-hooks --test-completions FILE`: completions scripted for clients that cannot
// add the `dsv4_test_completion` field (coding agents in the end-to-end tests). FILE is a JSON
// array of strings; each request without the field takes the next one (its text is emitted as
// if the model had generated it, followed by EOS); when the list is used up, requests are
// sampled as usual. Testing only, like the field.
#pragma once

#include <deque>
#include <mutex>
#include <optional>
#include <string>

namespace dsv4::server {

class ScriptedCompletions {
 public:
  // Throws Error naming the file and the problem.
  static ScriptedCompletions load(const std::string& path);
  ScriptedCompletions(ScriptedCompletions&& o) noexcept : left_(std::move(o.left_)) {}
  // The next completion, or nullopt once all were served.
  std::optional<std::string> next();

 private:
  ScriptedCompletions() = default;
  std::mutex mu_;
  std::deque<std::string> left_;
};

}  // namespace dsv4::server
