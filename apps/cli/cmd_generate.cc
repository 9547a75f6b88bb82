// `dsv4 run` (one prompt, streamed answer) and `dsv4 chat` (interactive, multi-turn).
//
// Both hold a Model, a Tokenizer and a Session: text → chat-format ids → generate → streamed
// UTF-8 → incremental completion parser, which separates reasoning from content and tool calls.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <optional>
#include <nlohmann/json.hpp>

#include "apps/cli/answer_printer.h"
#include "apps/cli/checks.h"
#include "apps/cli/commands.h"
#include "apps/cli/demo_model.h"
#include "apps/cli/load_flags.h"
#include "apps/cli/model_loader.h"
#include "apps/cli/saved_state.h"
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
  std::string save_state, load_state, session;  // state files (run / chat)
  LoadFlags load;
};

void add_gen_flags(CLI::App* c, GenFlags& f) {
  c->add_option("--model", f.model, "Checkpoint directory, 'demo' (KJV-trained) or 'synthetic' (random)");
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
  Loaded l{load_model(dir, f.load), Tokenizer::load(dir)};
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

Answer stream_answer(Session* s, const Loaded& l, const std::vector<int32_t>& ids, const GenFlags& f, bool thinking,
                     std::optional<uint64_t> rng = {}) {
  StreamDecoder dec(l.tok, /*skip_special=*/false);
  AnswerPrinter printer(stdout, thinking, isatty(STDOUT_FILENO));
  GenerateOptions o = gen_options(f, l);
  o.rng_state = rng;
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

// The reply to append to the history (with its reasoning, if any).
ordered_json reply_message(const ParsedMessage& m) {
  ordered_json reply = {{"role", "assistant"}, {"content", m.content}};
  if (!m.reasoning_content.empty()) reply["reasoning_content"] = m.reasoning_content;
  return reply;
}

// Continuing a saved answer (no prompt) extends its reply; a prompt adds a turn.
void record_answer(SavedConversation* c, const ordered_json& user, const Answer& a, bool continuing) {
  ordered_json reply = reply_message(a.message);
  if (continuing && !c->history.empty() && c->history.back().value("role", "") == "assistant") {
    ordered_json& last = c->history.back();
    last["content"] = last.value("content", "") + reply["content"].get<std::string>();
    if (reply.contains("reasoning_content"))
      last["reasoning_content"] = last.value("reasoning_content", "") + reply["reasoning_content"].get<std::string>();
    return;
  }
  if (!continuing) c->history.push_back(user);
  c->history.push_back(reply);
}

void run_once(const GenFlags& f, const std::string& prompt) {
  Loaded l = load(f);
  const bool thinking = f.think && !f.no_think;
  const int32_t eos = l.model->config().eos_token_id;
  Session s(*l.model, SessionOptions{f.ctx, 256, f.speculative});
  SavedConversation conv;
  if (!f.save_state.empty()) check_can_save(f.save_state);
  if (!f.load_state.empty()) conv = load_conversation(&s, f.load_state);
  const bool continuing = prompt.empty();  // --load-state without --prompt: continue the answer
  std::vector<int32_t> ids;
  std::optional<uint64_t> rng;
  ordered_json user = {{"role", "user"}, {"content", prompt}};
  if (continuing) {
    if (conv.pending.empty() || conv.pending.back() == eos)
      throw Error(cat(f.load_state, ": the saved answer is complete; give --prompt to add a turn"));
    ids = conv.pending;
    if (conv.has_rng && conv.seed == f.seed) rng = conv.rng;  // the same seed continues its stream
  } else {
    ChatOptions opts = chat_options(f, thinking);
    opts.context = conv.history;
    ChatPrompt p = encode_chat_prompt(l.tok, ordered_json::array({user}), nullptr, opts);
    ids = close_answer(conv.pending, eos);
    ids.insert(ids.end(), p.ids.begin(), p.ids.end());
  }
  std::signal(SIGINT, on_sigint);
  const int64_t start = s.position();
  Answer a = stream_answer(&s, l, ids, f, thinking, rng);
  print_stats(a.result);
  if (f.save_state.empty()) return;
  record_answer(&conv, user, a, continuing);
  conv.pending = unconsumed(s, start + int64_t(ids.size() + a.result.tokens.size()), a.result, eos);
  conv.has_rng = true, conv.seed = f.seed, conv.rng = a.result.rng_state;
  save_conversation(s, conv, f.save_state);
}

void run_chat(const GenFlags& f) {
  Loaded l = load(f);
  bool thinking = f.think && !f.no_think;
  Session s(*l.model, SessionOptions{f.ctx, 256, f.speculative});
  SavedConversation conv;  // history, and what the last answer left pending (EOS once it is closed)
  if (!f.session.empty()) check_can_save(f.session);
  if (!f.session.empty() && access(f.session.c_str(), F_OK) == 0) {
    conv = load_conversation(&s, f.session);
    std::fprintf(stderr, "resumed %lld tokens from %s\n", (long long)s.position(), f.session.c_str());
  }
  auto save = [&] {
    if (!f.session.empty()) save_conversation(s, conv, f.session);
  };
  struct sigaction sa {};
  sa.sa_handler = on_sigint;  // no SA_RESTART: Ctrl-C at the prompt ends the read
  sigaction(SIGINT, &sa, nullptr);
  std::fprintf(stderr, "dsv4 chat — /exit to quit, /clear to forget, /think on|off; Ctrl-C stops an answer\n");
  while (true) {
    std::printf("> ");
    std::fflush(stdout);
    std::string line;
    g_interrupted = false;
    if (!std::getline(std::cin, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/clear") {
      s.reset(), conv = {};
      save();
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
    opts.context = conv.history;  // render only the new turn; earlier ones are already in the session
    std::vector<int32_t> ids = close_answer(conv.pending, l.model->config().eos_token_id);
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
    record_answer(&conv, msg[0], a, false);
    conv.pending = {l.model->config().eos_token_id};  // the next turn closes this answer
    save();
  }
}

}  // namespace

void add_generate_commands(CLI::App& app) {
  static GenFlags run_flags, chat_flags;
  static std::string prompt;
  auto* run = app.add_subcommand("run", "Answer one prompt, streaming the reply");
  run->add_option("-p,--prompt", prompt, "The user message (optional with --load-state: continue the answer)");
  add_gen_flags(run, run_flags);
  run->add_option("--save-state", run_flags.save_state, "Save the session state to FILE after the answer");
  run->add_option("--load-state", run_flags.load_state, "Start from a state saved with --save-state");
  run->callback([] {
    if (prompt.empty() && run_flags.load_state.empty())
      throw CLI::RequiredError("--prompt (or --load-state to continue a saved answer)");
    run_once(run_flags, prompt);
  });

  auto* chat = app.add_subcommand("chat", "Interactive multi-turn chat");
  add_gen_flags(chat, chat_flags);
  chat->add_option("--session", chat_flags.session,
                   "Resume the conversation saved in FILE (if it exists); save it there after every turn");
  chat->callback([] { run_chat(chat_flags); });
}

}  // namespace dsv4::cli
