#include "server/connection.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <system_error>

namespace dsv4::server {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

// How long a write may still wait once the server is stopping (the last events of a response
// are worth a moment, a client that does not read is not).
constexpr seconds kStopGrace{2};
// Waits are cut into slices so that a stopping server is noticed promptly.
constexpr milliseconds kSlice{100};
// Threads beyond the minimum end after this long without a connection.
constexpr seconds kIdleThread{10};

// One HTTP connection's socket as an httplib Stream, with the limits of ConnectionLimits.
class SocketStream final : public httplib::Stream {
 public:
  SocketStream(int fd, const ConnectionLimits& limits, std::function<bool()> stopping)
      : fd_(fd), lim_(limits), stopping_(std::move(stopping)) {}

  bool is_readable() const override { return pos_ < len_ || wait(POLLIN, read_until(), true); }
  bool is_writable() const override { return wait(POLLOUT, Clock::now() + seconds(lim_.write_timeout_s), false); }

  ssize_t read(char* ptr, size_t size) override {
    if (pos_ == len_) {
      if (!wait(POLLIN, read_until(), true)) return -1;
      const ssize_t n = recv_some(buf_, sizeof buf_);
      if (n <= 0) return n;
      pos_ = 0, len_ = size_t(n);
    }
    const size_t n = std::min(size, len_ - pos_);
    std::memcpy(ptr, buf_ + pos_, n);
    pos_ += n;
    return ssize_t(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    const Clock::time_point until = Clock::now() + seconds(lim_.write_timeout_s);
    size_t done = 0;
    while (done < size) {
      if (!wait(POLLOUT, until, false)) return -1;
      const ssize_t n = ::send(fd_, ptr + done, size - done, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
      if (n <= 0) return -1;
      done += size_t(n);
    }
    return ssize_t(size);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override { address(::getpeername, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { address(::getsockname, ip, port); }
  socket_t socket() const override { return fd_; }

  // Waits (keep-alive) for the next request's first bytes; starts its deadline.
  bool wait_for_request() {
    if (pos_ == len_ && !wait(POLLIN, Clock::now() + seconds(lim_.keep_alive_timeout_s), true)) return false;
    deadline_ = Clock::now() + seconds(lim_.request_deadline_s);
    return true;
  }

  // The peer has closed its side (FIN) or reset the connection.
  bool peer_gone() const {
    pollfd p{fd_, short(POLLRDHUP), 0};
    return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
  }

 private:
  Clock::time_point read_until() const { return std::min(deadline_, Clock::now() + seconds(lim_.read_timeout_s)); }

  // Waits until `events` are ready, `until` passes, or the server stops (reads give up at once,
  // writes after kStopGrace).
  bool wait(short events, Clock::time_point until, bool stop_aborts) const {
    bool stop_seen = false;
    for (;;) {
      const Clock::time_point now = Clock::now();
      if (!stop_seen && stopping_()) {
        if (stop_aborts) return false;
        stop_seen = true;
        until = std::min(until, now + kStopGrace);
      }
      if (now >= until) return false;
      const auto slice = std::min<Clock::duration>(until - now, kSlice);
      pollfd p{fd_, events, 0};
      const int r = ::poll(&p, 1, int(std::chrono::duration_cast<milliseconds>(slice).count()) + 1);
      if (r > 0) return true;
      if (r < 0 && errno != EINTR) return false;
    }
  }

  ssize_t recv_some(char* p, size_t n) {
    for (;;) {
      const ssize_t r = ::recv(fd_, p, n, MSG_DONTWAIT);
      if (r >= 0 || (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) return r;
      if (!wait(POLLIN, read_until(), true)) return -1;
    }
  }

  template <class Fn>
  void address(Fn fn, std::string& ip, int& port) const {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    ip.clear();
    port = -1;
    if (fn(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) return;
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    if (getnameinfo(reinterpret_cast<sockaddr*>(&a), len, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
      return;
    ip = host;
    port = std::atoi(serv);
  }

  const int fd_;
  const ConnectionLimits lim_;
  const std::function<bool()> stopping_;
  Clock::time_point deadline_ = Clock::now();
  char buf_[4096];
  size_t pos_ = 0, len_ = 0;
};

// The stream of the connection this thread is serving (handlers run on that thread).
thread_local const SocketStream* t_stream = nullptr;

}  // namespace

// ---- ConnectionThreads ----------------------------------------------------------------------

void ConnectionThreads::enqueue(std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(mu_);
  join_finished();
  tasks_.push_back(std::move(fn));
  if (size_t(idle_) < tasks_.size() && int(threads_.size()) < max_) {
    threads_.emplace_back();
    auto self = std::prev(threads_.end());
    try {
      *self = std::thread([this, self] { loop(self); });  // `self` is used under mu_, held here
    } catch (const std::system_error&) {
      threads_.erase(self);  // no thread to be had now: the task waits for a running one
    }
  }
  cv_.notify_one();
}

void ConnectionThreads::shutdown() {
  std::unique_lock<std::mutex> lock(mu_);
  stop_ = true;
  cv_.notify_all();
  while (!threads_.empty()) {
    join_finished();
    if (!threads_.empty()) cv_.wait_for(lock, kSlice);
  }
}

void ConnectionThreads::loop(std::list<std::thread>::iterator self) {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    ++idle_;
    const bool woken = cv_.wait_for(lock, kIdleThread, [&] { return stop_ || !tasks_.empty(); });
    --idle_;
    if (!tasks_.empty()) {
      std::function<void()> task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      task();
      lock.lock();
      continue;
    }
    if (stop_) break;
    if (!woken && int(threads_.size() - finished_.size()) > min_) break;
  }
  finished_.push_back(self);
  cv_.notify_all();
}

void ConnectionThreads::join_finished() {
  for (auto it : finished_) {
    it->join();
    threads_.erase(it);
  }
  finished_.clear();
}

// ---- GuardedServer --------------------------------------------------------------------------

GuardedServer::GuardedServer(ConnectionLimits limits) : limits_(limits) {
  new_task_queue = [limits] { return new ConnectionThreads(limits.min_threads, limits.max_threads); };
  // Also what the library puts on accepted sockets (SO_RCVTIMEO / SO_SNDTIMEO).
  set_read_timeout(limits.read_timeout_s);
  set_write_timeout(limits.write_timeout_s);
  set_keep_alive_timeout(limits.keep_alive_timeout_s);
  set_keep_alive_max_count(size_t(limits.keep_alive_requests));
}

bool GuardedServer::client_gone() { return t_stream && t_stream->peer_gone(); }

bool GuardedServer::process_and_close_socket(socket_t sock) {
  bool ok = false;
  try {
    SocketStream strm(sock, limits_, [this] { return stopping(); });
    t_stream = &strm;
    for (int left = limits_.keep_alive_requests; left > 0 && !stopping(); --left) {
      if (!strm.wait_for_request()) break;
      bool closed = false;
      ok = process_request(strm, left == 1, closed, nullptr);
      if (!ok || closed) break;
    }
  } catch (...) {
    // Whatever escaped the handlers' own error handling (e.g. memory exhausted while parsing)
    // ends this connection only.
    ok = false;
  }
  t_stream = nullptr;
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
  return ok;
}

}  // namespace dsv4::server
