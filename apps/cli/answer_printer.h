// Shows a streamed completion on a terminal / pipe for `dsv4 run` and `dsv4 chat`: reasoning
// dimmed (on a terminal), content plain, tool calls one line each.
//
// Whatever is not valid V4 markup (a stray special token: the synthetic model's random weights can
// emit any token) is passed on verbatim as content from the first byte the parser could not
// account for: nothing generated is dropped or shown twice.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/completion_parser.h"

namespace dsv4::cli {

class AnswerPrinter {
 public:
  // `out` receives the text; `tty` adds the dim / reset escapes around reasoning.
  AnswerPrinter(std::FILE* out, bool thinking, bool tty);

  // The next piece of decoded text.
  void feed(std::string_view text);
  // Ends the answer (prints the held-back rest and a newline) and returns the message: the
  // parsed one, or — for output that is not valid markup — what was shown, with the verbatim
  // rest in its content.
  ParsedMessage finish();

 private:
  void show(const std::vector<ParseEvent>& events);
  void content(std::string_view text);
  void pass_on_rest();  // the parser gave up: everything it has not reported, verbatim

  std::FILE* out_;
  const char* dim_;
  const char* reset_;
  IncrementalParser parser_;
  bool verbatim_ = false;  // the parser failed: text goes out as it comes
  std::string verbatim_text_;
  bool in_reasoning_ = false;
};

}  // namespace dsv4::cli
