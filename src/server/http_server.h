// The HTTP front end of `dsv4 serve` on cpp-httplib: routes, API-key check, body limits, JSON
// errors in each API's own shape, and SSE streaming. HTTP threads only parse, validate, submit
// to the Worker and format its output; a client that goes away cancels its job (streaming and
// non-streaming alike: connection.h notices the closed socket). Slow clients are bounded by
// ConnectionLimits.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "server/api_common.h"
#include "server/connection.h"
#include "server/worker.h"

namespace dsv4::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;               // 0 = any free port (see bind())
  std::string api_key;           // "" = no authentication
  size_t max_body_bytes = 8 << 20;
  ConnectionLimits connections;
  std::string test_completions;  // --test-completions FILE (needs ApiConfig::test_hooks)
};

class HttpServer {
 public:
  HttpServer(Worker& worker, const Tokenizer& tok, ApiConfig api, ServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds the socket; returns the port. Throws Error when it cannot.
  int bind();
  // Serves until stop() (from any thread).
  void listen();
  // Ends listen(): the listening socket closes, connections end once their response is out.
  // Acts only while listen() runs (see running()).
  void stop();
  bool running() const;
  // Waits up to `max` for the streamed responses in flight to finish writing: stop() ends a
  // chunked response where it stands, so a shutdown first lets their last events go out.
  void drain_streams(std::chrono::milliseconds max);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsv4::server
