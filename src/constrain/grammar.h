// What a constrained request may produce, as one DFA over the bytes of the whole completion
// (the text after the prompt's `<think>` or `</think>`):
//
//   [reasoning `</think>`]  (JSON document | DSML tool-call block)  EOS
//
// * Thinking mode: the reasoning is free text (no `｜`, so no control token, and no `<think>`)
//   up to the first `</think>`; the constraint applies from there on. The model thinks as
//   trained, and the answer after the reasoning is what is constrained.
// * A tool-call block is V4's DSML: `\n\n<｜DSML｜tool_calls>\n`, one or more invoke elements
//   naming an allowed tool with its parameters (json_schema.h), `\n</｜DSML｜tool_calls>`.
// * The JSON document matches a schema, or is any JSON object (json_object).
#pragma once

#include <string>
#include <vector>

#include "constrain/automaton.h"
#include "constrain/json_schema.h"

namespace dsv4::constrain {

struct ToolSpec {
  std::string name;
  Json parameters;   // the tool's JSON schema (an object schema)
  std::string path;  // where it is in the request, for errors
};

struct GrammarSpec {
  bool thinking = false;
  std::vector<ToolSpec> tools;  // a call may name one of these
  bool call_required = false;   // a tool call is the only output (else a document, or a call if tools)
  bool single_call = false;     // exactly one invoke (parallel tool calls off)
  bool json_object = false;     // the document is any JSON object
  Json schema;                  // else the document's schema (null: no document, tools only)
  std::string schema_path;

  // The text that identifies the automaton (the compiled-constraint cache key).
  std::string canonical() const;
};

inline constexpr size_t kMaxDfaStates = 100000;  // ~60 byte classes x 4 B each: 24 MiB at most

// Throws SchemaError naming an unsupported feature and where it is.
Dfa build_dfa(const GrammarSpec& spec);

}  // namespace dsv4::constrain
