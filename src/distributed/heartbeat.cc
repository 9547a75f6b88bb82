#include "distributed/heartbeat.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"
#include "distributed/mpi_wait.h"
#include "distributed/wire.h"

namespace dsv4::dist {

double heartbeat_interval(double timeout_s) { return std::min(timeout_s / 4, 30.0); }

Heartbeat::Heartbeat(int n_ranks, double timeout_s)
    : timeout_s_(timeout_s), interval_s_(heartbeat_interval(timeout_s)) {
  const double start = now_s();
  for (int r = 1; r < n_ranks; ++r) {
    Peer p;
    p.rank = r;
    p.sent_at = start;  // the first ping after one interval (agree() was the last contact)
    peers_.push_back(p);
  }
  if (!peers_.empty()) thread_ = std::thread([this] { loop(); });
}

void Heartbeat::loop() {
  // Checks often enough to notice a silent rank soon after the timeout, rarely enough to cost
  // nothing (one wake-up per second at the default timeout).
  const auto tick = std::chrono::duration<double>(std::clamp(timeout_s_ / 20, 0.05, 1.0));
  std::unique_lock<std::mutex> lk(wake_);
  while (!cv_.wait_for(lk, tick, [this] { return stopping_; })) {
    std::lock_guard<std::mutex> mpi(mpi_);
    beat();
  }
}

void Heartbeat::beat() {
  const double now = now_s();
  for (Peer& p : peers_) {
    if (p.waiting) {
      int done = 0;
      MPI_Testall(2, p.reqs, &done, MPI_STATUSES_IGNORE);
      if (done) {
        p.waiting = false;
      } else if (now - p.sent_at > timeout_s_) {
        abort_job(cat("expert parallelism: rank ", p.rank, " stopped answering: no reply to rank 0's heartbeat within ",
                      timeout_s_, " s (it died or hangs)"));
      }
    }
    if (p.waiting || now - p.sent_at < interval_s_) continue;
    p.ping[0] = wire::kOpPing;
    p.ping[1] += 1;
    p.sent_at = now;
    p.waiting = true;
    MPI_Irecv(&p.pong, 1, MPI_INT64_T, p.rank, wire::kTagPong, MPI_COMM_WORLD, &p.reqs[1]);
    MPI_Isend(p.ping, 2, MPI_INT64_T, p.rank, wire::kTagHeader, MPI_COMM_WORLD, &p.reqs[0]);
  }
}

void Heartbeat::stop() {
  {
    std::lock_guard<std::mutex> lk(wake_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> mpi(mpi_);
  std::vector<MPI_Request> pending;
  for (Peer& p : peers_)
    if (p.waiting) pending.insert(pending.end(), {p.reqs[0], p.reqs[1]});
  if (!pending.empty()) wait_all(&pending, timeout_s_, "expert parallelism: waiting for the last heartbeat replies");
}

}  // namespace dsv4::dist
