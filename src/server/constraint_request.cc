#include "server/constraint_request.h"

#include <atomic>
#include <mutex>

namespace dsv4::server {

namespace {

std::atomic<constrain::ConstraintCache*> g_cache{nullptr};

constrain::ConstraintCache& cache(const Tokenizer& tok, int32_t eos_id) {
  // One tokenizer per server process: its vocabulary trie is built once, on first use.
  static std::once_flag once;
  static std::unique_ptr<constrain::ConstraintCache> c;
  std::call_once(once, [&] {
    c = std::make_unique<constrain::ConstraintCache>(std::make_shared<const constrain::Vocabulary>(tok, eos_id),
                                                     kConstraintCacheEntries);
    g_cache.store(c.get());
  });
  return *c;
}

// "tools[3].function.parameters": where the named tool's schema is in the request body.
std::string tool_path(const ConstraintRequest& r, const std::string& name) {
  if (r.body_tools && r.body_tools->is_array())
    for (size_t i = 0; i < r.body_tools->size(); ++i) {
      const Json& t = (*r.body_tools)[i];
      const Json* n = t.contains("function") && t["function"].is_object() ? &t["function"] : &t;
      if (n->is_object() && n->value("name", Json()) == name) return cat("tools[", i, "].", r.schema_key);
    }
  return cat("tools(", name, ")");
}

}  // namespace

int64_t constraint_cache_hits() {
  constrain::ConstraintCache* c = g_cache.load();
  return c ? c->hits() : 0;
}

std::shared_ptr<const constrain::Constraint> make_constraint(const ConstraintRequest& r, const Tokenizer& tok,
                                                             int32_t eos_id) {
  constrain::GrammarSpec spec;
  spec.thinking = r.thinking;
  const bool call = r.choice.kind != ToolChoice::Kind::kAuto;
  const bool offered = r.tools.is_array() && !r.tools.empty();
  bool strict = true;
  if (call) {
    spec.call_required = true;
  } else if (r.response_format.is_object()) {
    const std::string type = r.response_format.value("type", "");
    if (type == "json_object") {
      spec.json_object = true;
    } else if (type == "json_schema") {
      const Json& js = r.response_format.contains("json_schema") ? r.response_format["json_schema"] : Json();
      if (!js.is_object()) bad_request("'json_schema' must be an object with a 'schema'", r.format_param);
      strict = js.value("strict", Json(false)) == Json(true);
      spec.schema = js.contains("schema") && !js["schema"].is_null() ? js["schema"] : Json::object();
    } else {
      return nullptr;
    }
    spec.schema_path = r.format_path;
  } else {
    return nullptr;  // tool_choice auto without a format: free text or calls, as the model likes
  }
  if (offered && (call || !spec.schema.is_null() || spec.json_object)) {
    spec.single_call = !r.choice.parallel;
    for (const Json& t : r.tools) {
      const std::string name = t["function"]["name"];
      if (r.choice.kind == ToolChoice::Kind::kNamed && name != r.choice.name) continue;
      spec.tools.push_back({name, t["function"].value("parameters", Json()), tool_path(r, name)});
    }
  }
  try {
    return cache(tok, eos_id).get(spec);
  } catch (const constrain::SchemaError& e) {
    if (!call && !strict) return nullptr;  // best effort: the schema stays in the prompt only
    bad_request(cat("cannot constrain the output: ", e.what()), call ? "tools" : r.format_param);
  }
}

}  // namespace dsv4::server
