// Token masks over the real V4 vocabulary (../shared/tokenizer): the trie walk allows exactly
// the tokens whose bytes keep the automaton alive, control tokens never slip in, and decoding
// with random logits under the mask always yields a document that parses.
#include <gtest/gtest.h>

#include <random>

#include "constrain/token_mask.h"

namespace dsv4::constrain {
namespace {

const Tokenizer& tok() {
  static const Tokenizer t = Tokenizer::load(DSV4_SHARED_DIR "/tokenizer/tokenizer.json");
  return t;
}

std::shared_ptr<const Vocabulary> vocab() {
  static const auto v = std::make_shared<const Vocabulary>(tok(), tok().eos_id());
  return v;
}

bool allowed(const Mask& m, int32_t id) { return (m[size_t(id) / 64] >> (id % 64)) & 1; }

Constraint schema_constraint(const char* schema, bool thinking = false) {
  GrammarSpec spec;
  spec.schema = Json::parse(schema);
  spec.thinking = thinking;
  return Constraint(vocab(), build_dfa(spec));
}

TEST(TokenMask, BooleanStartAllowsExactlyThePrefixesOfTrueAndFalse) {
  const Constraint c = schema_constraint(R"({"type": "boolean"})");
  const Mask m = *c.mask(c.start());
  int n = 0;
  for (int32_t id = 0; id < tok().vocab_size(); ++id) {
    const std::string b(tok().id_bytes(id));
    const bool expect = !tok().is_added(id) && !b.empty() &&
                        (std::string("true").rfind(b, 0) == 0 || std::string("false").rfind(b, 0) == 0);
    EXPECT_EQ(allowed(m, id), expect) << id << " '" << b << "'";
    n += expect;
  }
  EXPECT_GE(n, 4);  // t, tr, true, f, ...
  const int after_true = c.advance(c.start(), *tok().token_to_id("true"));
  ASSERT_GE(after_true, 0);
  const Mask end = *c.mask(after_true);
  for (int32_t id = 0; id < tok().vocab_size(); ++id) EXPECT_EQ(allowed(end, id), id == tok().eos_id()) << id;
}

TEST(TokenMask, TrieWalkAgreesWithWalkingEachToken) {
  const Constraint c = schema_constraint(R"({"type": "object", "properties": {"name": {"type": "string", "maxLength": 5},
      "n": {"type": "number"}}, "required": ["name"]})");
  for (const char* prefix : {"", "{", "{\"name\":", "{\"name\": \"ab", "{\"name\":\"abcde\"", "{\"name\":\"\",\"n\":-1.5"}) {
    const int s = c.dfa().walk(c.start(), prefix);
    ASSERT_GE(s, 0) << prefix;
    const Mask m = *c.mask(s);
    for (int32_t id = 0; id < tok().vocab_size(); ++id) {
      if (id == tok().eos_id()) continue;
      const bool expect = !tok().is_added(id) && !tok().id_bytes(id).empty() && c.dfa().walk(s, tok().id_bytes(id)) >= 0;
      ASSERT_EQ(allowed(m, id), expect) << prefix << " | " << id << " '" << tok().id_bytes(id) << "'";
    }
  }
}

TEST(TokenMask, ControlTokensOnlyWhereTheGrammarSpellsThem) {
  GrammarSpec spec;
  spec.thinking = true;
  spec.call_required = true;
  spec.tools.push_back({"f", Json::parse(R"({"type": "object", "properties": {"x": {"type": "string"}}})"), "tools[0]"});
  const Constraint c(vocab(), build_dfa(spec));
  const int32_t think_end = *tok().token_to_id("</think>"), dsml = *tok().token_to_id("\xEF\xBD\x9C" "DSML\xEF\xBD\x9C");
  const int32_t user = *tok().token_to_id("<\xEF\xBD\x9CUser\xEF\xBD\x9C>"), think = *tok().token_to_id("<think>");
  const Mask reasoning = *c.mask(c.start());
  EXPECT_TRUE(allowed(reasoning, think_end));
  EXPECT_FALSE(allowed(reasoning, think));
  EXPECT_FALSE(allowed(reasoning, user));
  EXPECT_FALSE(allowed(reasoning, dsml));
  EXPECT_FALSE(allowed(reasoning, tok().eos_id()));
  int s = c.advance(c.start(), think_end);
  for (int32_t t : tok().encode("\n\n<")) s = c.advance(s, t);
  ASSERT_GE(s, 0);
  const Mask at_dsml = *c.mask(s);
  EXPECT_TRUE(allowed(at_dsml, dsml));
  EXPECT_FALSE(allowed(at_dsml, think_end));
}

// Random logits, masked, sampled greedily: the text always completes into a valid document.
TEST(TokenMask, RandomDecodingUnderTheMaskParses) {
  const Constraint c = schema_constraint(R"({"type": "object", "properties": {"id": {"type": "integer"},
      "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}, "ok": {"type": "boolean"}},
      "required": ["id", "tags", "ok"], "additionalProperties": false})");
  std::mt19937 rng(7);
  std::normal_distribution<float> noise;
  for (int run = 0; run < 10; ++run) {
    std::vector<float> logits(size_t(tok().vocab_size()));
    std::string text;
    int s = c.start();
    bool ended = false;
    for (int step = 0; step < 400 && !ended; ++step) {
      for (float& l : logits) l = noise(rng);
      c.apply(s, logits);
      const int32_t t = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
      ASSERT_NE(logits[size_t(t)], -INFINITY);
      if (t == tok().eos_id()) {
        ended = true;
        break;
      }
      text += tok().id_bytes(t);
      s = c.advance(s, t);
      ASSERT_GE(s, 0) << text;
    }
    ASSERT_TRUE(ended) << text;
    const auto doc = nlohmann::json::parse(text);
    ASSERT_TRUE(doc.is_object()) << text;
    EXPECT_EQ(doc.size(), 3u) << text;
    EXPECT_TRUE(doc["id"].is_number_integer()) << text;
    EXPECT_TRUE(doc["ok"].is_boolean()) << text;
    ASSERT_TRUE(doc["tags"].is_array()) << text;
    EXPECT_LE(doc["tags"].size(), 3u) << text;
    for (const auto& t : doc["tags"]) EXPECT_TRUE(t == "a" || t == "b") << text;
  }
}

}  // namespace
}  // namespace dsv4::constrain
