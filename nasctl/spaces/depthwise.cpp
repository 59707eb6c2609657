// nasctl's CPU kernel for the weight gradient of a stride-1 depthwise convolution on NHWC memory:
//   dW[c, 0, i, j] = sum over b, ho, wo of g[b, ho, wo, c] * x[b, ho + i - p, wo + j - p, c]   (x = 0 outside).
// oneDNN computes it for 5x5 kernels on its generic path; this loop keeps one kernel row's K sums of
// 16 channels in vector registers while it walks an output row. Built on first use (nasctl/spaces/kernels.py).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

constexpr int64_t V = 16;  // channels per block: one AVX-512 register of floats

// acc[j * C + c] += sum over wo of g[wo * C + c] * x[(wo + j) * C + c], for the channels c0..c0+V of one row pair.
template <int K>
inline void row_block(const float* __restrict g, const float* __restrict x, float* __restrict acc, int64_t Wo,
                      int64_t C, int64_t c0) {
  float s[K][V] = {};
  for (int64_t wo = 0; wo < Wo; ++wo) {
    const float* gv = g + wo * C + c0;
    for (int j = 0; j < K; ++j) {
      const float* xv = x + (wo + j) * C + c0;
#pragma omp simd
      for (int64_t c = 0; c < V; ++c) s[j][c] += gv[c] * xv[c];
    }
  }
  for (int j = 0; j < K; ++j)
    for (int64_t c = 0; c < V; ++c) acc[j * C + c0 + c] += s[j][c];
}

// The sums of the output rows [begin, end) (row r = b * Ho + ho) into acc (K * K * C, kernel-position major).
template <int K>
void rows(const float* gp, const float* xp, float* acc0, int64_t begin, int64_t end, int64_t H, int64_t W, int64_t C,
          int64_t Ho, int64_t Wo, int64_t p) {
  const int64_t Wp = Wo + K - 1;  // an input row with its zero padding, as the kernel row reads it
  std::vector<float> pad(Wp * C, 0.f);
  const int64_t n = std::min<int64_t>(W, Wp - p);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t b = r / Ho, ho = r % Ho;
    const float* grow = gp + r * Wo * C;
    for (int i = 0; i < K; ++i) {
      const int64_t hi = ho + i - p;
      if (hi < 0 || hi >= H) continue;
      const float* xrow = xp + (b * H + hi) * W * C;
      std::fill(pad.begin(), pad.end(), 0.f);
      std::copy(xrow, xrow + n * C, pad.begin() + p * C);
      float* acc = acc0 + i * K * C;
      int64_t c0 = 0;
      for (; c0 + V <= C; c0 += V) row_block<K>(grow, pad.data(), acc, Wo, C, c0);
      for (int j = 0; j < K; ++j)  // the channels left over after the blocks of V
        for (int64_t wo = 0; wo < Wo; ++wo)
          for (int64_t c = c0; c < C; ++c) acc[j * C + c] += grow[wo * C + c] * pad[(wo + j) * C + c];
    }
  }
}

}  // namespace

// g (B, C, Ho, Wo) and x (B, C, H, W) float32, NHWC memory; K = 5 (or 3); returns dW (C, 1, K, K).
torch::Tensor depthwise_weight_grad(torch::Tensor g, torch::Tensor x, int64_t k, int64_t p) {
  TORCH_CHECK(k == 3 || k == 5, "depthwise_weight_grad: kernel size 3 or 5, got ", k);
  TORCH_CHECK(x.scalar_type() == at::kFloat && g.scalar_type() == at::kFloat, "depthwise_weight_grad: float32 only");
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), Ho = g.size(2), Wo = g.size(3);
  TORCH_CHECK(g.size(0) == B && g.size(1) == C && Ho == H + 2 * p - k + 1 && Wo == W + 2 * p - k + 1,
              "depthwise_weight_grad: shapes of a stride-1 convolution expected");
  auto xc = x.contiguous(at::MemoryFormat::ChannelsLast);
  auto gc = g.contiguous(at::MemoryFormat::ChannelsLast);
  const float* xp = xc.data_ptr<float>();
  const float* gp = gc.data_ptr<float>();
  const int64_t threads = at::get_num_threads(), per = k * k * C;
  std::vector<float> acc(threads * per, 0.f);  // one sum per thread, added up below in a fixed order
  at::parallel_for(0, B * Ho, 1, [&](int64_t begin, int64_t end) {
    float* a = acc.data() + at::get_thread_num() * per;
    if (k == 5)
      rows<5>(gp, xp, a, begin, end, H, W, C, Ho, Wo, p);
    else
      rows<3>(gp, xp, a, begin, end, H, W, C, Ho, Wo, p);
  });
  auto out = torch::zeros({C, 1, k, k}, x.options());
  float* o = out.data_ptr<float>();
  for (int64_t t = 0; t < threads; ++t)
    for (int64_t q = 0; q < k * k; ++q)
      for (int64_t c = 0; c < C; ++c) o[c * k * k + q] += acc[t * per + q * C + c];
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("depthwise_weight_grad", &depthwise_weight_grad, "weight gradient of a stride-1 depthwise conv (NHWC, float32)");
}
