// What the API mapping tests share: the real V4 tokenizer from ../shared (loaded once per test
// program) and the outcome of mapping a request body through one endpoint's parser.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "server/anthropic_api.h"
#include "server/openai_api.h"
#include "tests/test_util.h"

namespace dsv4::server::test {

inline const Tokenizer& shared_tokenizer() {
  static const std::unique_ptr<Tokenizer> tok =
      std::make_unique<Tokenizer>(Tokenizer::load(::dsv4::test::shared_dir() + "/tokenizer/tokenizer.json"));
  return *tok;
}

enum class Endpoint { kChat, kCompletions, kMessages, kCountTokens };

inline const char* endpoint_name(Endpoint e) {
  switch (e) {
    case Endpoint::kChat: return "/v1/chat/completions";
    case Endpoint::kCompletions: return "/v1/completions";
    case Endpoint::kMessages: return "/v1/messages";
    case Endpoint::kCountTokens: return "/v1/messages/count_tokens";
  }
  return "?";
}

// How a body fared: mapped to a prompt, or refused with an ApiError. Any other exception
// escapes (and fails the calling test), as it would become a 500 in the server.
struct Outcome {
  bool accepted = false;
  int status = 0;
  std::string message, param;
  GenParams gen;  // when accepted (not for count_tokens)
};

inline Outcome map_body(Endpoint e, const std::string& body, const ApiConfig& cfg) {
  const Tokenizer& tok = shared_tokenizer();
  Outcome o;
  try {
    const Json j = parse_body(body);
    switch (e) {
      case Endpoint::kChat: o.gen = parse_chat_request(j, tok, cfg).gen; break;
      case Endpoint::kCompletions: o.gen = parse_completion_request(j, tok, cfg).gen; break;
      case Endpoint::kMessages: o.gen = parse_messages_request(j, tok, cfg).gen; break;
      case Endpoint::kCountTokens: o.gen.prompt.resize(size_t(count_message_tokens(j, tok, cfg))); break;
    }
    o.accepted = true;
  } catch (const ApiError& err) {
    o.status = err.status();
    o.message = err.what();
    o.param = err.param();
  }
  return o;
}

}  // namespace dsv4::server::test
