// nasctl's CPU kernels for a stride-1 depthwise convolution (3x3 or 5x5) on NHWC float32 memory:
//   forward  y[b, ho, wo, c] = sum over i, j of w[c, i, j] * x[b, ho + i - p, wo + j - p, c]   (x = 0 outside)
//   weight   dW[c, 0, i, j] = sum over b, ho, wo of g[b, ho, wo, c] * x[b, ho + i - p, wo + j - p, c]
// (the input gradient is the forward of g with the flipped kernel). Both walk pairs of an output row and an
// input row, 16 channels (one AVX-512 register) at a time. oneDNN computes the 5x5 weight gradient on its
// generic path. Built on first use by nasctl/spaces/kernels.py.
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

// y[wo * C + c] += sum over j of w[j * C + c] * x[(wo + j) * C + c], for the channels c0..c0+V of one row pair;
// U output pixels at a time, so that U chains of multiply-adds run side by side.
template <int K>
inline void row_forward(const float* __restrict x, const float* __restrict w, float* __restrict y, int64_t Wo,
                        int64_t C, int64_t c0) {
  constexpr int U = 4;
  float wv[K][V];
  for (int j = 0; j < K; ++j)
    for (int64_t c = 0; c < V; ++c) wv[j][c] = w[j * C + c0 + c];
  int64_t wo = 0;
  for (; wo + U <= Wo; wo += U) {
    float s[U][V];
    for (int u = 0; u < U; ++u)
      for (int64_t c = 0; c < V; ++c) s[u][c] = y[(wo + u) * C + c0 + c];
    for (int j = 0; j < K; ++j)
      for (int u = 0; u < U; ++u) {
        const float* xv = x + (wo + u + j) * C + c0;
#pragma omp simd
        for (int64_t c = 0; c < V; ++c) s[u][c] += wv[j][c] * xv[c];
      }
    for (int u = 0; u < U; ++u)
      for (int64_t c = 0; c < V; ++c) y[(wo + u) * C + c0 + c] = s[u][c];
  }
  for (; wo < Wo; ++wo)
    for (int j = 0; j < K; ++j)
      for (int64_t c = 0; c < V; ++c) y[wo * C + c0 + c] += wv[j][c] * x[(wo + j) * C + c0 + c];
}

// Calls f(r, i, padded input row) for the output rows [begin, end) (row r = b * Ho + ho) and each kernel row i
// that reads a row of x inside the image; the padded row holds that input row with p zeros either side.
template <int K, typename F>
void for_row_pairs(const float* xp, int64_t begin, int64_t end, int64_t H, int64_t W, int64_t C, int64_t Ho,
                   int64_t Wo, int64_t p, F f) {
  const int64_t Wp = Wo + K - 1;
  std::vector<float> pad(Wp * C, 0.f);
  const int64_t n = std::min<int64_t>(W, Wp - p);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t b = r / Ho, ho = r % Ho;
    for (int i = 0; i < K; ++i) {
      const int64_t hi = ho + i - p;
      if (hi < 0 || hi >= H) continue;
      const float* xrow = xp + (b * H + hi) * W * C;
      std::copy(xrow, xrow + n * C, pad.begin() + p * C);
      f(r, i, pad.data());
    }
  }
}

// dW sums of the output rows [begin, end) into acc (K * K * C, kernel-position major).
template <int K>
void weight_rows(const float* gp, const float* xp, float* acc0, int64_t begin, int64_t end, int64_t H, int64_t W,
                 int64_t C, int64_t Ho, int64_t Wo, int64_t p) {
  for_row_pairs<K>(xp, begin, end, H, W, C, Ho, Wo, p, [&](int64_t r, int i, const float* pad) {
    const float* grow = gp + r * Wo * C;
    float* acc = acc0 + i * K * C;
    int64_t c0 = 0;
    for (; c0 + V <= C; c0 += V) row_block<K>(grow, pad, acc, Wo, C, c0);
    for (int j = 0; j < K; ++j)  // the channels left over after the blocks of V
      for (int64_t wo = 0; wo < Wo; ++wo)
        for (int64_t c = c0; c < C; ++c) acc[j * C + c] += grow[wo * C + c] * pad[(wo + j) * C + c];
  });
}

// y rows [begin, end) (zeroed by the caller) += the conv of x with wt (K * K * C, kernel-position major).
template <int K>
void forward_rows(const float* xp, const float* wt, float* yp, int64_t begin, int64_t end, int64_t H, int64_t W,
                  int64_t C, int64_t Ho, int64_t Wo, int64_t p) {
  for_row_pairs<K>(xp, begin, end, H, W, C, Ho, Wo, p, [&](int64_t r, int i, const float* pad) {
    float* yrow = yp + r * Wo * C;
    const float* w = wt + i * K * C;
    int64_t c0 = 0;
    for (; c0 + V <= C; c0 += V) row_forward<K>(pad, w, yrow, Wo, C, c0);
    for (int j = 0; j < K; ++j)
      for (int64_t wo = 0; wo < Wo; ++wo)
        for (int64_t c = c0; c < C; ++c) yrow[wo * C + c] += w[j * C + c] * pad[(wo + j) * C + c];
  });
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
      weight_rows<5>(gp, xp, a, begin, end, H, W, C, Ho, Wo, p);
    else
      weight_rows<3>(gp, xp, a, begin, end, H, W, C, Ho, Wo, p);
  });
  auto out = torch::zeros({C, 1, k, k}, x.options());
  float* o = out.data_ptr<float>();
  for (int64_t t = 0; t < threads; ++t)
    for (int64_t q = 0; q < k * k; ++q)
      for (int64_t c = 0; c < C; ++c) o[c * k * k + q] += acc[t * per + q * C + c];
  return out;
}

// x (B, C, H, W) float32, NHWC memory, w (C, 1, K, K); returns the stride-1 depthwise conv with padding p, NHWC.
torch::Tensor depthwise_forward(torch::Tensor x, torch::Tensor w, int64_t p) {
  const int64_t k = w.size(-1);
  TORCH_CHECK(k == 3 || k == 5, "depthwise_forward: kernel size 3 or 5, got ", k);
  TORCH_CHECK(x.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat, "depthwise_forward: float32 only");
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), Ho = H + 2 * p - k + 1, Wo = W + 2 * p - k + 1;
  TORCH_CHECK(w.size(0) == C && w.size(1) == 1, "depthwise_forward: a (C, 1, K, K) weight expected");
  auto xc = x.contiguous(at::MemoryFormat::ChannelsLast);
  auto wt = w.reshape({C, k * k}).t().contiguous();  // (K * K, C): kernel position major
  auto y = at::empty({B, C, Ho, Wo}, x.options(), at::MemoryFormat::ChannelsLast).zero_();
  const float* xp = xc.data_ptr<float>();
  const float* wp = wt.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, B * Ho, 1, [&](int64_t begin, int64_t end) {
    if (k == 5)
      forward_rows<5>(xp, wp, yp, begin, end, H, W, C, Ho, Wo, p);
    else
      forward_rows<3>(xp, wp, yp, begin, end, H, W, C, Ho, Wo, p);
  });
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("depthwise_forward", &depthwise_forward, "stride-1 depthwise conv (NHWC, float32)");
  m.def("depthwise_weight_grad", &depthwise_weight_grad, "weight gradient of a stride-1 depthwise conv (NHWC, float32)");
}
