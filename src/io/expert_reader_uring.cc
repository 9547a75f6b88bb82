// DirectReader's io_uring engine: one thread keeps up to `depth` pieces in flight on a ring and
// finishes them as they complete (issue 16). Compiled only when liburing is found.
//
// The thread sleeps in the ring's wait, so new pieces must wake it there: an eventfd read stays
// armed on the ring, and submit() / the destructor write to the eventfd.
#include <liburing.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <thread>
#include <vector>

#include "core/error.h"
#include "io/expert_reader.h"

namespace dsv4 {

namespace {
constexpr uint64_t kWakeTag = ~uint64_t(0);  // user_data of the eventfd read
}

struct DirectReader::Uring {
  io_uring ring{};
  int depth = 0;
  struct Slot {  // one piece in flight
    Piece piece;
    size_t got = 0;
    bool busy = false;
  };
  std::vector<Slot> slots;
  int busy = 0;
  uint64_t wake_value = 0;
  bool wake_armed = false;
  std::thread thread;
};

void DirectReader::UringDeleter::operator()(Uring* u) const {
  io_uring_queue_exit(&u->ring);
  delete u;
}

bool DirectReader::uring_built() { return true; }

namespace {

// Queues the read of what is left of a slot's piece.
void prep_piece(io_uring* ring, const std::vector<int>& fds, DirectReader::Range r, size_t got, uint64_t tag) {
  io_uring_sqe* sqe = io_uring_get_sqe(ring);  // never null: at most depth + 1 entries are queued
  io_uring_prep_read(sqe, fds[size_t(r.file)], r.dst + got, unsigned(r.length - got), r.offset + got);
  io_uring_sqe_set_data64(sqe, tag);
}

}  // namespace

bool DirectReader::start_uring(int depth) {
  auto u = std::unique_ptr<Uring, UringDeleter>(new Uring);
  if (io_uring_queue_init(unsigned(depth) + 1, &u->ring, 0) < 0) {  // kernels or sandboxes without io_uring
    delete u.release();
    return false;
  }
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC);
  if (wake_fd_ < 0) return false;
  u->depth = depth;
  u->slots.resize(size_t(depth));
  uring_ = std::move(u);
  uring_->thread = std::thread([this] {
    Uring& u = *uring_;
    for (;;) {
      std::vector<int> fds;
      bool stopping = false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        for (const File& f : files_) fds.push_back(f.fd);
        for (size_t i = 0; i < u.slots.size() && !queue_.empty(); ++i) {
          if (u.slots[i].busy) continue;
          u.slots[i] = {std::move(queue_.front()), 0, true};
          queue_.pop_front();
          ++u.busy;
          started_locked();
          prep_piece(&u.ring, fds, u.slots[i].piece.range, 0, i);
        }
        stopping = stop_ && queue_.empty() && u.busy == 0;
      }
      if (stopping) return;
      if (!u.wake_armed) {
        io_uring_sqe* sqe = io_uring_get_sqe(&u.ring);
        io_uring_prep_read(sqe, wake_fd_, &u.wake_value, sizeof u.wake_value, 0);
        io_uring_sqe_set_data64(sqe, kWakeTag);
        u.wake_armed = true;
      }
      io_uring_submit_and_wait(&u.ring, 1);
      io_uring_cqe* cqe;
      while (io_uring_peek_cqe(&u.ring, &cqe) == 0) {
        const uint64_t tag = io_uring_cqe_get_data64(cqe);
        const int res = cqe->res;
        io_uring_cqe_seen(&u.ring, cqe);
        if (tag == kWakeTag) {
          u.wake_armed = false;
          continue;
        }
        Uring::Slot& s = u.slots[size_t(tag)];
        const Range& r = s.piece.range;
        const bool short_read = res > 0 && s.got + size_t(res) < r.length && (s.got + size_t(res)) % kAlign == 0;
        if (res == -EINTR || res == -EAGAIN || short_read) {
          if (res > 0) s.got += size_t(res);
          prep_piece(&u.ring, fds, r, s.got, tag);  // the rest of a short read, or a retry
          continue;
        }
        if (res > 0) s.got += size_t(res);
        const std::string error = piece_error(r, s.got, res < 0 ? -res : 0);
        std::shared_ptr<Job> job = std::move(s.piece.job);
        s.busy = false;
        {
          std::lock_guard<std::mutex> lock(mu_);
          --u.busy;
          ended_locked(error.empty() ? r.length : 0);
        }
        finish_piece(job, error);
      }
    }
  });
  return true;
}

void DirectReader::stop_uring() {
  if (!uring_) return;
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(wake_fd_, &one, sizeof one);
  uring_->thread.join();
  uring_.reset();
  ::close(wake_fd_);
}

}  // namespace dsv4
