// `dsv4 tokenize`, `detokenize`, `template` and `parse-completion`: the tokenizer and the V4
// chat format from the command line (checking prompts and ids against other implementations).
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "apps/cli/commands.h"
#include "apps/cli/demo_model.h"
#include "core/error.h"
#include "tokenizer/chat.h"
#include "tokenizer/completion_parser.h"
#include "tokenizer/pyjson.h"
#include "tokenizer/tokenizer.h"

namespace dsv4::cli {

namespace {

std::string read_input(const std::string& path) {
  if (path == "-") {
    std::ostringstream ss;
    ss << std::cin.rdbuf();
    return ss.str();
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(cat("cannot open ", path));
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void print(const std::string& s) { std::fwrite(s.data(), 1, s.size(), stdout); }

std::string ids_json(const std::vector<int32_t>& ids) { return nlohmann::json(ids).dump(); }

struct TokenizeOpts {
  std::string model, text, file, jsonl;
};

void run_tokenize(const TokenizeOpts& o) {
  const int given = !o.text.empty() + !o.file.empty() + !o.jsonl.empty();
  if (given != 1) throw Error("tokenize: give exactly one of --text, --file, --jsonl");
  const Tokenizer tok = Tokenizer::load(resolve_model_dir(o.model));
  if (!o.jsonl.empty()) {
    std::istringstream in(read_input(o.jsonl));
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        throw Error(cat(o.jsonl, ":", n, ": invalid JSON: ", e.what()));
      }
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
        throw Error(cat(o.jsonl, ":", n, ": expected an object with a string field \"text\""));
      print(cat("{\"ids\": ", ids_json(tok.encode(j["text"].get<std::string>())), "}\n"));
    }
    return;
  }
  const std::string text = o.file.empty() ? o.text : read_input(o.file);
  print(ids_json(tok.encode(text)) + "\n");
}

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::string t = s;
  for (char& c : t)
    if (c == '[' || c == ']' || c == ',') c = ' ';
  std::istringstream in(t);
  std::string item;
  while (in >> item) {
    std::size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || v < INT32_MIN || v > INT32_MAX) throw Error(cat("--ids: '", item, "' is not a token id"));
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

// Each subcommand's options live in one struct that its callback owns (captures): CLI11 writes
// into these fields while parsing, long after add_tokenizer_commands() has returned.
struct DetokenizeOpts {
  std::string model, ids;
  bool skip_special = false;
};

struct ParseOpts {
  std::string model, file;
  bool thinking = false;
};

struct TemplateOpts {
  std::string model, messages, effort;
  bool thinking = false, keep_thinking = false, no_bos = false, ids = false;
};

void run_template(const TemplateOpts& o) {
  // Rendering copies messages recursively: refuse deep nesting before anything recursive runs.
  constexpr std::size_t kMaxDepth = 128;
  const std::string text = read_input(o.messages);
  if (const std::size_t at = pyjson::too_deep_at(text, kMaxDepth); at != std::string::npos)
    throw Error(cat(o.messages, ": JSON nests deeper than ", kMaxDepth, " levels (at byte ", at, ")"));
  nlohmann::ordered_json doc;
  try {
    doc = nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(cat(o.messages, ": invalid JSON: ", e.what()));
  }
  nlohmann::ordered_json messages, tools;
  if (doc.is_array()) {
    messages = doc;
  } else if (doc.is_object() && doc.contains("messages")) {
    messages = doc["messages"];
    if (doc.contains("tools")) tools = doc["tools"];
  } else {
    throw Error(cat(o.messages, ": expected a messages array or an object {\"messages\": [...], \"tools\": [...]}"));
  }
  ChatOptions opt;
  opt.thinking = o.thinking;
  opt.drop_thinking = !o.keep_thinking;
  opt.reasoning_effort = o.effort == "none" ? "" : o.effort;
  opt.add_bos = !o.no_bos;
  const std::string prompt = encode_chat(messages, tools, opt);
  if (o.ids) {
    print(ids_json(Tokenizer::load(resolve_model_dir(o.model)).encode(prompt)) + "\n");
  } else {
    print(prompt);
  }
}

}  // namespace

void add_tokenizer_commands(CLI::App& app) {
  auto tk = std::make_shared<TokenizeOpts>();
  auto* tokenize = app.add_subcommand("tokenize", "Encode text to token ids (printed as a JSON array)");
  tokenize->add_option("--model", tk->model, "Model directory, tokenizer.json, 'demo' or 'synthetic'")->required();
  tokenize->add_option("--text", tk->text, "Text to encode");
  tokenize->add_option("--file", tk->file, "File whose whole content is encoded ('-' = stdin)");
  tokenize->add_option("--jsonl", tk->jsonl,
                       "JSONL file: each line {\"text\": ...} prints one line {\"ids\": [...]}; blank lines are skipped");
  tokenize->callback([tk] { run_tokenize(*tk); });

  auto dk = std::make_shared<DetokenizeOpts>();
  auto* detok = app.add_subcommand("detokenize", "Decode token ids to text");
  detok->add_option("--model", dk->model, "Model directory, tokenizer.json, 'demo' or 'synthetic'")->required();
  detok->add_option("--ids", dk->ids, "Ids, comma-separated (1,2,3) or a JSON array")->required();
  detok->add_flag("--skip-special", dk->skip_special, "Drop special added tokens (skip_special_tokens)");
  detok->callback([dk] {
    const Tokenizer tok = Tokenizer::load(resolve_model_dir(dk->model));
    const std::vector<int32_t> ids = parse_ids(dk->ids);
    for (int32_t id : ids)
      if (id < 0 || id >= tok.vocab_size())
        throw Error(cat("--ids: ", id, " is not in the vocabulary (0 to ", tok.vocab_size() - 1, ")"));
    print(tok.decode(ids, dk->skip_special) + "\n");
  });

  auto to = std::make_shared<TemplateOpts>();
  auto* tmpl = app.add_subcommand(
      "template",
      "Render a DeepSeek-V4 chat prompt (official encoding_dsv4 format). --messages is a JSON file holding either "
      "an OpenAI-style messages array or an object {\"messages\": [...], \"tools\": [...]} (tools = OpenAI "
      "function schemas, attached to the first system message). Prints the prompt text exactly (no trailing "
      "newline), or with --ids its token ids as a JSON array.");
  tmpl->add_option("--model", to->model, "Model directory, tokenizer.json, 'demo' or 'synthetic' (needed for --ids)")->required();
  tmpl->add_option("--messages", to->messages, "Messages JSON file ('-' = stdin)")->required();
  tmpl->add_flag("--thinking", to->thinking, "Thinking mode (default: chat mode)");
  tmpl->add_flag("--keep-thinking", to->keep_thinking, "Keep the reasoning of earlier turns (drop_thinking=false)");
  tmpl->add_option("--effort", to->effort, "Reasoning effort: none, high or max")
      ->check(CLI::IsMember({"none", "high", "max"}));
  tmpl->add_flag("--no-bos", to->no_bos, "Do not start with the BOS text");
  tmpl->add_flag("--ids", to->ids, "Print token ids instead of text");
  tmpl->callback([to] { run_template(*to); });

  auto po = std::make_shared<ParseOpts>();
  auto* parse = app.add_subcommand(
      "parse-completion",
      "Parse generated text (starting right after the prompt's <think> or </think>) into an OpenAI-style "
      "assistant message {role, content, reasoning_content, tool_calls}; malformed completions are an error");
  parse->add_option("--model", po->model, "Model directory (accepted for symmetry; the parser needs no files)")
      ->required();
  parse->add_option("--file", po->file, "Completion text file ('-' = stdin)")->required();
  parse->add_flag("--thinking", po->thinking, "The completion is in thinking mode (reasoning, then </think>)");
  parse->callback(
      [po] { print(parse_completion(read_input(po->file), po->thinking).to_json().dump(2, ' ', false) + "\n"); });
}

}  // namespace dsv4::cli
