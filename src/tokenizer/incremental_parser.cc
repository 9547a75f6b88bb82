// IncrementalParser: the streaming side of completion_parser.h.
//
// Text states (reasoning, content) release everything up to the point where a control token
// could still begin; the tool-call block is consumed one DSML element at a time, each element
// only once its closing token has arrived, and a call is reported once its invoke has closed.
// finish() re-parses the whole completion with the one-shot parser, so the final result (or
// error) is exactly the reference's, and emits whatever that result has beyond the events
// already sent.
#include <span>

#include "tokenizer/chat_tokens.h"
#include "tokenizer/completion_parser.h"
#include "tokenizer/completion_parser_detail.h"
#include "tokenizer/utf8.h"

namespace dsv4 {

using namespace chat_tokens;
using namespace completion_detail;

namespace {

constexpr std::size_t kMaxTokenLen = 32;  // longer than every control string

struct Watch {
  const char* token;
  bool stop;  // a legal terminator of the current text; otherwise its presence is an error
};

// Earliest r in [from, size) such that text[r:] is a proper prefix of one of `tokens`.
std::size_t partial_start(std::string_view text, std::size_t from, std::span<const Watch> tokens) {
  const std::size_t lo = text.size() > kMaxTokenLen ? std::max(from, text.size() - kMaxTokenLen) : from;
  for (std::size_t r = lo; r < text.size(); ++r) {
    const std::string_view tail = text.substr(r);
    for (const Watch& w : tokens) {
      const std::string_view t = w.token;
      if (tail.size() < t.size() && t.substr(0, tail.size()) == tail) return r;
    }
  }
  return text.size();
}

}  // namespace

IncrementalParser::IncrementalParser(bool thinking)
    : thinking_(thinking), state_(thinking ? State::Reasoning : State::Content) {}

void IncrementalParser::emit_text(std::vector<ParseEvent>& ev, ParseEvent::Kind kind, std::size_t end, bool final) {
  if (end <= pos_) return;
  // Never split a UTF-8 character between two events (unless the text ends here for good).
  if (!final) end = pos_ + utf8::complete_prefix_len(std::string_view(buf_).substr(pos_, end - pos_));
  if (end <= pos_) return;
  std::string piece = buf_.substr(pos_, end - pos_);
  (kind == ParseEvent::Kind::Reasoning ? result_.reasoning_content : result_.content) += piece;
  if (!ev.empty() && ev.back().kind == kind)
    ev.back().text += piece;
  else
    ev.push_back({kind, std::move(piece)});
  pos_ = released_ = end;
}

void IncrementalParser::close_call(std::vector<ParseEvent>& ev) {
  open_events_.push_back({ParseEvent::Kind::ToolCallArgs, "}"});
  open_events_.push_back({ParseEvent::Kind::ToolCallEnd, {}});
  open_call_.arguments += "}";
  ev.insert(ev.end(), std::make_move_iterator(open_events_.begin()), std::make_move_iterator(open_events_.end()));
  open_events_.clear();
  result_.tool_calls.push_back(std::move(open_call_));
  open_call_ = {};
  released_ = pos_;
  tool_state_ = ToolState::ExpectInvoke;
}

// Reasoning / content: returns true when the state changed (call again).
bool IncrementalParser::step_text(std::vector<ParseEvent>& ev) {
  const bool reasoning = state_ == State::Reasoning;
  const auto kind = reasoning ? ParseEvent::Kind::Reasoning : ParseEvent::Kind::Content;
  static constexpr Watch kReasoningWatch[] = {{kThinkEnd, true}, {kToolCallsStart, true}, {kBos, false},
                                              {kEos, false},     {kThinkStart, false},    {kDsml, false}};
  static constexpr Watch kContentWatch[] = {{kEos, true},         {kToolCallsStart, true}, {kBos, false},
                                            {kThinkStart, false}, {kThinkEnd, false},      {kDsml, false}};
  const std::span<const Watch> watch = reasoning ? std::span<const Watch>(kReasoningWatch) : kContentWatch;
  const std::string_view text = buf_;
  // Earliest complete token; on equal positions the longer one (a stop that contains a
  // forbidden token, like the tool-call opener containing ｜DSML｜, starts earlier anyway).
  std::size_t q = text.size();
  const Watch* hit = nullptr;
  for (const Watch& w : watch) {
    const std::size_t p = text.find(w.token, pos_);
    if (p != std::string_view::npos && p < q) {
      q = p;
      hit = &w;
    }
  }
  const std::size_t r = partial_start(text, pos_, watch);
  if (hit && r < q) hit = nullptr;  // a token starting earlier may still complete
  if (!hit) {
    emit_text(ev, kind, std::min(r, q), false);
    return false;
  }
  if (!hit->stop) {
    emit_text(ev, kind, q, true);
    state_ = State::Failed;
    return false;
  }
  emit_text(ev, kind, q, true);
  pos_ = q + std::char_traits<char>::length(hit->token);
  if (reasoning) {
    state_ = hit->token == kThinkEnd ? State::Content : State::Failed;
    if (state_ == State::Content) released_ = pos_;  // the switch to content stands for </think>
  } else if (hit->token == kEos) {
    state_ = State::Done;
  } else {
    state_ = State::Tools;
    tool_state_ = ToolState::ExpectInvoke;
  }
  scan_from_ = pos_;
  return true;
}

bool IncrementalParser::step_tools(std::vector<ParseEvent>& ev) {
  const std::string_view text = buf_;
  auto find = [&](std::initializer_list<const char*> stops) {
    Found f = read_until_stop(text, std::max(pos_, scan_from_), stops);
    if (f.stop < 0) scan_from_ = text.size() > kMaxTokenLen ? std::max(pos_, text.size() - kMaxTokenLen) : pos_;
    return f;
  };
  auto consume = [&](const Found& f) {
    const std::string_view c = text.substr(pos_, f.pos - pos_);
    pos_ = scan_from_ = f.next;
    return c;
  };
  switch (tool_state_) {
    case ToolState::ExpectInvoke: {
      const Found f = find({kInvokeOpen, kToolCallsEnd});
      if (f.stop < 0) {
        // Only ">\n" may come before the next element: fail as soon as the text rules it out.
        const std::string_view rest = text.substr(pos_), nl = ">\n";
        auto is_prefix = [](std::string_view s, std::string_view of) {
          return s.size() <= of.size() && of.substr(0, s.size()) == s;
        };
        bool ok = is_prefix(rest.substr(0, nl.size()), nl);
        if (ok && rest.size() > nl.size())
          ok = is_prefix(rest.substr(nl.size()), kInvokeOpen) || is_prefix(rest.substr(nl.size()), kToolCallsEnd);
        if (!ok) state_ = State::Failed;
        return false;
      }
      if (consume(f) != ">\n") {
        state_ = State::Failed;
        return false;
      }
      if (f.stop == 1) {
        state_ = State::AfterTools;
      } else {
        tool_state_ = ToolState::Name;
      }
      return true;
    }
    case ToolState::Name: {
      const Found f = find({kParamOpen, kInvokeClose});
      if (f.stop < 0) return false;
      if (!match_tool_name(consume(f), open_call_.name)) {
        state_ = State::Failed;
        return false;
      }
      open_events_ = {{ParseEvent::Kind::ToolCallBegin, open_call_.name}, {ParseEvent::Kind::ToolCallArgs, "{"}};
      open_call_.arguments.assign(1, '{');
      param_names_.clear();
      if (f.stop == 0) {
        tool_state_ = ToolState::Param;
      } else {
        close_call(ev);
      }
      return true;
    }
    case ToolState::Param: {
      const Found f = find({kParamClose});
      if (f.stop < 0) return false;
      std::string name, value;
      bool is_string = false;
      if (!match_parameter(consume(f), name, is_string, value)) {
        state_ = State::Failed;
        return false;
      }
      for (const auto& n : param_names_)
        if (n == name) {
          state_ = State::Failed;
          return false;
        }
      std::string delta;
      if (!param_names_.empty()) delta = ", ";
      delta += argument_entry(name, is_string, value);
      param_names_.push_back(std::move(name));
      open_call_.arguments += delta;
      open_events_.push_back({ParseEvent::Kind::ToolCallArgs, std::move(delta)});
      tool_state_ = ToolState::AfterParam;
      return true;
    }
    case ToolState::AfterParam: {
      const Found f = find({kParamOpen, kInvokeClose});
      if (f.stop < 0) return false;
      if (consume(f) != ">\n") {
        state_ = State::Failed;
        return false;
      }
      if (f.stop == 0) {
        tool_state_ = ToolState::Param;
      } else {
        close_call(ev);
      }
      return true;
    }
  }
  return false;
}

void IncrementalParser::advance(std::vector<ParseEvent>& ev) {
  for (bool again = true; again;) {
    switch (state_) {
      case State::Reasoning:
      case State::Content: again = step_text(ev); break;
      case State::Tools: again = step_tools(ev); break;
      case State::AfterTools: {
        const std::string_view rest = std::string_view(buf_).substr(pos_);
        const std::string_view eos = kEos;
        if (rest.size() >= eos.size() ? rest.substr(0, eos.size()) == eos : eos.substr(0, rest.size()) == rest) {
          if (rest.size() >= eos.size()) {
            pos_ += eos.size();
            state_ = State::Done;
          }
        } else {
          state_ = State::Failed;
        }
        again = state_ == State::Done;
        break;
      }
      case State::Done:
        if (pos_ != buf_.size()) state_ = State::Failed;
        again = false;
        break;
      case State::Failed: again = false; break;
    }
  }
}

std::vector<ParseEvent> IncrementalParser::feed(std::string_view chunk) {
  std::vector<ParseEvent> ev;
  if (finished_) return ev;
  buf_.append(chunk);
  advance(ev);
  return ev;
}

std::vector<ParseEvent> IncrementalParser::finish() {
  std::vector<ParseEvent> ev;
  if (finished_) return ev;
  finished_ = true;
  const ParsedMessage full = parse_completion(buf_, thinking_);  // throws the reference's error
  // Emit what the complete parse has beyond the streamed events (held-back text at the end, a
  // tool call cut short by the end of the stream, which the one-shot parser accepts when it
  // ends between elements). Streamed events are always a prefix.
  auto rest_of = [](const std::string& all, const std::string& sent) {
    return all.compare(0, sent.size(), sent) == 0 ? all.substr(sent.size()) : std::string();
  };
  if (auto r = rest_of(full.reasoning_content, result_.reasoning_content); !r.empty())
    ev.push_back({ParseEvent::Kind::Reasoning, r});
  if (auto c = rest_of(full.content, result_.content); !c.empty()) ev.push_back({ParseEvent::Kind::Content, c});
  for (std::size_t i = 0; i < full.tool_calls.size(); ++i) {
    const ToolCall& t = full.tool_calls[i];
    if (i >= result_.tool_calls.size()) {
      ev.push_back({ParseEvent::Kind::ToolCallBegin, t.name});
      ev.push_back({ParseEvent::Kind::ToolCallArgs, t.arguments});
      ev.push_back({ParseEvent::Kind::ToolCallEnd, {}});
    }
  }
  result_ = full;
  return ev;
}

}  // namespace dsv4
