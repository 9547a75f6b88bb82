#include "server/http_server.h"

#include <httplib.h>

#include <atomic>
#include <functional>
#include <new>
#include <thread>

#include "server/anthropic_api.h"
#include "server/openai_api.h"
#include "server/responses_api.h"
#include "server/test_script.h"

namespace dsv4::server {

namespace {

bool is_anthropic(const httplib::Request& req) {
  return req.path.rfind("/v1/messages", 0) == 0 || req.has_header("anthropic-version");
}

void send_error(const httplib::Request& req, httplib::Response& res, int status, const std::string& message,
                const std::string& param = "", const std::string& openai_type = "") {
  res.status = status;
  if (is_anthropic(req)) {
    res.set_content(dump(anthropic_error(anthropic_error_type(status), message)), "application/json");
  } else {
    std::string type = openai_type;
    if (type.empty()) {
      type = status == 401 ? "authentication_error"
             : status == 404 ? "not_found_error"
             : status == 429 ? "rate_limit_error"
             : status >= 500 ? "server_error"
                             : "invalid_request_error";
    }
    res.set_content(dump(openai_error(type, message, param)), "application/json");
  }
}

// The Worker output as it arrives; `on_event`/`finish` format it for one API.
struct StreamFormat {
  // The stream's opening events; with `start_when_admitted` they wait until the worker has
  // started the job and pass the prompt tokens it found in the prefix cache (else 0).
  std::function<std::string(int64_t cached_tokens)> start;
  bool start_when_admitted = false;
  std::function<std::string(const JobEvent&)> on_event;
  std::function<std::string(const JobOutcome&)> finish;
  std::function<std::string(const std::string&)> error;
};

}  // namespace

struct HttpServer::Impl {
  Worker& worker;
  const Tokenizer& tok;
  ApiConfig api;
  ServerOptions opt;
  GuardedServer svr;
  int port = 0;
  ResponseStore responses_store;  // /v1/responses with store: previous_response_id
  std::optional<ScriptedCompletions> script;  // --test-completions

  Impl(Worker& w, const Tokenizer& t, ApiConfig a, ServerOptions o)
      : worker(w), tok(t), api(std::move(a)), opt(std::move(o)), svr(opt.connections) {
    if (opt.test_completions.empty()) return;
    if (!api.test_hooks) throw Error("--test-completions needs --test-hooks");
    script.emplace(ScriptedCompletions::load(opt.test_completions));
  }

  bool authorized(const httplib::Request& req) const {
    if (opt.api_key.empty()) return true;
    const std::string auth = req.get_header_value("Authorization");
    return auth == "Bearer " + opt.api_key || req.get_header_value("x-api-key") == opt.api_key;
  }

  std::shared_ptr<Job> submit(GenParams gen) {
    if (gen.fail_alloc == FailAlloc::kHttp) throw std::bad_alloc();  // test hook
    if (script && !gen.forced) {
      if (auto text = script->next(tok.decode(gen.prompt))) {
        gen.forced = tok.encode(*text);
        gen.forced->push_back(api.eos_id);
      }
    }
    try {
      return worker.submit(std::move(gen));
    } catch (const QueueFull& e) {
      throw ApiError(429, "rate_limit_error", e.what());
    } catch (const NeverFits& e) {
      throw ApiError(400, "invalid_request_error", e.what(), "max_tokens");
    } catch (const ShuttingDown& e) {
      throw ApiError(503, "server_error", e.what());
    }
  }

  // Waits for a job to finish (non-streaming), cancelling it when the client goes away;
  // kError → its status (500, or 503 when the server is stopping).
  JobOutcome collect(const std::shared_ptr<Job>& job, std::vector<JobEvent>* events) {
    while (!job->wait(events, std::chrono::milliseconds(200)))
      if (GuardedServer::client_gone()) job->cancel();
    JobOutcome o = job->outcome();
    if (o.finish == Finish::kError)
      throw ApiError(o.error_status, "server_error", "generation failed: " + o.error);
    return o;
  }

  std::atomic<int> open_streams{0};  // chunked responses not yet released (drain_streams)

  void stream(httplib::Response& res, std::shared_ptr<Job> job, std::shared_ptr<StreamFormat> fmt) {
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    auto started = std::make_shared<bool>(false);
    res.set_chunked_content_provider(
        "text/event-stream",
        [job, fmt, started](size_t, httplib::DataSink& sink) {
          try {
            return stream_step(*job, *fmt, started.get(), sink);
          } catch (const std::exception&) {
            // Formatting failed (e.g. out of memory): the connection ends, so does the job.
            job->cancel();
            return false;
          }
        },
        [this, job](bool) {
          job->cancel();  // no-op when finished; stops generation otherwise
          --open_streams;
        });
    ++open_streams;
  }

  // Writes what the job produced in up to a second; false ends the response (client gone).
  static bool stream_step(Job& job, StreamFormat& fmt, bool* started, httplib::DataSink& sink) {
    if (GuardedServer::client_gone()) {
      job.cancel();
      return false;
    }
    std::string out;
    if (!*started) {
      std::optional<int64_t> cached = fmt.start_when_admitted ? job.wait_started(std::chrono::milliseconds(1000)) : 0;
      if (!cached) return keep_alive(job, sink);  // still queued
      out = fmt.start(*cached), *started = true;
    }
    std::vector<JobEvent> events;
    const bool done = job.wait(&events, std::chrono::milliseconds(1000));
    for (const JobEvent& e : events) out += fmt.on_event(e);
    if (done) {
      JobOutcome o = job.outcome();
      out += o.finish == Finish::kError ? fmt.error("generation failed: " + o.error) : fmt.finish(o);
    }
    // A comment line during silence (queued, long prefill): keeps proxies from timing out.
    if (out.empty()) return keep_alive(job, sink);
    if (!sink.write(out.data(), out.size())) {
      job.cancel();
      return false;
    }
    if (done) sink.done();
    return true;
  }

  static bool keep_alive(Job& job, httplib::DataSink& sink) {
    static const std::string kComment = ": keep-alive\n\n";
    if (sink.write(kComment.data(), kComment.size())) return true;
    job.cancel();
    return false;
  }

  void chat(const httplib::Request& req, httplib::Response& res) {
    auto r = std::make_shared<ChatRequest>(map_request(req.body, [&](const Json& b) { return parse_chat_request(b, tok, api); }));
    auto job = submit(r->gen);
    const std::string id = random_id("chatcmpl-");
    if (!r->stream) {
      std::vector<JobEvent> events;
      JobOutcome o = collect(job, &events);
      res.set_content(dump(chat_response(id, api, *r, events, o, tok)), "application/json");
      return;
    }
    auto cs = std::make_shared<ChatStream>(id, api, *r, tok);
    auto fmt = std::make_shared<StreamFormat>();
    fmt->start = [cs, r](int64_t) { return cs->start(); };  // r: the stream refers to the request
    fmt->on_event = [cs](const JobEvent& e) { return cs->on_event(e); };
    fmt->finish = [cs](const JobOutcome& o) { return cs->finish(o); };
    fmt->error = [](const std::string& m) { return sse_data(openai_error("server_error", m)) + "data: [DONE]\n\n"; };
    stream(res, job, fmt);
  }

  void completions(const httplib::Request& req, httplib::Response& res) {
    auto r = std::make_shared<CompletionRequest>(map_request(req.body, [&](const Json& b) { return parse_completion_request(b, tok, api); }));
    auto job = submit(r->gen);
    const std::string id = random_id("cmpl-");
    if (!r->stream) {
      std::vector<JobEvent> events;
      JobOutcome o = collect(job, &events);
      res.set_content(dump(completion_response(id, api, *r, events, o, tok)), "application/json");
      return;
    }
    auto fmt = std::make_shared<StreamFormat>();
    fmt->start = [](int64_t) { return std::string(); };
    fmt->on_event = [this, r, id](const JobEvent& e) { return completion_chunk(id, api, *r, &e, nullptr, tok); };
    fmt->finish = [this, r, id](const JobOutcome& o) { return completion_chunk(id, api, *r, nullptr, &o, tok); };
    fmt->error = [](const std::string& m) { return sse_data(openai_error("server_error", m)) + "data: [DONE]\n\n"; };
    stream(res, job, fmt);
  }

  void messages(const httplib::Request& req, httplib::Response& res) {
    auto r = std::make_shared<MessagesRequest>(map_request(req.body, [&](const Json& b) { return parse_messages_request(b, tok, api); }));
    auto job = submit(r->gen);
    const std::string id = random_id("msg_");
    if (!r->stream) {
      std::vector<JobEvent> events;
      JobOutcome o = collect(job, &events);
      res.set_content(dump(messages_response(id, api, *r, events, o)), "application/json");
      return;
    }
    auto ms = std::make_shared<MessagesStream>(id, api, *r);
    const int64_t prompt_tokens = int64_t(r->gen.prompt.size());
    auto fmt = std::make_shared<StreamFormat>();
    fmt->start = [ms, r, prompt_tokens](int64_t cached) { return ms->start(prompt_tokens, cached); };
    fmt->start_when_admitted = true;  // message_start reports the cached part of the prompt
    fmt->on_event = [ms](const JobEvent& e) { return ms->on_event(e); };
    fmt->finish = [ms](const JobOutcome& o) { return ms->finish(o); };
    fmt->error = [](const std::string& m) { return sse_event(anthropic_error("api_error", m)); };
    stream(res, job, fmt);
  }

  void responses(const httplib::Request& req, httplib::Response& res) {
    auto r = std::make_shared<ResponsesRequest>(parse_responses_request(parse_body(req.body), tok, api, responses_store));
    auto job = submit(r->gen);
    auto rs = std::make_shared<ResponsesStream>(random_id("resp_"), api, *r, tok);
    auto finish = [this, rs, r](const JobOutcome& o) {
      std::string out = rs->finish(o);
      if (r->store) responses_store.put(rs->response()["id"], rs->conversation());
      return out;
    };
    if (!r->stream) {
      std::vector<JobEvent> events;
      JobOutcome o = collect(job, &events);
      rs->start();
      for (const JobEvent& e : events) rs->on_event(e);
      finish(o);
      res.set_content(dump(rs->response()), "application/json");
      return;
    }
    auto fmt = std::make_shared<StreamFormat>();
    fmt->start = [rs](int64_t) { return rs->start(); };
    fmt->on_event = [rs](const JobEvent& e) { return rs->on_event(e); };
    fmt->finish = finish;
    fmt->error = [rs](const std::string& m) { return rs->fail(m); };
    stream(res, job, fmt);
  }

  // The prefix cache's disk tier (--kv-cache-dir): files, bytes on disk and their limit, loads
  // used (hits), requests without a longer file (misses), files rejected and deleted (damaged).
  static Json disk_cache_json(const WorkerStats& s) {
    if (!s.disk_cache) return Json{{"enabled", false}};
    const DiskCacheStats& d = s.disk;
    return Json{{"enabled", true}, {"files", d.files}, {"bytes", d.bytes}, {"max_bytes", d.max_bytes},
                {"hits", d.hits}, {"misses", d.misses}, {"damaged", d.damaged}, {"writes", d.writes},
                {"write_errors", d.write_errors}, {"evictions", d.evictions}, {"skipped", d.skipped}};
  }

  Json health() const {
    const WorkerStats s = worker.stats();
    return Json{{"status", "ok"},
                {"model", api.model_name},
                {"max_context", api.max_context},
                {"active", s.active},
                {"queued", s.queued},
                {"prefix_cache",
                 {{"entries", s.cache_entries}, {"bytes", s.cache_bytes}, {"max_bytes", s.cache_max_bytes},
                  {"hits", s.cache_hits}, {"misses", s.cache_misses}, {"evictions", s.cache_evictions}}},
                {"disk_cache", disk_cache_json(s)},
                {"memory",
                 {{"budget_bytes", s.memory_budget}, {"reserved_bytes", s.memory_reserved},
                  {"snapshots", s.snapshots}, {"prefill_steps", s.prefill_steps}}},
                {"totals",
                 {{"completed", s.jobs_done}, {"cancelled", s.jobs_cancelled}, {"failed", s.jobs_failed},
                  {"prompt_tokens_prefilled", s.tokens_prefilled}, {"prompt_tokens_cached", s.tokens_cached},
                  {"generated_tokens", s.tokens_generated}, {"decode_steps", s.decode_steps},
                  {"decode_rows", s.decode_rows}}}};
  }

  Json models(const httplib::Request& req) const {
    if (req.has_header("anthropic-version")) {
      Json m = {{"type", "model"}, {"id", api.model_name}, {"display_name", api.model_name}, {"created_at", "1970-01-01T00:00:00Z"}};
      return Json{{"data", Json::array({m})}, {"has_more", false}, {"first_id", api.model_name}, {"last_id", api.model_name}};
    }
    Json m = {{"id", api.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "dsv4"}, {"max_model_len", api.max_context}};
    return Json{{"object", "list"}, {"data", Json::array({m})}};
  }

  // Runs a handler, turning ApiError / Error into 4xx/5xx bodies in the API's shape.
  httplib::Server::Handler guarded(void (Impl::*fn)(const httplib::Request&, httplib::Response&)) {
    return [this, fn](const httplib::Request& req, httplib::Response& res) {
      try {
        (this->*fn)(req, res);
      } catch (const ApiError& e) {
        if (e.status() == 429) res.set_header("Retry-After", "1");
        send_error(req, res, e.status(), e.what(), e.param(), e.type());
      } catch (const Error& e) {
        send_error(req, res, 400, e.what());
      } catch (const std::bad_alloc& e) {
        send_error(req, res, 500, cat("out of memory while handling the request (", e.what(), ")"));
      } catch (const std::exception& e) {
        send_error(req, res, 500, std::string("internal error: ") + e.what());
      }
    };
  }

  void setup() {
    svr.set_payload_max_length(opt.max_body_bytes);
    svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (authorized(req)) return httplib::Server::HandlerResponse::Unhandled;
      send_error(req, res, 401, "missing or wrong API key (send 'Authorization: Bearer KEY' or 'x-api-key: KEY')");
      return httplib::Server::HandlerResponse::Handled;
    });
    svr.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      if (res.status == 404) send_error(req, res, 404, cat("no route for ", req.method, " ", req.path));
      else if (res.status == 413) send_error(req, res, 413, cat("the request body exceeds ", opt.max_body_bytes, " bytes"));
      else send_error(req, res, res.status, cat("HTTP error ", res.status));
    });
    svr.set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      send_error(req, res, 500, "internal error: " + what);
    });
    svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(dump(health()), "application/json");
    });
    svr.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
      res.set_content(dump(models(req)), "application/json");
    });
    svr.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
      if (req.matches[1] != api.model_name) return send_error(req, res, 404, cat("model '", req.matches[1].str(), "' not found"));
      res.set_content(dump(models(req)["data"][0]), "application/json");
    });
    svr.Post("/v1/chat/completions", guarded(&Impl::chat));
    svr.Post("/v1/completions", guarded(&Impl::completions));
    svr.Post("/v1/messages", guarded(&Impl::messages));
    svr.Post("/v1/messages/count_tokens", guarded(&Impl::count_tokens));
    svr.Post("/v1/responses", guarded(&Impl::responses));
  }

  void count_tokens(const httplib::Request& req, httplib::Response& res) {
    res.set_content(dump(Json{{"input_tokens", map_request(req.body, [&](const Json& b) { return count_message_tokens(b, tok, api); })}}), "application/json");
  }
};

HttpServer::HttpServer(Worker& worker, const Tokenizer& tok, ApiConfig api, ServerOptions options)
    : impl_(std::make_unique<Impl>(worker, tok, std::move(api), std::move(options))) {
  impl_->setup();
}

HttpServer::~HttpServer() { stop(); }

int HttpServer::bind() {
  auto& i = *impl_;
  if (i.opt.port == 0) {
    i.port = i.svr.bind_to_any_port(i.opt.host.c_str());
  } else {
    i.port = i.svr.bind_to_port(i.opt.host.c_str(), i.opt.port) ? i.opt.port : -1;
  }
  if (i.port <= 0) throw Error(cat("cannot listen on ", i.opt.host, ":", i.opt.port, " (in use, or not a local address?)"));
  return i.port;
}

void HttpServer::listen() { impl_->svr.listen_after_bind(); }
void HttpServer::stop() { impl_->svr.stop(); }
bool HttpServer::running() const { return impl_->svr.is_running(); }

void HttpServer::drain_streams(std::chrono::milliseconds max) {
  const auto until = std::chrono::steady_clock::now() + max;
  while (impl_->open_streams > 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

}  // namespace dsv4::server
