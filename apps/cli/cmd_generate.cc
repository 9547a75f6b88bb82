// `dsv4 run` (one prompt, streamed answer) and `dsv4 chat` (interactive, multi-turn).
//
// Both hold a Model, a Tokenizer and a Session: text → chat-format ids → generate → streamed
// UTF-8 → incremental completion parser, which separates reasoning from content and tool calls.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "apps/cli/answer_printer.h"
#include "apps/cli/checks.h"
#include "apps/cli/commands.h"
#include "apps/cli/demo_model.h"
#include "apps/cli/load_flags.h"
#include "core/error.h"
#include "engine/generate.h"
#include "tokenizer/chat.h"
#include "tokenizer/completion_parser.h"
#include "tokenizer/stream_decoder.h"
#include "tokenizer/tokenizer.h"

namespace dsv4::cli {

namespace {

using nlohmann::ordered_json;

std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) { g_interrupted = true; }

struct GenFlags {
  std::string model = "demo";
  int64_t max_tokens = 256;
  float temperature = 0.0f, top_p = 1.0f, min_p = 0.0f;
  int top_k = 0;
  uint64_t seed = 0;
  bool think = false, no_think = false, speculative = false;
  std::string effort;
  int64_t ctx = 0;
  LoadFlags load;
};

void add_gen_flags(CLI::App* c, GenFlags& f) {
  c->add_option("--model", f.model, "Checkpoint directory, or 'demo' (a tiny random-weight model)");
  c->add_option("-n,--max-tokens", f.max_tokens, "Maximum tokens to generate")->check(integer_at_least(1));
  c->add_option("--temp", f.temperature, "Sampling temperature (0 = greedy)")->check(number_in(0.0, 100.0));
  c->add_option("--top-p", f.top_p, "Nucleus sampling threshold")->check(number_in(0.0, 1.0));
  c->add_option("--top-k", f.top_k, "Keep the k most likely tokens (0 = all)")->check(integer_at_least(0));
  c->add_option("--min-p", f.min_p, "Drop tokens below min-p × the top probability")->check(number_in(0.0, 1.0));
  c->add_option("--seed", f.seed, "Random seed (same seed + same input → same output)")->check(integer_at_least(0));
  auto* think = c->add_flag("--think", f.think, "Thinking mode: the model reasons before answering");
  c->add_flag("--no-think", f.no_think, "Chat mode without reasoning (default)")->excludes(think);
  c->add_option("--effort", f.effort, "Reasoning effort in thinking mode")->check(CLI::IsMember({"high", "max"}));
  c->add_flag("--speculative", f.speculative, "MTP speculative decoding (exact; off by default)");
  c->add_option("--ctx", f.ctx, "Context limit in tokens (default: the model's)")->check(integer_at_least(1));
  add_load_flags(c, f.load);
}

struct Loaded {
  std::unique_ptr<Model> model;
  Tokenizer tok;
};

Loaded load(const GenFlags& f) {
  const std::string dir = resolve_model_dir(f.model);
  // For a person waiting at a terminal; to a pipe an error stays the only line.
  if (isatty(STDERR_FILENO)) std::fprintf(stderr, "loading %s ...\n", dir.c_str());
  Loaded l{Model::load(dir, f.load.numerics_mode(), nullptr, f.load.residency), Tokenizer::load(dir)};
  if (l.tok.vocab_size() > l.model->config().vocab_size)
    throw Error(cat(dir, ": the tokenizer has ", l.tok.vocab_size(), " tokens but the model only ",
                    l.model->config().vocab_size));
  return l;
}

GenerateOptions gen_options(const GenFlags& f, const Loaded& l) {
  GenerateOptions o;
  o.max_tokens = f.max_tokens;
  o.sampling.temperature = f.temperature;
  o.sampling.top_p = f.top_p;
  o.sampling.top_k = f.top_k;
  o.sampling.min_p = f.min_p;
  o.sampling.seed = f.seed;
  o.speculative = f.speculative;
  o.stop_tokens = {l.model->config().eos_token_id};
  return o;
}

// Streams one answer to stdout (AnswerPrinter) and returns the parsed message and the
// generation result.
struct Answer {
  GenerateResult result;
  ParsedMessage message;
};

Answer stream_answer(Session* s, const Loaded& l, const std::vector<int32_t>& ids, const GenFlags& f, bool thinking) {
  StreamDecoder dec(l.tok, /*skip_special=*/false);
  AnswerPrinter printer(stdout, thinking, isatty(STDOUT_FILENO));
  GenerateOptions o = gen_options(f, l);
  o.on_token = [&](int32_t t) {
    printer.feed(dec.push(t));
    return !g_interrupted.load();
  };
  const bool show_progress = ids.size() > 512;
  Answer a;
  a.result = generate(s, ids, o, [&](int64_t done, int64_t total) {
    if (show_progress) std::fprintf(stderr, "\rprompt %lld / %lld tokens", (long long)done, (long long)total);
  });
  if (show_progress) std::fprintf(stderr, "\n");
  printer.feed(dec.finish());
  a.message = printer.finish();
  return a;
}

void print_stats(const GenerateResult& r) {
  double gen = double(r.tokens.size());
  std::fprintf(stderr, "[prompt %lld tokens, %.1f tok/s | generated %lld tokens, %.2f tok/s | %s]",
               (long long)r.prompt_tokens, r.prefill_seconds > 0 ? double(r.prompt_tokens) / r.prefill_seconds : 0.0,
               (long long)r.tokens.size(), r.decode_seconds > 0 ? gen / r.decode_seconds : 0.0,
               finish_reason_name(r.finish));
  if (r.drafted)
    std::fprintf(stderr, " [speculative: %lld/%lld drafts accepted]", (long long)r.accepted, (long long)r.drafted);
  std::fprintf(stderr, "\n");
}

ChatOptions chat_options(const GenFlags& f, bool thinking) {
  ChatOptions o;
  o.thinking = thinking;
  o.reasoning_effort = thinking ? f.effort : "";
  return o;
}

void run_once(const GenFlags& f, const std::string& prompt) {
  Loaded l = load(f);
  const bool thinking = f.think && !f.no_think;
  ordered_json messages = ordered_json::array({{{"role", "user"}, {"content", prompt}}});
  ChatPrompt p = encode_chat_prompt(l.tok, messages, nullptr, chat_options(f, thinking));
  Session s(*l.model, SessionOptions{f.ctx, 256, f.speculative});
  std::signal(SIGINT, on_sigint);
  Answer a = stream_answer(&s, l, p.ids, f, thinking);
  print_stats(a.result);
}

void run_chat(const GenFlags& f) {
  Loaded l = load(f);
  bool thinking = f.think && !f.no_think;
  Session s(*l.model, SessionOptions{f.ctx, 256, f.speculative});
  ordered_json history = ordered_json::array();
  struct sigaction sa {};
  sa.sa_handler = on_sigint;  // no SA_RESTART: Ctrl-C at the prompt ends the read
  sigaction(SIGINT, &sa, nullptr);
  std::fprintf(stderr, "dsv4 chat — /exit to quit, /clear to forget, /think on|off; Ctrl-C stops an answer\n");
  bool close_turn = false;  // the last answer still needs its end-of-sentence token in the session
  while (true) {
    std::printf("> ");
    std::fflush(stdout);
    std::string line;
    g_interrupted = false;
    if (!std::getline(std::cin, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/clear") {
      s.reset(), history = ordered_json::array(), close_turn = false;
      std::printf("(history cleared)\n");
      continue;
    }
    if (line.rfind("/think", 0) == 0) {
      thinking = line.find("off") == std::string::npos;
      std::printf("(thinking %s)\n", thinking ? "on" : "off");
      continue;
    }
    if (line.empty()) continue;
    ordered_json msg = ordered_json::array({{{"role", "user"}, {"content", line}}});
    ChatOptions opts = chat_options(f, thinking);
    opts.context = history;  // render only the new turn; earlier ones are already in the session
    std::vector<int32_t> ids;
    if (close_turn) ids.push_back(l.model->config().eos_token_id);
    ChatPrompt p = encode_chat_prompt(l.tok, msg, nullptr, opts);
    ids.insert(ids.end(), p.ids.begin(), p.ids.end());
    Answer a;
    try {
      a = stream_answer(&s, l, ids, f, thinking);
    } catch (const Error& e) {
      std::printf("error: %s\n", e.what());
      continue;
    }
    if (a.result.finish == FinishReason::kCancelled) std::printf("(interrupted)\n");
    print_stats(a.result);
    history.push_back(msg[0]);
    ordered_json reply = {{"role", "assistant"}, {"content", a.message.content}};
    if (!a.message.reasoning_content.empty()) reply["reasoning_content"] = a.message.reasoning_content;
    history.push_back(reply);
    close_turn = true;
  }
}

}  // namespace

void add_generate_commands(CLI::App& app) {
  static GenFlags run_flags, chat_flags;
  static std::string prompt;
  auto* run = app.add_subcommand("run", "Answer one prompt, streaming the reply");
  run->add_option("-p,--prompt", prompt, "The user message")->required();
  add_gen_flags(run, run_flags);
  run->callback([] { run_once(run_flags, prompt); });

  auto* chat = app.add_subcommand("chat", "Interactive multi-turn chat");
  add_gen_flags(chat, chat_flags);
  chat->callback([] { run_chat(chat_flags); });
}

}  // namespace dsv4::cli
