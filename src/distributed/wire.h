// The messages between rank 0 and an expert rank, per MoE call (all on MPI_COMM_WORLD):
//   header  (kTagHeader, int64): kOpExperts, layer, numerics, waves, entries, send time (ns),
//            simulated link bytes/s and latency (ns) (0: none, sim_link.h), then per entry
//            {expert id, rows, wave}; entries in increasing expert id, waves non-decreasing.
//   rows    (kTagRows + w, float) per wave w: the routing weights of the wave's rows, then the
//            rows of xq [rows, dim], expert by expert, each expert's tokens in token order.
//   outputs (kTagOutputs + w, float) per wave w, back to rank 0: the experts' outputs [rows, dim]
//            in the same order — exactly the wave's rows of the caller's Y.
//   arrival (kTagArrival, double) after the outputs, only with a simulated link: when the last
//            outputs would have arrived.
//   stop    (kTagHeader): kOpStop; the expert rank answers with its statistics (kTagStats).
//   ping    (kTagHeader): kOpPing, sequence — rank 0's heartbeat while idle (heartbeat.h); the
//            expert rank echoes the sequence (kTagPong, int64).
#pragma once

#include <cstdint>

namespace dsv4::dist::wire {

constexpr int kTagHeader = 1, kTagStats = 2, kTagArrival = 4, kTagPong = 5, kTagRows = 100, kTagOutputs = 10000;
constexpr int64_t kOpExperts = 1, kOpStop = 2, kOpPing = 3;
constexpr int kHeaderFields = 8, kEntryFields = 3;
constexpr int kMaxWaves = 64;

}  // namespace dsv4::dist::wire
