// Liveness while rank 0 is idle (docs/distributed.md, "Failure"). Expert ranks hear from rank 0
// only when a MoE layer runs; a server with no traffic sends nothing. So rank 0 runs a thread
// that pings every expert rank after `interval` without a ping, and each expert rank answers:
// - an expert rank that hears nothing from rank 0 for the timeout ends the job (rank 0 gone);
// - rank 0 ends the job when an expert rank leaves a ping unanswered for the timeout.
// The job uses MPI_THREAD_SERIALIZED: rank 0's MPI calls, the model's and this thread's, take
// turns through `mpi()`.
#pragma once

#include <mpi.h>

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace dsv4::dist {

// How often rank 0 pings an idle expert rank: well inside the timeout, at most every 30 s.
double heartbeat_interval(double timeout_s);

class Heartbeat {
 public:
  Heartbeat(int n_ranks, double timeout_s);  // rank 0; starts pinging ranks 1..n-1
  ~Heartbeat() { stop(); }
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

  // Ends the thread and collects the last answers, so nothing is in flight (before the stop
  // message). Idempotent.
  void stop();

  // Held around every other MPI call of rank 0 while this runs.
  std::mutex& mpi() { return mpi_; }

 private:
  struct Peer {
    int rank = 0;
    int64_t ping[2] = {0, 0}, pong = 0;  // message buffers: {kOpPing, sequence}, the echoed sequence
    MPI_Request reqs[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};  // ping sent, answer received
    bool waiting = false;
    double sent_at = 0;
  };
  void loop();
  void beat();  // with mpi_ held: check answers, ping who is due

  double timeout_s_, interval_s_;
  std::vector<Peer> peers_;
  std::mutex mpi_, wake_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace dsv4::dist
