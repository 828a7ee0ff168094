// LaunchEngramGate, LaunchEngramConv and LaunchEngramConvCommit against EngramModule::Forward
// (model/engram_module.h, hc_mult = 1), the CPU reference of the whole module. The test computes
// the module's value and key projections on the CPU (the same Dot as Forward, without the biases,
// which the gate adds), feeds them to the kernels as vk, and compares:
//   - u with the module's output when it has no conv (Y = u), and h + u;
//   - h + Y for a step of several items at different positions, with histories the CPU built;
//   - the rings after the commit with the CPU's EngramConvState, and a non-live item's ring with
//     itself before the step (untouched, bit for bit);
//   - a sequence fed in chunks over several steps (with commits between them) with the same
//     sequence in one step: bit for bit, since every output element is computed by the same
//     operations from the same values; and with the CPU's one-shot Forward.
// Tolerances (f32 results): atol = rtol = 1e-5 for u, 2e-5 for h and the rings. The kernels reduce
// in f32 trees where the CPU sums squares in double and dots in 8 f32 lanes; the differences are a
// few ulp of the sums (~1e-6 relative at H = 2560), and h + Y chains three reductions (two gate
// norms, the conv norm) and a K-tap conv whose outputs reach ~10.
// Shapes: H = 1, 19, 111, 2560; T = 1, 19, 111 and items of 1, 19 and 90 rows; K = 0 (no conv), 1
// (no history), 2, 3, 4 with dilations 1 to 3 (rings of 0 to 9 rows, longer and shorter than the
// chunks); with and without biases; and a tiny scale at which both eps values matter (gate
// FLT_EPSILON, conv 1e-5), which pins the kernels' constants to the module's.
#include "model/kernels/engram_ops.cuh"

#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "model/cpu_ops.h"
#include "model/cuda/device_buffer.h"
#include "model/engram_module.h"
#include "tests/gpu/cuda_ok.h"
#include "tests/gpu/device_expect_near.h"

namespace engram::kernels {
namespace {

using ::engram::testing::DownloadAsFloat;
using ::engram::testing::ExpectNearDevice;
using ::engram::testing::ToDevice;

constexpr double kTolU = 1e-5;
constexpr double kTolH = 2e-5;
constexpr int kDMem = 24;

std::vector<float> Random(size_t n, float lo, float hi, std::mt19937* rng) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(*rng);
  return v;
}

std::vector<double> AsDouble(const std::vector<float>& v) { return {v.begin(), v.end()}; }

EngramModule MakeModule(int H, int K, int dilation, bool with_bias, uint32_t seed,
                        float bias_scale = 0.3f) {
  std::mt19937 rng(seed);
  const float r = 1.0f / std::sqrt(static_cast<float>(kDMem));
  EngramModuleWeights w;
  w.hidden_size = H;
  w.hc_mult = 1;
  w.d_mem = kDMem;
  w.kernel_size = K;
  w.dilation = dilation;
  w.value_proj_weight = Random(static_cast<size_t>(H) * kDMem, -r, r, &rng);
  w.key_proj_weight = Random(static_cast<size_t>(H) * kDMem, -r, r, &rng);
  w.value_proj_bias =
      with_bias ? Random(H, -bias_scale, bias_scale, &rng) : std::vector<float>(H, 0.0f);
  w.key_proj_bias =
      with_bias ? Random(H, -bias_scale, bias_scale, &rng) : std::vector<float>(H, 0.0f);
  w.key_norm_weight = Random(H, 0.5f, 1.5f, &rng);
  w.query_norm_weight = Random(H, 0.5f, 1.5f, &rng);
  w.conv_weight = Random(static_cast<size_t>(H) * K, -0.7f, 0.7f, &rng);
  w.conv_norm_weight = K > 0 ? Random(H, 0.5f, 1.5f, &rng) : std::vector<float>();
  absl::StatusOr<EngramModule> module = EngramModule::Create(std::move(w));
  EXPECT_TRUE(module.ok()) << module.status();
  return *std::move(module);
}

// The module's small weights on the device; biases null when the module has none (all zeros).
struct DeviceModule {
  explicit DeviceModule(const EngramModuleWeights& w, bool with_bias)
      : value_bias(ToDevice(w.value_proj_bias)),
        key_bias(ToDevice(w.key_proj_bias)),
        key_norm(ToDevice(w.key_norm_weight)),
        query_norm(ToDevice(w.query_norm_weight)),
        conv_norm(ToDevice(w.conv_norm_weight)),
        conv_weight(ToDevice(w.conv_weight)),
        with_bias(with_bias) {}
  DeviceBuffer<float> value_bias, key_bias, key_norm, query_norm, conv_norm, conv_weight;
  bool with_bias;
};

// vk = [W_V e, W_K e] per row, without the biases: what the GEMM before the kernels produces, with
// the Dot that Forward uses (so v + b_V is Forward's value exactly).
std::vector<float> ProjectVk(const EngramModuleWeights& w, const std::vector<float>& rows, int T) {
  const int H = w.hidden_size, D = w.d_mem;
  std::vector<float> vk(static_cast<size_t>(T) * 2 * H);
  for (int t = 0; t < T; ++t) {
    const float* e = rows.data() + static_cast<size_t>(t) * D;
    for (int o = 0; o < H; ++o) {
      vk[static_cast<size_t>(t) * 2 * H + o] =
          Dot(w.value_proj_weight.data() + static_cast<size_t>(o) * D, e, D);
      vk[static_cast<size_t>(t) * 2 * H + H + o] =
          Dot(w.key_proj_weight.data() + static_cast<size_t>(o) * D, e, D);
    }
  }
  return vk;
}

// One item of a step: n rows of one sequence from position `start`.
struct StepItem {
  int start = 0;
  int n = 0;
  const float* rows = nullptr;    // host [n, D]
  const float* hidden = nullptr;  // host [n, H]
  float* ring = nullptr;          // device [R, H] (null when R = 0)
  bool live = true;
};

struct StepResult {
  DeviceBuffer<float> hidden;  // [T, H] after h += Y
  DeviceBuffer<float> u;       // [T, H]
  DeviceBuffer<float> normed;  // [T, H]
};

// Gate, conv and commit of one step on the GPU.
StepResult RunStep(const EngramModule& module, const DeviceModule& dm,
                   const std::vector<StepItem>& items) {
  const EngramModuleWeights& w = module.weights();
  const int H = w.hidden_size, D = w.d_mem;
  std::vector<float> rows, hidden;
  std::vector<int32_t> offsets{0}, starts, item_of_row;
  std::vector<float*> rings;
  std::vector<uint8_t> live;
  for (size_t i = 0; i < items.size(); ++i) {
    const StepItem& it = items[i];
    rows.insert(rows.end(), it.rows, it.rows + static_cast<size_t>(it.n) * D);
    hidden.insert(hidden.end(), it.hidden, it.hidden + static_cast<size_t>(it.n) * H);
    offsets.push_back(offsets.back() + it.n);
    starts.push_back(it.start);
    item_of_row.insert(item_of_row.end(), it.n, static_cast<int32_t>(i));
    rings.push_back(it.ring);
    live.push_back(it.live ? 1 : 0);
  }
  const int T = offsets.back();
  StepResult r;
  r.hidden = ToDevice(hidden);
  r.u = ToDevice(std::vector<float>(static_cast<size_t>(T) * H, 0.0f));
  r.normed = ToDevice(std::vector<float>(static_cast<size_t>(T) * H, 0.0f));
  DeviceBuffer<float> d_vk = ToDevice(ProjectVk(w, rows, T));
  DeviceBuffer<int32_t> d_offsets = ToDevice(offsets);
  DeviceBuffer<int32_t> d_starts = ToDevice(starts);
  DeviceBuffer<int32_t> d_item_of_row = ToDevice(item_of_row);
  DeviceBuffer<float*> d_rings = ToDevice(rings);
  DeviceBuffer<uint8_t> d_live = ToDevice(live);
  DeviceBuffer<float> d_hidden_before = ToDevice(hidden);

  EngramGateArgs gate;
  gate.vk = d_vk.get();
  gate.value_bias = dm.with_bias ? dm.value_bias.get() : nullptr;
  gate.key_bias = dm.with_bias ? dm.key_bias.get() : nullptr;
  gate.key_norm = dm.key_norm.get();
  gate.query_norm = dm.query_norm.get();
  gate.hidden = d_hidden_before.get();
  gate.T = T;
  gate.H = H;
  gate.u = r.u.get();
  absl::Status st = LaunchEngramGate(gate, nullptr);
  EXPECT_TRUE(st.ok()) << st;

  EngramConvArgs conv;
  conv.u = r.u.get();
  conv.hidden = r.hidden.get();
  conv.T = T;
  conv.H = H;
  conv.kernel_size = w.kernel_size;
  conv.dilation = w.dilation;
  conv.conv_norm = dm.conv_norm.get();
  conv.conv_weight = dm.conv_weight.get();
  conv.items = static_cast<int>(items.size());
  conv.row_offsets = d_offsets.get();
  conv.start_positions = d_starts.get();
  conv.item_of_row = d_item_of_row.get();
  conv.histories = d_rings.get();
  conv.normed = r.normed.get();
  st = LaunchEngramConv(conv, nullptr);
  EXPECT_TRUE(st.ok()) << st;
  st = LaunchEngramConvCommit(conv, d_live.get(), nullptr);
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return r;
}

// h + Y of the CPU module for n rows continuing `state` (null: a fresh sequence, not kept).
std::vector<double> CpuHPlusY(const EngramModule& module, const float* rows, const float* hidden,
                              int n, EngramConvState* state) {
  const int H = module.weights().hidden_size;
  std::vector<float> y(static_cast<size_t>(n) * H);
  const absl::Status st = module.Forward(rows, hidden, n, state, y.data());
  EXPECT_TRUE(st.ok()) << st;
  std::vector<double> want(y.size());
  for (size_t i = 0; i < y.size(); ++i) want[i] = hidden[i] + y[i];  // the caller's h += Y in f32
  return want;
}

// ---- The gate alone (no conv: Y = u) -----------------------------------------------------------

// (T, H, with_bias)
class EngramGateTest : public ::testing::TestWithParam<std::tuple<int, int, bool>> {};

TEST_P(EngramGateTest, MatchesModuleWithoutConv) {
  const auto [T, H, with_bias] = GetParam();
  std::mt19937 rng(T * 11 + H * 3 + with_bias);
  const EngramModule module = MakeModule(H, /*K=*/0, /*dilation=*/1, with_bias, rng());
  const DeviceModule dm(module.weights(), with_bias);
  const std::vector<float> rows = Random(static_cast<size_t>(T) * kDMem, -2.0f, 2.0f, &rng);
  const std::vector<float> hidden = Random(static_cast<size_t>(T) * H, -2.0f, 2.0f, &rng);

  std::vector<float> u(static_cast<size_t>(T) * H);
  ASSERT_TRUE(module.Forward(rows.data(), hidden.data(), T, nullptr, u.data()).ok());
  const std::vector<double> want_h = CpuHPlusY(module, rows.data(), hidden.data(), T, nullptr);

  StepItem item;
  item.n = T;
  item.rows = rows.data();
  item.hidden = hidden.data();
  const StepResult r = RunStep(module, dm, {item});
  const std::string what = absl::StrCat("T=", T, " H=", H);
  ExpectNearDevice(r.u.get(), AsDouble(u), kTolU, kTolU, what + " u");
  ExpectNearDevice(r.hidden.get(), want_h, kTolH, kTolH, what + " h");
}

INSTANTIATE_TEST_SUITE_P(Shapes, EngramGateTest,
                         ::testing::Combine(::testing::Values(1, 19, 111),
                                            ::testing::Values(1, 19, 111, 2560),
                                            ::testing::Bool()));

// ---- A step of several items -------------------------------------------------------------------

struct Conv {
  int K;
  int dilation;
};

// (H, conv, tiny): tiny scales the rows and biases by 1e-3 and the hidden state by 3e-4: the mean
// squares of k and h are then ~1e-7, near the gate's eps (FLT_EPSILON), and that of u ~1e-7, far
// below the conv's eps (1e-5), so a wrong eps in either place changes h by far more than the
// tolerance.
class EngramConvTest : public ::testing::TestWithParam<std::tuple<int, Conv, bool>> {};

TEST_P(EngramConvTest, StepOfItemsMatchesModule) {
  const auto [H, conv, tiny] = GetParam();
  std::mt19937 rng(H * 101 + conv.K * 7 + conv.dilation + tiny);
  const EngramModule module = MakeModule(H, conv.K, conv.dilation, /*with_bias=*/true, rng(),
                                         /*bias_scale=*/tiny ? 3e-4f : 0.3f);
  const DeviceModule dm(module.weights(), true);
  const float row_scale = tiny ? 1e-3f : 2.0f, hidden_scale = tiny ? 3e-4f : 2.0f;
  const int R = (conv.K - 1) * conv.dilation;

  // (prefix processed before this step, rows in this step, live).
  struct Spec {
    int prefix;
    int n;
    bool live;
  };
  const std::vector<Spec> specs = {{0, 1, true}, {5, 19, true}, {2, 90, false}, {40, 1, true}};
  std::vector<std::vector<float>> rows(specs.size()), hidden(specs.size());
  std::vector<EngramConvState> states(specs.size());
  std::vector<DeviceBuffer<float>> rings(specs.size());
  std::vector<std::vector<float>> rings_before(specs.size());
  std::vector<StepItem> items;
  for (size_t i = 0; i < specs.size(); ++i) {
    const Spec& s = specs[i];
    states[i] = module.NewConvState();
    if (s.prefix > 0) {  // history built by the CPU, then handed to the GPU's ring
      const std::vector<float> p_rows =
          Random(static_cast<size_t>(s.prefix) * kDMem, -row_scale, row_scale, &rng);
      const std::vector<float> p_hidden =
          Random(static_cast<size_t>(s.prefix) * H, -hidden_scale, hidden_scale, &rng);
      std::vector<float> y(static_cast<size_t>(s.prefix) * H);
      ASSERT_TRUE(
          module.Forward(p_rows.data(), p_hidden.data(), s.prefix, &states[i], y.data()).ok());
    }
    rings_before[i] = states[i].history;
    ASSERT_EQ(rings_before[i].size(), static_cast<size_t>(R) * H);
    rings[i] = ToDevice(rings_before[i]);
    rows[i] = Random(static_cast<size_t>(s.n) * kDMem, -row_scale, row_scale, &rng);
    hidden[i] = Random(static_cast<size_t>(s.n) * H, -hidden_scale, hidden_scale, &rng);
    StepItem item;
    item.start = s.prefix;
    item.n = s.n;
    item.rows = rows[i].data();
    item.hidden = hidden[i].data();
    item.ring = rings[i].get();
    item.live = s.live;
    items.push_back(item);
  }

  const StepResult r = RunStep(module, dm, items);

  std::vector<double> want_h;
  for (size_t i = 0; i < specs.size(); ++i) {
    const std::vector<double> h =
        CpuHPlusY(module, rows[i].data(), hidden[i].data(), specs[i].n, &states[i]);
    want_h.insert(want_h.end(), h.begin(), h.end());
  }
  const std::string what =
      absl::StrCat("H=", H, " K=", conv.K, " d=", conv.dilation, tiny ? " tiny" : "");
  ExpectNearDevice(r.hidden.get(), want_h, kTolH, kTolH, what + " h");
  for (size_t i = 0; i < specs.size(); ++i) {
    if (R == 0) continue;
    const std::string ring_what = absl::StrCat(what, " ring of item ", i);
    if (specs[i].live) {
      ExpectNearDevice(rings[i].get(), AsDouble(states[i].history), kTolH, kTolH, ring_what);
    } else {  // untouched, bit for bit
      EXPECT_EQ(DownloadAsFloat(rings[i].get(), rings_before[i].size()), rings_before[i])
          << ring_what;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, EngramConvTest,
                         ::testing::Combine(::testing::Values(1, 19, 111, 2560),
                                            ::testing::Values(Conv{1, 1}, Conv{2, 2}, Conv{3, 1},
                                                              Conv{4, 3}),
                                            ::testing::Bool()));

// ---- Chunks over several steps = one step ----------------------------------------------------

// (H, conv)
class EngramChunkTest : public ::testing::TestWithParam<std::tuple<int, Conv>> {};

TEST_P(EngramChunkTest, ChunkedStepsEqualOneStep) {
  const auto [H, conv] = GetParam();
  std::mt19937 rng(H * 13 + conv.K * 5 + conv.dilation);
  const EngramModule module = MakeModule(H, conv.K, conv.dilation, /*with_bias=*/true, rng());
  const DeviceModule dm(module.weights(), true);
  const int R = (conv.K - 1) * conv.dilation;
  const int L = 37;
  const std::vector<int> chunks = {1, 7, 19, 10};
  const std::vector<float> rows = Random(static_cast<size_t>(L) * kDMem, -2.0f, 2.0f, &rng);
  const std::vector<float> hidden = Random(static_cast<size_t>(L) * H, -2.0f, 2.0f, &rng);

  // A second sequence rides along in every step as a non-live item: its ring must not move.
  EngramConvState other = module.NewConvState();
  {
    const std::vector<float> p_rows = Random(3 * kDMem, -2.0f, 2.0f, &rng);
    const std::vector<float> p_hidden = Random(3 * static_cast<size_t>(H), -2.0f, 2.0f, &rng);
    std::vector<float> y(3 * static_cast<size_t>(H));
    ASSERT_TRUE(module.Forward(p_rows.data(), p_hidden.data(), 3, &other, y.data()).ok());
  }
  DeviceBuffer<float> other_ring = ToDevice(other.history);
  const std::vector<float> other_rows = Random(2 * kDMem, -2.0f, 2.0f, &rng);
  const std::vector<float> other_hidden = Random(2 * static_cast<size_t>(H), -2.0f, 2.0f, &rng);

  // Chunked: each step holds the next chunk (live) and the other sequence's two rows (not live).
  DeviceBuffer<float> ring = ToDevice(std::vector<float>(static_cast<size_t>(R) * H, 0.0f));
  std::vector<float> chunked;
  int at = 0;
  for (size_t c = 0; c < chunks.size(); ++c) {
    const int n = chunks[c];
    StepItem item;
    item.start = at;
    item.n = n;
    item.rows = rows.data() + static_cast<size_t>(at) * kDMem;
    item.hidden = hidden.data() + static_cast<size_t>(at) * H;
    item.ring = ring.get();
    StepItem rider;
    rider.start = 3;
    rider.n = 2;
    rider.rows = other_rows.data();
    rider.hidden = other_hidden.data();
    rider.ring = other_ring.get();
    rider.live = false;
    // The rider goes second in even steps, first in odd ones.
    const std::vector<StepItem> step =
        c % 2 == 0 ? std::vector<StepItem>{item, rider} : std::vector<StepItem>{rider, item};
    const StepResult r = RunStep(module, dm, step);
    const std::vector<float> h = DownloadAsFloat(r.hidden.get(), static_cast<size_t>(n + 2) * H);
    const size_t first = step[0].live ? 0 : 2 * static_cast<size_t>(H);
    chunked.insert(chunked.end(), h.begin() + first,
                   h.begin() + first + static_cast<size_t>(n) * H);
    at += n;
  }
  ASSERT_EQ(at, L);

  // One step.
  DeviceBuffer<float> one_ring = ToDevice(std::vector<float>(static_cast<size_t>(R) * H, 0.0f));
  StepItem whole;
  whole.n = L;
  whole.rows = rows.data();
  whole.hidden = hidden.data();
  whole.ring = one_ring.get();
  const StepResult one = RunStep(module, dm, {whole});
  const std::vector<float> one_shot = DownloadAsFloat(one.hidden.get(), static_cast<size_t>(L) * H);

  const std::string what = absl::StrCat("H=", H, " K=", conv.K, " d=", conv.dilation);
  EXPECT_EQ(chunked, one_shot) << what << ": chunked steps differ from one step";
  EXPECT_EQ(DownloadAsFloat(ring.get(), static_cast<size_t>(R) * H),
            DownloadAsFloat(one_ring.get(), static_cast<size_t>(R) * H))
      << what << ": rings differ";
  EXPECT_EQ(DownloadAsFloat(other_ring.get(), other.history.size()), other.history)
      << what << ": the non-live item's ring moved";
  // And both equal the CPU's one-shot forward.
  const std::vector<double> want = CpuHPlusY(module, rows.data(), hidden.data(), L, nullptr);
  ExpectNearDevice(one.hidden.get(), want, kTolH, kTolH, what + " one step vs CPU");
}

INSTANTIATE_TEST_SUITE_P(Shapes, EngramChunkTest,
                         ::testing::Combine(::testing::Values(19, 111),
                                            ::testing::Values(Conv{2, 1}, Conv{3, 2}, Conv{4, 3})));

TEST(EngramOpsArgsTest, RejectsBadArguments) {
  EngramGateArgs gate;
  gate.T = 1;
  gate.H = 4;
  EXPECT_EQ(LaunchEngramGate(gate, nullptr).code(), absl::StatusCode::kInvalidArgument);  // nulls
  gate.T = 0;
  EXPECT_TRUE(LaunchEngramGate(gate, nullptr).ok());
  gate.H = 0;
  EXPECT_EQ(LaunchEngramGate(gate, nullptr).code(), absl::StatusCode::kInvalidArgument);

  EngramConvArgs conv;
  conv.T = 1;
  conv.H = 4;
  EXPECT_EQ(LaunchEngramConv(conv, nullptr).code(), absl::StatusCode::kInvalidArgument);  // null u
  conv.kernel_size = 3;
  conv.dilation = 0;
  EXPECT_EQ(LaunchEngramConv(conv, nullptr).code(), absl::StatusCode::kInvalidArgument);
  conv.dilation = 1;
  conv.items = 0;  // rows but no items
  EXPECT_EQ(LaunchEngramConv(conv, nullptr).code(), absl::StatusCode::kInvalidArgument);
  conv.items = 1;
  EXPECT_EQ(LaunchEngramConvCommit(conv, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);  // null live and rings
  conv.T = 0;
  EXPECT_TRUE(LaunchEngramConv(conv, nullptr).ok());
  EXPECT_TRUE(LaunchEngramConvCommit(conv, nullptr, nullptr).ok());
  conv.T = 1;
  conv.kernel_size = 0;  // nothing to commit without a conv
  EXPECT_TRUE(LaunchEngramConvCommit(conv, nullptr, nullptr).ok());
}

}  // namespace
}  // namespace engram::kernels
