// `dsv4 serve --test-hooks --test-completions FILE`: completions scripted for clients that cannot
// add the `dsv4_test_completion` field (coding agents in the end-to-end tests). FILE is a JSON
// array whose entries are a completion text, or {"match": TEXT, "completion": TEXT} for a
// completion only a prompt containing `match` may take (agents that send side requests, such
// as a title, concurrently). Each request without the field takes the first remaining entry
// it may take; its text is emitted as if the model had generated it, followed by EOS. Requests
// that find none are sampled as usual. Testing only, like the field.
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
  // The first remaining completion a request with this prompt text may take, or nullopt.
  std::optional<std::string> next(const std::string& prompt);

 private:
  ScriptedCompletions() = default;
  std::mutex mu_;
  struct Entry {
    std::string match, completion;
  };
  std::deque<Entry> left_;
};

}  // namespace dsv4::server
