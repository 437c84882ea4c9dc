// One decode step of the SLM for one sequence, in one call: the CPU serving fast path.
//
// At batch 1 a token reads every weight once, so decoding is bound by memory bandwidth. In
// PyTorch each step is ~300 small ops plus GEMVs that MKL streams from one core; here the
// GEMVs split rows across torch's own thread pool (at::parallel_for) and everything else is a
// plain loop. Matches SLM.forward for dense (non-MoE) models of both families (GPT-style and
// Llama); see slm/fused.py. Each linear is fp32, or int8 with one fp32 scale per output row (a
// quarter of the bytes to stream).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <cmath>
#include <vector>

namespace {

// y[r] = dot(W[r, :], x) + b[r] for W (rows, cols) row-major.
void gemv(const float* W, const float* x, const float* b, float* y, int64_t rows, int64_t cols) {
  at::parallel_for(0, rows, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const float* w = W + r * cols;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
      int64_t i = 0;
      for (; i + 32 <= cols; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
      }
      __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
      __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
      h = _mm_hadd_ps(h, h);
      h = _mm_hadd_ps(h, h);
      float acc = _mm_cvtss_f32(h);
      for (; i < cols; ++i) acc += w[i] * x[i];
      y[r] = acc + (b ? b[r] : 0.f);
    }
  });
}

// y[r] = scale[r] * dot(Q[r, :], x) + b[r] for int8 Q (rows, cols) row-major.
void gemv_q8(const int8_t* Q, const float* scale, const float* x, const float* b, float* y,
             int64_t rows, int64_t cols) {
  at::parallel_for(0, rows, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const int8_t* q = Q + r * cols;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      int64_t i = 0;
      for (; i + 16 <= cols; i += 16) {
        __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i));
        __m256 w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(raw));
        __m256 w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(raw, 8)));
        a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), a1);
      }
      __m256 s = _mm256_add_ps(a0, a1);
      __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
      h = _mm_hadd_ps(h, h);
      h = _mm_hadd_ps(h, h);
      float acc = _mm_cvtss_f32(h);
      for (; i < cols; ++i) acc += static_cast<float>(q[i]) * x[i];
      y[r] = acc * scale[r] + (b ? b[r] : 0.f);
    }
  });
}

// A linear layer: fp32 weight, or int8 weight with per-row scales (scale non-empty).
void linear(const torch::Tensor& w, const torch::Tensor& scale, const float* b, const float* x,
            float* y) {
  if (scale.numel()) {
    gemv_q8(w.data_ptr<int8_t>(), scale.data_ptr<float>(), x, b, y, w.size(0), w.size(1));
  } else {
    gemv(w.data_ptr<float>(), x, b, y, w.size(0), w.size(1));
  }
}

void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t n, double eps) {
  double mean = 0, var = 0;
  for (int64_t i = 0; i < n; ++i) mean += x[i];
  mean /= n;
  for (int64_t i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  const float inv = 1.0f / std::sqrt(static_cast<float>(var / n) + static_cast<float>(eps));
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - static_cast<float>(mean)) * inv * w[i] + b[i];
}

const float* ptr(const torch::Tensor& t) { return t.data_ptr<float>(); }

void rms_norm(const float* x, const float* w, float* y, int64_t n, double eps) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float inv = 1.0f / std::sqrt(static_cast<float>(ss / n + eps));
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * inv * w[i];
}

// Rotate one head's vector at a position, rotate-half layout: (a, b) -> (a cos - b sin, b cos + a sin).
void rope(float* v, const float* cos, const float* sin, int64_t hs) {
  const int64_t half = hs / 2;
  for (int64_t d = 0; d < half; ++d) {
    const float a = v[d], b = v[d + half];
    v[d] = a * cos[d] - b * sin[d];
    v[d + half] = b * cos[d + half] + a * sin[d + half];
  }
}

// One head's attention output for query q over cached positions 0..pos of its key/value head.
void attend(const float* q, const float* K, const float* V, float* out, int64_t pos, int64_t hs,
            float scale, float* scores) {
  float top = -INFINITY;
  for (int64_t t = 0; t <= pos; ++t) {
    const float* kt = K + t * hs;
    float s = 0;
    for (int64_t d = 0; d < hs; ++d) s += q[d] * kt[d];
    scores[t] = s * scale;
    top = std::max(top, scores[t]);
  }
  float total = 0;
  for (int64_t t = 0; t <= pos; ++t) total += (scores[t] = std::exp(scores[t] - top));
  for (int64_t d = 0; d < hs; ++d) out[d] = 0;
  for (int64_t t = 0; t <= pos; ++t) {
    const float* vt = V + t * hs;
    const float w = scores[t] / total;
    for (int64_t d = 0; d < hs; ++d) out[d] += w * vt[d];
  }
}

}  // namespace

// layers: 12 tensors per layer, in SLM order: ln_1.w, ln_1.b, attn.qkv.w, attn.qkv.b,
// attn.proj.w, attn.proj.b, ln_2.w, ln_2.b, mlp.fc.w, mlp.fc.b, mlp.proj.w, mlp.proj.b.
// scales: per layer 4 tensors (qkv, proj, fc, mlp proj): empty for fp32 weights, per-row
// scales for int8. head / head_scale likewise (the fp32 head is the tied embedding).
// keys/values: per layer (n_head, block_size, head_dim) contiguous; position `pos` is written.
torch::Tensor decode_step(int64_t token, int64_t pos, torch::Tensor wte, torch::Tensor wpe,
                          std::vector<torch::Tensor> layers, std::vector<torch::Tensor> scales,
                          torch::Tensor lnf_w, torch::Tensor lnf_b, torch::Tensor head,
                          torch::Tensor head_scale, std::vector<torch::Tensor> keys,
                          std::vector<torch::Tensor> values, int64_t n_head, double eps) {
  const int64_t C = wte.size(1), V = wte.size(0), block = wpe.size(0);
  const int64_t hs = C / n_head, n_layer = static_cast<int64_t>(keys.size());
  TORCH_CHECK(0 <= token && token < V, "token out of range");
  TORCH_CHECK(0 <= pos && pos < block, "position out of range");
  TORCH_CHECK(static_cast<int64_t>(layers.size()) == 12 * n_layer, "expected 12 tensors per layer");
  TORCH_CHECK(static_cast<int64_t>(scales.size()) == 4 * n_layer, "expected 4 scales per layer");
  const int64_t F = layers[8].size(0);
  std::vector<float> x(C), h(C), qkv(3 * C), att(C), tmp(C), f(F), scores(pos + 1);
  for (int64_t i = 0; i < C; ++i) x[i] = ptr(wte)[token * C + i] + ptr(wpe)[pos * C + i];
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  for (int64_t l = 0; l < n_layer; ++l) {
    const torch::Tensor* p = &layers[12 * l];
    const torch::Tensor* sc = &scales[4 * l];
    layer_norm(x.data(), ptr(p[0]), ptr(p[1]), h.data(), C, eps);
    linear(p[2], sc[0], ptr(p[3]), h.data(), qkv.data());
    float* K = keys[l].data_ptr<float>();
    float* Vc = values[l].data_ptr<float>();
    for (int64_t hd = 0; hd < n_head; ++hd) {
      float* krow = K + (hd * block + pos) * hs;
      float* vrow = Vc + (hd * block + pos) * hs;
      for (int64_t d = 0; d < hs; ++d) {
        krow[d] = qkv[C + hd * hs + d];
        vrow[d] = qkv[2 * C + hd * hs + d];
      }
      attend(qkv.data() + hd * hs, K + hd * block * hs, Vc + hd * block * hs,
             att.data() + hd * hs, pos, hs, scale, scores.data());
    }
    linear(p[4], sc[1], ptr(p[5]), att.data(), tmp.data());
    for (int64_t i = 0; i < C; ++i) x[i] += tmp[i];
    layer_norm(x.data(), ptr(p[6]), ptr(p[7]), h.data(), C, eps);
    linear(p[8], sc[2], ptr(p[9]), h.data(), f.data());
    for (int64_t i = 0; i < F; ++i) f[i] = 0.5f * f[i] * (1.0f + std::erf(f[i] * 0.70710678118654752f));
    linear(p[10], sc[3], ptr(p[11]), f.data(), tmp.data());
    for (int64_t i = 0; i < C; ++i) x[i] += tmp[i];
  }
  layer_norm(x.data(), ptr(lnf_w), ptr(lnf_b), h.data(), C, eps);
  auto logits = torch::empty({V}, wte.options());
  linear(head, head_scale, nullptr, h.data(), logits.data_ptr<float>());
  return logits;
}

// The Llama family (RMSNorm, rotary positions, SwiGLU, grouped-query attention, no biases).
// layers: 6 tensors per layer: ln_1.w, attn.qkv.w, attn.proj.w, ln_2.w, mlp.fc.w (gate rows,
// then up rows), mlp.proj.w. scales: 4 per layer, as above. keys/values: per layer
// (n_kv, block_size, head_dim). rope_cos/rope_sin: (block_size, head_dim).
torch::Tensor decode_step_llama(int64_t token, int64_t pos, torch::Tensor wte,
                                std::vector<torch::Tensor> layers,
                                std::vector<torch::Tensor> scales, torch::Tensor lnf_w,
                                torch::Tensor head, torch::Tensor head_scale,
                                std::vector<torch::Tensor> keys, std::vector<torch::Tensor> values,
                                torch::Tensor rope_cos, torch::Tensor rope_sin, int64_t n_head,
                                int64_t n_kv, double eps) {
  const int64_t C = wte.size(1), V = head.size(0), block = rope_cos.size(0);
  const int64_t hs = C / n_head, n_layer = static_cast<int64_t>(keys.size());
  const int64_t kv = n_kv * hs, group = n_head / n_kv;
  TORCH_CHECK(0 <= token && token < wte.size(0), "token out of range");
  TORCH_CHECK(0 <= pos && pos < block, "position out of range");
  TORCH_CHECK(static_cast<int64_t>(layers.size()) == 6 * n_layer, "expected 6 tensors per layer");
  TORCH_CHECK(static_cast<int64_t>(scales.size()) == 4 * n_layer, "expected 4 scales per layer");
  const int64_t F = layers[5].size(1);
  std::vector<float> x(C), h(C), qkv(C + 2 * kv), att(C), tmp(C), f(2 * F), a(F);
  std::vector<float> scores(n_head * (pos + 1));
  for (int64_t i = 0; i < C; ++i) x[i] = ptr(wte)[token * C + i];
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const float* cos = ptr(rope_cos) + pos * hs;
  const float* sin = ptr(rope_sin) + pos * hs;
  for (int64_t l = 0; l < n_layer; ++l) {
    const torch::Tensor* p = &layers[6 * l];
    const torch::Tensor* sc = &scales[4 * l];
    rms_norm(x.data(), ptr(p[0]), h.data(), C, eps);
    linear(p[1], sc[0], nullptr, h.data(), qkv.data());
    for (int64_t hd = 0; hd < n_head; ++hd) rope(qkv.data() + hd * hs, cos, sin, hs);
    float* K = keys[l].data_ptr<float>();
    float* Vc = values[l].data_ptr<float>();
    for (int64_t g = 0; g < n_kv; ++g) {
      float* k = qkv.data() + C + g * hs;
      rope(k, cos, sin, hs);
      std::copy(k, k + hs, K + (g * block + pos) * hs);
      const float* v = qkv.data() + C + kv + g * hs;
      std::copy(v, v + hs, Vc + (g * block + pos) * hs);
    }
    at::parallel_for(0, n_head, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t hd = lo; hd < hi; ++hd) {
        const int64_t g = hd / group;
        attend(qkv.data() + hd * hs, K + g * block * hs, Vc + g * block * hs,
               att.data() + hd * hs, pos, hs, scale, scores.data() + hd * (pos + 1));
      }
    });
    linear(p[2], sc[1], nullptr, att.data(), tmp.data());
    for (int64_t i = 0; i < C; ++i) x[i] += tmp[i];
    rms_norm(x.data(), ptr(p[3]), h.data(), C, eps);
    linear(p[4], sc[2], nullptr, h.data(), f.data());
    for (int64_t i = 0; i < F; ++i) {
      const float g = f[i];
      a[i] = g / (1.0f + std::exp(-g)) * f[F + i];
    }
    linear(p[5], sc[3], nullptr, a.data(), tmp.data());
    for (int64_t i = 0; i < C; ++i) x[i] += tmp[i];
  }
  rms_norm(x.data(), ptr(lnf_w), h.data(), C, eps);
  auto logits = torch::empty({V}, wte.options());
  linear(head, head_scale, nullptr, h.data(), logits.data_ptr<float>());
  return logits;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_step", &decode_step, "one SLM decode step for one sequence (fp32/int8, CPU)");
  m.def("decode_step_llama", &decode_step_llama,
        "one Llama-family decode step for one sequence (fp32/int8, CPU)");
}
