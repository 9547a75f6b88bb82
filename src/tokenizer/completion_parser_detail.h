// Internals shared by the one-shot and the incremental completion parser (not public API).
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

namespace dsv4::completion_detail {

// The reference's _read_until_stop: the earliest occurrence of any stop from `index` (ties go
// to the earlier stop in the list). Not found: pos = next = text.size(), stop = -1.
struct Found {
  std::size_t pos;   // where the stop starts (end of the content)
  std::size_t next;  // just after the stop
  int stop;          // index into `stops`, or -1
};
Found read_until_stop(std::string_view text, std::size_t index, std::initializer_list<const char*> stops);

bool match_tool_name(std::string_view content, std::string& name);
bool match_parameter(std::string_view content, std::string& name, bool& is_string, std::string& value);
// `"name": value` as it appears inside the arguments JSON.
std::string argument_entry(const std::string& name, bool is_string, const std::string& value);
[[noreturn]] void fail(const char* type, std::string message);

}  // namespace dsv4::completion_detail
