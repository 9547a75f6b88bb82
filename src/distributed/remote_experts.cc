#include "distributed/remote_experts.h"

#include <algorithm>
#include <vector>

#include "core/arena.h"
#include "core/error.h"
#include "distributed/mpi_wait.h"
#include "distributed/wire.h"

namespace dsv4::dist {

namespace {

// One remote rank's part of a MoE call: its experts that got rows, in increasing id, in waves.
struct Plan {
  int rank = 0;
  std::vector<int64_t> header;                 // wire header
  std::vector<std::vector<int>> wave_experts;  // experts of each wave
  std::vector<std::vector<float>> rows;        // per wave: weights then xq rows
};

// Splits `experts` (with row counts) into at most `waves` waves of about equal rows, in id order.
std::vector<std::vector<int>> split_waves(const std::vector<int>& experts, const RoutedBatch& b, int waves) {
  int64_t total = 0;
  for (int e : experts) total += int64_t(b.tok[e].size());
  std::vector<std::vector<int>> out;
  int64_t before = 0;
  for (int e : experts) {
    const size_t w = size_t(std::min<int64_t>(waves - 1, before * waves / std::max<int64_t>(total, 1)));
    if (out.size() <= w) out.emplace_back();
    out.back().push_back(e);
    before += int64_t(b.tok[e].size());
  }
  return out;
}

Plan plan_rank(const RoutedBatch& b, int rank, const ExpertRange& range, int waves, const SimLink& link) {
  const int64_t D = b.config->dim;
  Plan p;
  p.rank = rank;
  std::vector<int> active;
  for (int e = range.begin; e < range.end; ++e)
    if (!b.tok[e].empty()) active.push_back(e);
  p.wave_experts = split_waves(active, b, waves);
  p.header = {wire::kOpExperts, b.layer, int64_t(b.numerics), int64_t(p.wave_experts.size()), int64_t(active.size()),
              int64_t(now_s() * 1e9), int64_t(link.bytes_per_s), int64_t(link.latency_s * 1e9)};
  for (size_t w = 0; w < p.wave_experts.size(); ++w) {
    std::vector<float> buf;
    for (int e : p.wave_experts[w]) {
      p.header.insert(p.header.end(), {e, int64_t(b.tok[e].size()), int64_t(w)});
      buf.insert(buf.end(), b.wgt[e].begin(), b.wgt[e].end());
    }
    for (int e : p.wave_experts[w])
      for (int64_t i : b.tok[e]) buf.insert(buf.end(), b.xq + i * D, b.xq + (i + 1) * D);
    p.rows.push_back(std::move(buf));
  }
  return p;
}

// Expert e's rows of Y, computed here.
void run_local_expert(const RoutedBatch& b, int e) {
  ArenaScope scope;
  const int64_t D = b.config->dim, m = int64_t(b.tok[e].size());
  Scratch<float> xg(size_t(m * D));
  for (int64_t r = 0; r < m; ++r) std::copy(b.xq + b.tok[e][size_t(r)] * D, b.xq + (b.tok[e][size_t(r)] + 1) * D, xg.begin() + r * D);
  expert_rows(*b.config, b.numerics, b.weights->experts[size_t(e)], xg.data(), m, b.wgt[e].data(),
              b.Y + b.first[e] * D, b.pool);
}

// Echoes a heartbeat's sequence number to rank 0.
void answer_ping(int64_t seq, double timeout_s) {
  MPI_Request req;
  MPI_Isend(&seq, 1, MPI_INT64_T, 0, wire::kTagPong, MPI_COMM_WORLD, &req);
  wait_one(&req, timeout_s, "expert parallelism: answering rank 0's heartbeat");
}

}  // namespace

void RemoteExperts::run(const RoutedBatch& b, const std::function<void()>& local) {
  // MPI calls only with the lock (heartbeat.h); the compute in between leaves it to the heartbeat,
  // so that expert ranks hear from rank 0 however long its own share takes.
  std::unique_lock<std::mutex> turn(*mpi_);
  const int64_t D = b.config->dim;
  std::vector<Plan> plans;
  for (int r = 1; r < n_ranks_; ++r) {
    Plan p = plan_rank(b, r, expert_share(n_experts_, r, n_ranks_), std::clamp(options_.waves, 1, wire::kMaxWaves),
                       link_);
    if (!p.wave_experts.empty()) plans.push_back(std::move(p));
  }
  // Receives straight into Y (a wave's experts are consecutive ids: their rows are one range),
  // posted before anything is sent.
  std::vector<MPI_Request> recvs, sends;
  for (const Plan& p : plans)
    for (size_t w = 0; w < p.wave_experts.size(); ++w) {
      const int64_t r0 = b.first[p.wave_experts[w].front()], r1 = b.first[p.wave_experts[w].back() + 1];
      recvs.emplace_back();
      MPI_Irecv(b.Y + r0 * D, int((r1 - r0) * D), MPI_FLOAT, p.rank, wire::kTagOutputs + int(w), MPI_COMM_WORLD,
                &recvs.back());
      stats_.bytes_received += double((r1 - r0) * D * 4);
    }
  std::vector<double> arrival(plans.size(), 0.0);  // simulated link: when each rank's outputs are in
  if (link_.on())
    for (size_t k = 0; k < plans.size(); ++k) {
      recvs.emplace_back();
      MPI_Irecv(&arrival[k], 1, MPI_DOUBLE, plans[k].rank, wire::kTagArrival, MPI_COMM_WORLD, &recvs.back());
    }
  for (const Plan& p : plans) {
    sends.emplace_back();
    MPI_Isend(p.header.data(), int(p.header.size()), MPI_INT64_T, p.rank, wire::kTagHeader, MPI_COMM_WORLD, &sends.back());
    stats_.bytes_sent += double(p.header.size() * 8);
    for (size_t w = 0; w < p.rows.size(); ++w) {
      sends.emplace_back();
      MPI_Isend(p.rows[w].data(), int(p.rows[w].size()), MPI_FLOAT, p.rank, wire::kTagRows + int(w), MPI_COMM_WORLD,
                &sends.back());
      stats_.bytes_sent += double(p.rows[w].size() * 4);
    }
  }
  // Own experts and the shared expert while the others work; transfers progress in between.
  const double t0 = now_s();
  const ExpertRange mine = expert_share(n_experts_, 0, n_ranks_);
  turn.unlock();
  for (int e = mine.begin; e < mine.end; ++e) {
    if (b.tok[e].empty()) continue;
    run_local_expert(b, e);
    std::lock_guard<std::mutex> again(*mpi_);
    progress(&sends);
    progress(&recvs);
  }
  local();
  turn.lock();
  const double t1 = now_s();
  wait_all(&recvs, options_.timeout_s, cat("expert parallelism: layer ", b.layer, " waiting for expert outputs"));
  wait_all(&sends, options_.timeout_s, cat("expert parallelism: layer ", b.layer, " sending expert inputs"));
  if (!arrival.empty()) sleep_until(*std::max_element(arrival.begin(), arrival.end()));
  stats_.local_s += t1 - t0;
  stats_.wait_s += now_s() - t1;
  stats_.calls += 1;
  stats_.token_layers += b.n;
}

EpStats serve_requests(const Model& model, const EpOptions& options) {
  const ModelConfig& c = model.config();
  const int64_t D = c.dim;
  EpStats st;
  for (;;) {
    MPI_Status status;
    // Rank 0 pings while idle (heartbeat.h): silence this long means it died or hangs.
    wait_message(0, wire::kTagHeader, &status, options.timeout_s,
                 "expert parallelism: rank 0 died or hangs: no request or heartbeat from it");
    int count = 0;
    MPI_Get_count(&status, MPI_INT64_T, &count);
    std::vector<int64_t> h(size_t(std::max(count, 2)));
    MPI_Recv(h.data(), count, MPI_INT64_T, 0, wire::kTagHeader, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    if (h[0] == wire::kOpStop) break;
    if (h[0] == wire::kOpPing) {
      answer_ping(h[1], options.timeout_s);
      continue;
    }
    const int layer = int(h[1]), waves = int(h[3]), entries = int(h[4]);
    if (h[0] != wire::kOpExperts || count != wire::kHeaderFields + wire::kEntryFields * entries || layer < 0 ||
        layer >= c.n_layers + c.n_mtp_layers || waves < 1 || waves > wire::kMaxWaves)
      abort_job("expert parallelism: malformed request from rank 0");
    const MoeWeights& mw = layer < c.n_layers ? model.weights().layers[size_t(layer)].ffn
                                              : model.weights().mtp[size_t(layer - c.n_layers)].block.ffn;
    const Numerics numerics = Numerics(h[2]);
    const double sent_at = double(h[5]) * 1e-9;
    SimLink link;
    link.bytes_per_s = double(h[6]);
    link.latency_s = double(h[7]) * 1e-9;
    // Per wave: its entries and its row count.
    const size_t nw = static_cast<size_t>(waves);
    std::vector<std::vector<std::pair<int, int64_t>>> wave(nw);
    std::vector<int64_t> rows(nw, 0);
    for (int k = 0; k < entries; ++k) {
      const int64_t* en = h.data() + wire::kHeaderFields + wire::kEntryFields * k;
      const int e = int(en[0]), w = int(en[2]);
      if (w < 0 || w >= waves || !model.expert_range().holds(e) || e >= c.n_routed_experts || en[1] <= 0)
        abort_job(cat("expert parallelism: rank 0 asked for expert ", e, ", which this rank does not hold"));
      wave[size_t(w)].emplace_back(e, en[1]);
      rows[size_t(w)] += en[1];
    }
    std::vector<std::vector<float>> in(nw), out(nw);
    std::vector<MPI_Request> recvs(nw), sends;
    for (int w = 0; w < waves; ++w) {
      in[size_t(w)].resize(size_t(rows[size_t(w)] * (D + 1)));
      out[size_t(w)].resize(size_t(rows[size_t(w)] * D));
      MPI_Irecv(in[size_t(w)].data(), int(in[size_t(w)].size()), MPI_FLOAT, 0, wire::kTagRows + w, MPI_COMM_WORLD,
                &recvs[size_t(w)]);
    }
    // Wave w computes while wave w+1's rows arrive and wave w−1's outputs travel back.
    double rows_in = sent_at + link.latency_s, link_free = 0, arrival = 0;  // simulated link only
    for (int w = 0; w < waves; ++w) {
      const double t0 = now_s();
      wait_one(&recvs[size_t(w)], options.timeout_s, cat("expert parallelism: layer ", layer, " waiting for rows"));
      if (link.on()) sleep_until(rows_in += link.transfer_s(double(in[size_t(w)].size() * 4)));
      const double t1 = now_s();
      const float* wgt = in[size_t(w)].data();
      const float* x = wgt + rows[size_t(w)];
      float* y = out[size_t(w)].data();
      for (const auto& [e, m] : wave[size_t(w)]) {
        ArenaScope scope;
        expert_rows(c, numerics, mw.experts[size_t(e)], x, m, wgt, y, model.thread_pool());
        wgt += m, x += m * D, y += m * D;
        progress(&sends);
      }
      sends.emplace_back();
      MPI_Isend(out[size_t(w)].data(), int(out[size_t(w)].size()), MPI_FLOAT, 0, wire::kTagOutputs + w, MPI_COMM_WORLD,
                &sends.back());
      st.remote_idle_s += t1 - t0;
      st.remote_compute_s += now_s() - t1;
      if (link.on()) {  // the outputs leave when computed and the link is free
        link_free = std::max(now_s(), link_free) + link.transfer_s(double(out[size_t(w)].size() * 4));
        arrival = link_free + link.latency_s;
      }
    }
    st.remote_span_s += (link.on() ? arrival : now_s()) - sent_at;
    if (link.on()) {
      sends.emplace_back();
      MPI_Isend(&arrival, 1, MPI_DOUBLE, 0, wire::kTagArrival, MPI_COMM_WORLD, &sends.back());
    }
    wait_all(&sends, options.timeout_s, cat("expert parallelism: layer ", layer, " returning outputs"));
  }
  return st;
}

}  // namespace dsv4::dist
