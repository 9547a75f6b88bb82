#include "distributed/mpi_wait.h"

#include <time.h>

#include <chrono>
#include <cstdio>

#include "core/error.h"

namespace dsv4::dist {

namespace {

// A short spin catches replies that are already on their way; then sleeps grow from 20 µs to
// 1 ms (a 4 ms scheduler tick is the alternative cost of yielding: machine notes).
class Backoff {
 public:
  void pause() {
    if (now_s() - start_ < 50e-6) return;
    timespec ts{0, long(sleep_ns_)};
    nanosleep(&ts, nullptr);
    if (sleep_ns_ < 1'000'000) sleep_ns_ *= 2;
  }
  double waited() const { return now_s() - start_; }

 private:
  double start_ = now_s();
  double sleep_ns_ = 20'000;
};

}  // namespace

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void abort_job(const std::string& what) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::fprintf(stderr, "dsv4: error: (rank %d) %s\n", rank, what.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

void wait_all(std::vector<MPI_Request>* reqs, double timeout_s, const std::string& what) {
  Backoff b;
  for (;;) {
    int done = 0;
    MPI_Testall(int(reqs->size()), reqs->data(), &done, MPI_STATUSES_IGNORE);
    if (done) return;
    if (b.waited() > timeout_s)
      abort_job(what + ": no answer within " + std::to_string(int(timeout_s)) + " s (a rank died or hangs)");
    b.pause();
  }
}

void wait_one(MPI_Request* req, double timeout_s, const std::string& what) {
  std::vector<MPI_Request> one{*req};
  wait_all(&one, timeout_s, what);
  *req = one[0];
}

void wait_message(int source, int tag, MPI_Status* status, double timeout_s, const std::string& what) {
  Backoff b;
  for (;;) {
    int flag = 0;
    MPI_Iprobe(source, tag, MPI_COMM_WORLD, &flag, status);
    if (flag) return;
    if (b.waited() > timeout_s) abort_job(cat(what, ": nothing for ", timeout_s, " s"));
    b.pause();
  }
}

void progress(std::vector<MPI_Request>* reqs) {
  if (reqs->empty()) return;
  int done = 0;
  MPI_Testall(int(reqs->size()), reqs->data(), &done, MPI_STATUSES_IGNORE);
}

}  // namespace dsv4::dist
