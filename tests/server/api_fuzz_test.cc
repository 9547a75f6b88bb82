// A seeded fuzzer for HTTP request body → prompt: valid OpenAI chat / completions and Anthropic
// messages bodies, mutated (type swaps, deletions, duplications, fields moved elsewhere, deep
// nesting, huge numbers and arrays, invalid UTF-8, random bytes, truncation) and mapped through
// the endpoint's parser. Every input must map to a prompt that fits the context or throw
// ApiError with a 4xx: another exception type would be a 500, a crash fails the run (ASan
// build in CI). Accepted chat / messages requests also get a random completion through the
// response builders, whose streamed text must equal the non-streamed text.
#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "api_fixture.h"

namespace dsv4::server {
namespace {

using test::Endpoint;
using Rng = std::mt19937_64;

struct Seed {
  Endpoint endpoint;
  const char* body;
};

const Seed kCorpus[] = {
    {Endpoint::kChat, R"({"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],
      "max_tokens":7,"temperature":0.5,"top_p":0.9,"seed":3,"stop":["END"],"stream":true,
      "stream_options":{"include_usage":false},"logprobs":true,"top_logprobs":2})"},
    {Endpoint::kChat, R"({"messages":[{"role":"user","content":"Weather in Paris?"},{"role":"assistant","content":null,
      "reasoning_content":"need tool","tool_calls":[{"id":"c1","type":"function","function":{"name":"get_weather",
      "arguments":"{\"city\": \"Paris\", \"days\": [1, 2]}"}}]},{"role":"tool","tool_call_id":"c1","content":"Sunny"},
      {"role":"user","content":[{"type":"text","text":"And tomorrow?"}]}],"tools":[{"type":"function","function":{
      "name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"},
      "days":{"type":"array","items":{"type":"integer"}}},"required":["city"]}}}],"tool_choice":"auto",
      "thinking":{"type":"enabled"},"reasoning_effort":"max"})"},
    {Endpoint::kChat, R"({"messages":[{"role":"developer","content":"Answer in JSON."},{"role":"user","content":"List"}],
      "response_format":{"type":"json_schema","json_schema":{"name":"l","schema":{"type":"object","properties":{
      "items":{"type":"array"}}}}},"chat_template_kwargs":{"enable_thinking":false},"top_k":5,"min_p":0.1,
      "presence_penalty":0.5,"frequency_penalty":-0.5,"repetition_penalty":1.1,"max_completion_tokens":9,
      "tool_choice":{"type":"function","function":{"name":"f"}},"tools":[{"type":"function","function":{"name":"f"}}]})"},
    {Endpoint::kCompletions, R"({"model":"m","prompt":"Once upon a time","max_tokens":5,"stop":"\n","logprobs":2,
      "temperature":1.0,"stream":true})"},
    {Endpoint::kCompletions, R"({"prompt":[[1,2,3,4]],"max_tokens":3,"n":1,"best_of":1,"echo":false})"},
    {Endpoint::kMessages, R"({"model":"m","max_tokens":5,"system":[{"type":"text","text":"S","cache_control":{
      "type":"ephemeral"}}],"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"thinking",
      "thinking":"t","signature":"x"},{"type":"text","text":"calling"},{"type":"tool_use","id":"t1","name":"f",
      "input":{"a":[1,{"b":null}]}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1",
      "content":[{"type":"text","text":"res"}],"is_error":true},{"type":"text","text":"more"}]}],"tools":[{"name":"f",
      "description":"d","input_schema":{"type":"object","properties":{"a":{"type":"array"}}}}],
      "tool_choice":{"type":"auto"},"thinking":{"type":"enabled","budget_tokens":100},"stop_sequences":["END"],
      "temperature":0.5,"top_k":5,"top_p":0.9,"stream":true,"metadata":{"user_id":"u"}})"},
    {Endpoint::kCountTokens, R"({"model":"m","system":"S","messages":[{"role":"user","content":"How many tokens?"}],
      "tools":[{"name":"f","input_schema":{"type":"object"}}]})"},
};

// Field names of both APIs: mutations put them where they do not belong.
const char* kKeys[] = {"messages", "role", "content", "tools", "function", "name", "parameters", "arguments",
                       "tool_calls", "tool_call_id", "type", "text", "input", "input_schema", "tool_use_id",
                       "system", "max_tokens", "max_completion_tokens", "prompt", "stop", "stop_sequences",
                       "temperature", "top_p", "top_k", "seed", "n", "stream", "stream_options", "include_usage",
                       "thinking", "budget_tokens", "reasoning_effort", "reasoning_content", "chat_template_kwargs",
                       "response_format", "json_schema", "tool_choice", "logprobs", "top_logprobs", "is_error",
                       "id", "description", "dsv4_test_completion", "echo", "suffix", "best_of", "task", "wo_eos"};

// Text spliced in after dumping (a Json tree of it would itself be deep or not representable).
const char* kRawValues[] = {"1e400", "-1e400", "18446744073709551616", "9223372036854775808", "-9223372036854775809",
                            "1e-400", "-0", "0.0", "1E+2", "123456789012345678901234567890"};

std::string nested(size_t depth) {
  std::string s;
  for (size_t i = 0; i < depth; ++i) s += i % 3 == 2 ? "{\"a\":" : "[";
  s += "0";
  for (size_t i = depth; i-- > 0;) s += i % 3 == 2 ? "}" : "]";
  return s;
}

class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}
  size_t below(size_t n) { return n ? size_t(rng_() % n) : 0; }
  bool chance(int percent) { return below(100) < size_t(percent); }

  std::string mutate(Json body) {
    splices_.clear();
    const size_t n = 1 + below(4);
    for (size_t i = 0; i < n; ++i) mutate_tree(body);
    std::string text = body.dump();
    for (const auto& [mark, raw] : splices_) {
      const std::string quoted = "\"" + mark + "\"";
      for (size_t at; (at = text.find(quoted)) != std::string::npos;) text.replace(at, quoted.size(), raw);
    }
    if (chance(25)) mutate_bytes(text);
    return text;
  }

 private:
  void nodes(Json& j, const Json::json_pointer& at, std::vector<Json::json_pointer>& out, int depth) {
    out.push_back(at);
    if (depth > 40) return;
    if (j.is_object())
      for (auto& [k, v] : j.items()) nodes(v, at / k, out, depth + 1);
    else if (j.is_array())
      for (size_t i = 0; i < j.size(); ++i) nodes(j[i], at / i, out, depth + 1);
  }

  // A placeholder string, replaced by `raw` text after dumping.
  Json splice(std::string raw) {
    std::string mark = cat("@@splice", splices_.size(), "@@");
    splices_.emplace_back(mark, std::move(raw));
    return mark;
  }

  Json random_value(const Json& old) {
    switch (below(16)) {
      case 0: return nullptr;
      case 1: return chance(50);
      case 2: return int64_t(below(5)) - 2;
      case 3: return 0.5;
      case 4: return "";
      case 5: return std::string(1 + below(3000), "ax <|{}\"\\\n"[below(10)]);
      case 6: return Json::array();
      case 7: return Json::object();
      case 8: return Json::array({old});
      case 9: return Json{{kKeys[below(std::size(kKeys))], old}};
      case 10: return splice(nested(chance(50) ? 100 + below(60) : 1000 + below(200000)));
      case 11: return splice(kRawValues[below(std::size(kRawValues))]);
      case 12: return uint64_t(-1) - below(3);
      case 13: return INT64_MIN;
      case 14: {  // a huge array of copies of something small
        std::string s = "[";
        const std::string item = old.is_structured() ? "0" : old.dump();
        const size_t n = chance(98) ? 100 + below(3000) : 1000000;
        for (size_t i = 0; i < n; ++i) s += (i ? "," : "") + item;
        return splice(s + "]");
      }
      default: return std::string(kKeys[below(std::size(kKeys))]);
    }
  }

  void mutate_tree(Json& body) {
    std::vector<Json::json_pointer> all;
    nodes(body, Json::json_pointer(), all, 0);
    const Json::json_pointer at = all[below(all.size())];
    Json& node = body[at];
    switch (below(6)) {
      case 0:
      case 1: node = random_value(node); break;  // type swap / replacement
      case 2:                                    // deletion
        if (!at.empty()) {
          Json& parent = body[at.parent_pointer()];
          if (parent.is_object()) parent.erase(at.back());
          else if (parent.is_array() && !parent.empty()) parent.erase(parent.begin() + long(below(parent.size())));
        }
        break;
      case 3:  // duplication
        if (node.is_array() && !node.empty()) {
          const Json copy = node[below(node.size())];
          for (size_t k = 1 + below(chance(10) ? 3000 : 3); k > 0; --k) node.insert(node.begin() + long(below(node.size() + 1)), copy);
        } else if (node.is_object() && !node.empty()) {
          auto it = node.begin();
          std::advance(it, long(below(node.size())));
          const Json copy = it.value();
          node[kKeys[below(std::size(kKeys))]] = copy;
        }
        break;
      default:  // a known field, anywhere
        if (node.is_object()) node[kKeys[below(std::size(kKeys))]] = random_value(Json());
        else node = random_value(node);
        break;
    }
  }

  void mutate_bytes(std::string& t) {
    static const char* kBad[] = {"\xff", "\xc3", "\xe4\xbd", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xc0\xaf", "\x00",
                                 "\\ud800", "\\udc00x", "\\u00", "\\x"};
    const size_t at = below(t.size() + 1);
    switch (below(4)) {
      case 0: {
        const char* bad = kBad[below(std::size(kBad))];
        t.insert(at, bad, std::max<size_t>(1, std::strlen(bad)));  // "\x00" is one byte
        break;
      }
      case 1:
        for (size_t k = 1 + below(4); k > 0 && !t.empty(); --k) t[below(t.size())] = char(below(256));
        break;
      case 2: t.resize(at); break;
      default: t.insert(at, std::string(1 + below(8), char(below(256)))); break;
    }
  }

  Rng rng_;
  std::vector<std::pair<std::string, std::string>> splices_;
};

// Completion text from markup fragments, as a random-weight model might produce it.
std::string random_completion(Mutator& m) {
  static const char* kFrags[] = {"text", " ", "\n", "\n\n", ">\n", "<", "</think>", "<think>", "<｜end▁of▁sentence｜>",
                                 "\n\n<｜DSML｜tool_calls>\n", "</｜DSML｜tool_calls>", "<｜DSML｜invoke name=\"f\">\n",
                                 "</｜DSML｜invoke>\n", "<｜DSML｜parameter name=\"a\" string=\"true\">",
                                 "<｜DSML｜parameter name=\"b\" string=\"false\">[[1]]", "</｜DSML｜parameter>\n",
                                 "｜DSML｜", "\xE4\xBD\xA0", "\xF0\x9F\x98\x80"};
  std::string s;
  for (size_t n = m.below(12); n > 0; --n) s += kFrags[m.below(std::size(kFrags))];
  return s;
}

std::string show(const std::string& s) { return Json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

void check_responses(Mutator& m, const ChatRequest& req, const ApiConfig& cfg) {
  const Tokenizer& tok = test::shared_tokenizer();
  const std::string text = random_completion(m);
  SCOPED_TRACE("completion " + show(text));
  std::vector<JobEvent> whole = {JobEvent{text, {}}}, chunks;
  for (size_t i = 0; i < text.size();) {
    const size_t n = 1 + m.below(7);
    chunks.push_back(JobEvent{text.substr(i, n), {}});
    i += n;
  }
  JobOutcome o;
  const Json r = chat_response("id", cfg, req, whole, o, tok);
  ChatStream cs("id", cfg, req, tok);
  std::string sse = cs.start();
  for (const JobEvent& e : chunks) sse += cs.on_event(e);
  sse += cs.finish(o);
  // Same reasoning and content whatever the chunking (tool calls: splitter_test.cc).
  std::string reasoning, content;
  for (size_t at = 0; (at = sse.find("data: {", at)) != std::string::npos; ++at) {
    const Json chunk = Json::parse(sse.substr(at + 6, sse.find("\n\n", at) - at - 6));
    if (chunk["choices"].empty()) continue;
    reasoning += chunk["choices"][0]["delta"].value("reasoning_content", "");
    content += chunk["choices"][0]["delta"].value("content", "");
  }
  const Json& msg = r["choices"][0]["message"];
  EXPECT_EQ(reasoning, msg.value("reasoning_content", ""));
  EXPECT_EQ(content, msg["content"].is_string() ? msg["content"].get<std::string>() : "");
  MessagesRequest mr;
  mr.thinking = req.thinking;
  messages_response("id", cfg, mr, whole, o);
  MessagesStream ms("id", cfg, mr);
  std::string ev = ms.start(1, 0);
  for (const JobEvent& e : chunks) ev += ms.on_event(e);
  ev += ms.finish(o);
  EXPECT_NE(ev.find("message_stop"), std::string::npos);
}

TEST(ApiFuzz, EveryBodyMapsOrIsRefusedWithAnApiError) {
  DSV4_REQUIRE_SHARED();
  ApiConfig cfg;
  cfg.max_context = 4096;
  // Iterations: ~15 s in the ASan build, ~3 s in release.
  constexpr int kIterations = 3000;
  constexpr size_t kMaxBody = 8 << 20;  // dsv4 serve's default --max-body-mb
  Mutator m(20261206);
  int accepted = 0, refused = 0;
  for (int it = 0; it < kIterations; ++it) {
    const Seed& seed = kCorpus[m.below(std::size(kCorpus))];
    const std::string body = m.mutate(Json::parse(seed.body));
    if (body.size() > kMaxBody) continue;  // the server refuses it unread (413)
    cfg.test_hooks = m.chance(20);
    SCOPED_TRACE(cat("iteration ", it, " ", test::endpoint_name(seed.endpoint), " ", show(body.substr(0, 2000))));
    try {
      const test::Outcome o = test::map_body(seed.endpoint, body, cfg);
      if (!o.accepted) {
        ++refused;
        EXPECT_GE(o.status, 400);
        EXPECT_LT(o.status, 500);
        EXPECT_FALSE(o.message.empty());
        continue;
      }
      ++accepted;
      EXPECT_FALSE(o.gen.prompt.empty());
      if (seed.endpoint != Endpoint::kCountTokens) {
        EXPECT_LT(int64_t(o.gen.prompt.size()), cfg.max_context);
        EXPECT_GE(o.gen.max_tokens, 1);
        EXPECT_LE(int64_t(o.gen.prompt.size()) + o.gen.max_tokens, cfg.max_context);
      }
      if (seed.endpoint == Endpoint::kChat) check_responses(m, parse_chat_request(parse_body(body), test::shared_tokenizer(), cfg), cfg);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not an ApiError: " << e.what();
    }
  }
  std::printf("%d mapped, %d refused with a 4xx\n", accepted, refused);
  EXPECT_GT(accepted, kIterations / 20);  // the mutations leave some bodies valid
  EXPECT_GT(refused, kIterations / 2);
}

}  // namespace
}  // namespace dsv4::server
