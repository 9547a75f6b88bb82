#include "constrain/grammar.h"

namespace dsv4::constrain {

namespace {

#define DSV4_BAR "\xEF\xBD\x9C"  // U+FF5C, the fullwidth bar of V4's control tokens

Nfa::Frag invoke(Nfa& nfa, const ToolSpec& tool) {
  if (tool.name.empty() || tool.name.find('"') != std::string::npos || tool.name.find(DSV4_BAR) != std::string::npos)
    throw SchemaError(cat("the tool name '", tool.name, "' at ", tool.path, " cannot be written in a DSML tool call"));
  SchemaCompiler params(nfa, tool.parameters.is_null() ? Json{{"type", "object"}} : tool.parameters, tool.path);
  return nfa.seq({nfa.lit(cat("<" DSV4_BAR "DSML" DSV4_BAR "invoke name=\"", tool.name, "\">\n")), params.dsml_parameters(),
                  nfa.lit("</" DSV4_BAR "DSML" DSV4_BAR "invoke>")});
}

// `\n\n<｜DSML｜tool_calls>\n` INVOKE (`\n` INVOKE)* `\n</｜DSML｜tool_calls>`, one copy of each invoke.
Nfa::Frag tool_calls(Nfa& nfa, const std::vector<ToolSpec>& tools, bool single) {
  std::vector<Nfa::Frag> calls;
  for (const ToolSpec& t : tools) calls.push_back(invoke(nfa, t));
  Nfa::Frag open = nfa.lit("\n\n<" DSV4_BAR "DSML" DSV4_BAR "tool_calls>\n"), any = nfa.alt(calls), nl = nfa.lit("\n"),
            close = nfa.lit("</" DSV4_BAR "DSML" DSV4_BAR "tool_calls>");
  nfa.eps(open.out, any.in);
  nfa.eps(any.out, nl.in);
  if (!single) nfa.eps(nl.out, any.in);
  nfa.eps(nl.out, close.in);
  return {open.in, close.out};
}

// Free reasoning up to the first `</think>` (commit), never containing `<think>` (kill).
Nfa::Frag reasoning(Nfa& nfa) {
  Nfa::Frag text = nfa.star(raw_char(nfa)), end = nfa.lit("</think>"), bad = nfa.lit("<think>");
  nfa.mark(end.out, Nfa::Mark::kCommit);
  nfa.mark(bad.out, Nfa::Mark::kKill);
  nfa.eps(text.out, end.in);
  nfa.eps(text.out, bad.in);
  return {text.in, end.out};
}

}  // namespace

std::string GrammarSpec::canonical() const {
  Json tools_json = Json::array();
  for (const ToolSpec& t : tools) tools_json.push_back(Json{{"name", t.name}, {"parameters", t.parameters}, {"path", t.path}});
  return Json{{"thinking", thinking}, {"required", call_required}, {"single", single_call}, {"json_object", json_object}, {"schema", schema},
              {"schema_path", schema_path}, {"tools", tools_json}}
      .dump(-1, ' ', false, Json::error_handler_t::replace);
}

Dfa build_dfa(const GrammarSpec& spec) {
  Nfa nfa;
  std::vector<Nfa::Frag> answers;
  if (!spec.call_required) {
    if (spec.json_object) {
      SchemaCompiler c(nfa, Json{{"type", "object"}}, spec.schema_path);
      answers.push_back(c.free_form_object());
    } else if (!spec.schema.is_null()) {
      SchemaCompiler c(nfa, spec.schema, spec.schema_path);
      answers.push_back(c.document());
    }
  }
  if (!spec.tools.empty()) answers.push_back(tool_calls(nfa, spec.tools, spec.single_call));
  if (answers.empty()) throw SchemaError("nothing to constrain to");
  Nfa::Frag answer = answers.size() == 1 ? answers[0] : nfa.alt(answers);
  Nfa::Frag whole = spec.thinking ? nfa.seq({reasoning(nfa), answer}) : answer;
  return Dfa(nfa, whole, kMaxDfaStates);
}

}  // namespace dsv4::constrain
