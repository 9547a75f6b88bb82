// Connection handling under cpp-httplib 0.11.4, which gives a handler neither its socket nor a
// bound on how long a client may take to send a request. GuardedServer replaces the library's
// per-connection loop (process_and_close_socket, a virtual meant for this) with one over its
// own socket stream, so that:
//  - a slow client cannot hold an HTTP thread for long: each request must arrive within a
//    deadline and without a long silence, idle keep-alive connections are closed after a few
//    seconds and after a number of requests;
//  - connections get threads on demand up to a cap (ConnectionThreads), so a few hundred slow
//    connections leave threads for everyone else (/health included);
//  - a handler can ask whether its client has gone (client_gone(): a non-streaming request is
//    then cancelled instead of running to max_tokens);
//  - stop() ends idle and half-received connections at once instead of after their timeouts.
#pragma once

#include <httplib.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <list>
#include <mutex>
#include <thread>

namespace dsv4::server {

struct ConnectionLimits {
  int request_deadline_s = 30;  // from a request's first byte to its last
  int read_timeout_s = 10;      // silence while a request is being received
  int write_timeout_s = 30;     // a client that does not read for this long is dropped
  int keep_alive_timeout_s = 2; // idle time before (and between) requests
  int keep_alive_requests = 100;
  int min_threads = 8, max_threads = 512;  // connections beyond max_threads wait for a thread
};

// An httplib task queue that starts threads as connections need them (up to `max`) and lets
// idle ones beyond `min` end. Every thread is joined: by a later enqueue or by shutdown().
class ConnectionThreads : public httplib::TaskQueue {
 public:
  ConnectionThreads(int min, int max) : min_(min), max_(max) {}
  ~ConnectionThreads() override { shutdown(); }
  void enqueue(std::function<void()> fn) override;
  void shutdown() override;  // runs what is queued, then joins every thread

 private:
  void loop(std::list<std::thread>::iterator self);
  void join_finished();  // with mu_ held

  const int min_, max_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  std::list<std::thread> threads_;
  std::vector<std::list<std::thread>::iterator> finished_;
  int idle_ = 0;
  bool stop_ = false;
};

class GuardedServer : public httplib::Server {
 public:
  explicit GuardedServer(ConnectionLimits limits);
  // From a handler (or content provider): whether the client of the request being handled has
  // closed its side of the connection or reset it.
  static bool client_gone();

 private:
  bool process_and_close_socket(socket_t sock) override;
  bool stopping() const { return svr_sock_ == INVALID_SOCKET; }
  ConnectionLimits limits_;
};

}  // namespace dsv4::server
