#include "apps/cli/answer_printer.h"

#include "core/error.h"

namespace dsv4::cli {

AnswerPrinter::AnswerPrinter(std::FILE* out, bool thinking, bool tty)
    : out_(out), dim_(tty ? "\033[2m" : ""), reset_(tty ? "\033[0m" : ""), parser_(thinking) {}

void AnswerPrinter::content(std::string_view text) {
  if (text.empty()) return;
  if (in_reasoning_) std::fprintf(out_, "%s\n", reset_), in_reasoning_ = false;
  std::fwrite(text.data(), 1, text.size(), out_);
}

void AnswerPrinter::show(const std::vector<ParseEvent>& events) {
  for (const ParseEvent& e : events) {
    switch (e.kind) {
      case ParseEvent::Kind::Reasoning:
        if (!in_reasoning_) std::fprintf(out_, "%s[thinking] ", dim_), in_reasoning_ = true;
        std::fwrite(e.text.data(), 1, e.text.size(), out_);
        break;
      case ParseEvent::Kind::Content: content(e.text); break;
      case ParseEvent::Kind::ToolCallBegin: std::fprintf(out_, "\n[tool call] %s(", e.text.c_str()); break;
      case ParseEvent::Kind::ToolCallArgs: std::fwrite(e.text.data(), 1, e.text.size(), out_); break;
      case ParseEvent::Kind::ToolCallEnd: std::fprintf(out_, ")\n"); break;
    }
  }
}

void AnswerPrinter::pass_on_rest() {
  verbatim_ = true;
  verbatim_text_ = std::string(parser_.unreleased());
  content(verbatim_text_);
}

void AnswerPrinter::feed(std::string_view text) {
  if (verbatim_) {
    verbatim_text_.append(text);
    content(text);
  } else {
    show(parser_.feed(text));
    if (parser_.failed()) pass_on_rest();
  }
  std::fflush(out_);
}

ParsedMessage AnswerPrinter::finish() {
  if (!verbatim_) {
    try {
      show(parser_.finish());
    } catch (const Error&) {
      // Cut off inside markup (the token limit, Ctrl-C) or malformed at its very end.
      pass_on_rest();
    }
  }
  if (in_reasoning_) std::fprintf(out_, "%s", reset_);
  std::fprintf(out_, "\n");
  std::fflush(out_);
  ParsedMessage m = parser_.result();
  m.content += verbatim_text_;
  return m;
}

}  // namespace dsv4::cli
