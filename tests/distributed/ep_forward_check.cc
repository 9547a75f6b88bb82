// Run under mpirun: the model API (not the CLI) with expert parallelism against one process, bit
// for bit — batched prefill of sequences of different lengths, batched decode mixed with a
// chunked prefill continuation, and the MTP block. Rank 0 also loads the whole model and runs
// every step both ways.
//
// usage: mpirun -np N ep_forward_check MODEL_DIR WAVES
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "distributed/expert_parallel.h"
#include "model/model.h"

using namespace dsv4;

namespace {

int g_checked = 0, g_failed = 0;

void same(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  ++g_checked;
  if (a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0) return;
  ++g_failed;
  size_t i = 0;
  while (i < std::min(a.size(), b.size()) && std::memcmp(&a[i], &b[i], sizeof(float)) == 0) ++i;
  std::printf("FAIL %s: sizes %zu / %zu, first difference at %zu\n", what.c_str(), a.size(), b.size(), i);
}

std::vector<int32_t> ids(int n, int salt, int vocab) {
  std::vector<int32_t> v;
  for (int i = 0; i < n; ++i) v.push_back(int32_t((i * 7919 + salt * 104729 + 11) % (vocab - 10) + 5));
  return v;
}

// The same steps on `m`; every output appended to `outs`.
void steps(const Model& m, std::vector<std::vector<float>>* outs) {
  const int V = int(m.config().vocab_size);
  std::vector<SequenceState> st;
  for (int k = 0; k < 3; ++k) st.push_back(m.new_sequence());
  std::vector<std::vector<int32_t>> prompt{ids(7, 1, V), ids(19, 2, V), ids(33, 3, V)};
  std::vector<ForwardOutput> o;
  std::vector<Model::BatchItem> items;
  for (int k = 0; k < 3; ++k) items.push_back({&st[size_t(k)], prompt[size_t(k)], LogitsMode::kAll});
  m.forward_batch(items, &o);  // batched prefill
  for (auto& x : o) outs->push_back(x.logits), outs->push_back(x.hidden);
  const std::vector<float> hidden0 = o[0].hidden;
  for (int t = 0; t < 4; ++t) {  // batched decode; sequence 2 continues its prompt in chunks of 5
    std::vector<std::vector<int32_t>> tok{ids(1, 10 + t, V), ids(1, 20 + t, V), ids(5, 30 + t, V)};
    items.clear();
    for (int k = 0; k < 3; ++k) items.push_back({&st[size_t(k)], tok[size_t(k)], LogitsMode::kLast});
    m.forward_batch(items, &o);
    for (auto& x : o) outs->push_back(x.logits);
  }
  MtpState ms = m.new_mtp_state();
  ForwardOutput mo;
  std::vector<int32_t> next(prompt[0].begin() + 1, prompt[0].end());
  m.mtp_forward(&ms, hidden0.data(), next, LogitsMode::kAll, &mo);
  outs->push_back(mo.logits);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: mpirun -np N %s MODEL_DIR WAVES\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  auto ep = dist::ExpertParallel::join({std::atoi(argv[2]), 60});
  std::unique_ptr<Model> part;
  std::string error;
  try {
    part = Model::load(dir, Numerics::kReference, nullptr, Residency::kMap, 0,
                       ep->my_experts(load_config(dir).n_routed_experts));
  } catch (const Error& e) {
    error = e.what();
  }
  ep->agree(part.get(), dir, error);
  if (ep->rank() > 0) {
    ep->serve(*part);
    return 0;
  }
  part->set_expert_executor(ep->executor());
  std::unique_ptr<Model> whole = Model::load(dir, Numerics::kReference, nullptr, Residency::kMap);
  std::vector<std::vector<float>> want, got;
  steps(*whole, &want);
  steps(*part, &got);
  for (size_t i = 0; i < want.size(); ++i) same(want[i], i < got.size() ? got[i] : std::vector<float>{}, cat("output ", i));
  ep->release();
  const dist::EpStats s = ep->stats();
  std::printf("%d ranks: %d outputs compared, %d differ; %lld MoE calls, %.0f bytes sent\n", ep->size(), g_checked,
              g_failed, (long long)s.calls, s.bytes_sent);
  return g_failed || (ep->size() > 1 && s.bytes_sent == 0) ? 1 : 0;
}
