// Fused CPU kernels for the memory-bound passes of AFDF (torch_acdc/afdf.py uses them, native.py builds them).
// Each is one pass over its (rows, ...) operands, parallel over rows with at::parallel_for (torch's pool);
// the FFTs between them stay torch.fft.rfft / irfft.
//
// Notation (see afdf.py): x (rows, n) real, a and d (n, 2) real pairs of complex diagonals, h = n/2 + 1.
// Spectra are the real views of complex tensors: (..., h, 2) interleaved (re, im). Per bin k < h the two
// half-spectrum weights are p[k] = (d[k] + conj(d[-k])) / 2 and q[k] = i (d[k] - conj(d[-k])) / 2; they are
// computed once per call into small structure-of-arrays tables, so the hot loops only stream the big operands
// contiguously (gcc vectorises them: check with -fopt-info-vec).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <vector>

namespace {

using at::Tensor;

// Rows per task: enough elements per task that scheduling costs nothing.
int64_t grain(int64_t elems_per_row) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, elems_per_row)); }

int64_t rows_of(const Tensor& t, int64_t per_row) { return per_row ? t.numel() / per_row : 0; }

void check_pairs(const Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.size(1) == 2, "afdf: ", name, " must be real pairs (n, 2), got ", t.sizes());
}

void check_spectrum(const Tensor& t, int64_t h, const char* name) {
  TORCH_CHECK(t.dim() >= 2 && t.size(-1) == 2 && t.size(-2) == h, "afdf: ", name,
              " must be the real view (..., ", h, ", 2) of a half spectrum, got ", t.sizes());
}

// (p, q) of d as four (h,) arrays pr, pi, qr, qi (one allocation of 4h). conj: the tables of conj(p), conj(q).
template <typename T>
std::vector<T> pq_table(const Tensor& d, bool conj) {
  const int64_t n = d.size(0), h = n / 2 + 1;
  const T* dp = d.data_ptr<T>();
  std::vector<T> tab(4 * h);
  T *pr = tab.data(), *pi = pr + h, *qr = pi + h, *qi = qr + h;
  const T sign = conj ? T(-1) : T(1);
  for (int64_t k = 0; k < h; ++k) {
    const int64_t m = (n - k) % n;
    const T kr = dp[2 * k], ki = dp[2 * k + 1], mr = dp[2 * m], mi = dp[2 * m + 1];
    pr[k] = (kr + mr) / 2;
    pi[k] = sign * (ki - mi) / 2;
    qr[k] = -(ki + mi) / 2;
    qi[k] = sign * (kr - mr) / 2;
  }
  return tab;
}

std::vector<int64_t> with_pair_dim(c10::IntArrayRef sizes) {  // (..., m) -> (..., 2, m)
  std::vector<int64_t> out(sizes.begin(), sizes.end());
  out.insert(out.end() - 1, 2);
  return out;
}

// s = (a_r x, a_i x): x (..., n) -> (..., 2, n). The input of the forward rfft (and of grad_d's recompute).
Tensor afdf_stack(const Tensor& x_, const Tensor& a_) {
  check_pairs(a_, "a");
  const Tensor x = x_.contiguous(), a = a_.contiguous();
  const int64_t n = x.size(-1), rows = rows_of(x, n);
  TORCH_CHECK(a.size(0) == n, "afdf_stack: a has ", a.size(0), " entries for n = ", n);
  Tensor out = at::empty(with_pair_dim(x.sizes()), x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "afdf_stack", [&] {
    const scalar_t* ap = a.data_ptr<scalar_t>();
    std::vector<scalar_t> tab(2 * n);  // a_r, a_i as contiguous rows
    for (int64_t j = 0; j < n; ++j) tab[j] = ap[2 * j], tab[n + j] = ap[2 * j + 1];
    const scalar_t* __restrict ar = tab.data();
    const scalar_t* __restrict ai = ar + n;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, grain(3 * n), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* __restrict xr = xp + r * n;
        scalar_t* __restrict o0 = op + r * 2 * n;
        scalar_t* __restrict o1 = o0 + n;
        for (int64_t j = 0; j < n; ++j) {
          o0[j] = ar[j] * xr[j];
          o1[j] = ai[j] * xr[j];
        }
      }
    });
  });
  return out;
}

// The forward's spectral mix p S_0 + q S_1: s the real view (..., 2, h, 2) of S = rfft(stack) -> a fresh
// (..., h, 2) real view of the spectrum of y (irfft it).
Tensor afdf_mix(const Tensor& s_, const Tensor& d_) {
  check_pairs(d_, "d");
  const Tensor s = s_.contiguous(), d = d_.contiguous();
  const int64_t n = d.size(0), h = n / 2 + 1;
  check_spectrum(s, h, "s");
  TORCH_CHECK(s.dim() >= 3 && s.size(-3) == 2, "afdf_mix: s must be (..., 2, h, 2), got ", s.sizes());
  const int64_t rows = rows_of(s, 4 * h);
  std::vector<int64_t> shape(s.sizes().begin(), s.sizes().end() - 3);
  shape.push_back(h), shape.push_back(2);
  Tensor out = at::empty(shape, s.options());
  AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "afdf_mix", [&] {
    const std::vector<scalar_t> tab = pq_table<scalar_t>(d, false);
    const scalar_t* __restrict pr = tab.data();
    const scalar_t* __restrict pi = pr + h;
    const scalar_t* __restrict qr = pi + h;
    const scalar_t* __restrict qi = qr + h;
    const scalar_t* sp = s.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, grain(6 * h), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* __restrict s0 = sp + r * 4 * h;
        const scalar_t* __restrict s1 = s0 + 2 * h;
        scalar_t* __restrict o = op + r * 2 * h;
        for (int64_t k = 0; k < h; ++k) {
          const scalar_t ar = s0[2 * k], ai = s0[2 * k + 1], br = s1[2 * k], bi = s1[2 * k + 1];
          o[2 * k] = pr[k] * ar - pi[k] * ai + qr[k] * br - qi[k] * bi;
          o[2 * k + 1] = pr[k] * ai + pi[k] * ar + qr[k] * bi + qi[k] * br;
        }
      }
    });
  });
  return out;
}

// (conj(p) G, conj(q) G) for one row: g (2h), out0 / out1 (2h each).
template <typename T>
inline void conj_weights_row(const T* __restrict g, T* __restrict o0, T* __restrict o1, const T* __restrict pr,
                             const T* __restrict pi, const T* __restrict qr, const T* __restrict qi, int64_t h) {
  for (int64_t k = 0; k < h; ++k) {
    const T gr = g[2 * k], gi = g[2 * k + 1];
    o0[2 * k] = pr[k] * gr - pi[k] * gi;
    o0[2 * k + 1] = pr[k] * gi + pi[k] * gr;
    o1[2 * k] = qr[k] * gr - qi[k] * gi;
    o1[2 * k + 1] = qr[k] * gi + qi[k] * gr;
  }
}

// The backward's spectral pass without grad_d: g the real view (..., h, 2) of G = rfft(grad_y) -> a fresh
// (..., 2, h, 2) real view of (conj(p) G, conj(q) G), whose irfft is r = F^-1 D^H F grad_y as (Re, Im) rows.
Tensor afdf_grad_spectra(const Tensor& g_, const Tensor& d_) {
  check_pairs(d_, "d");
  const Tensor g = g_.contiguous(), d = d_.contiguous();
  const int64_t n = d.size(0), h = n / 2 + 1;
  check_spectrum(g, h, "g");
  const int64_t rows = rows_of(g, 2 * h);
  std::vector<int64_t> shape(g.sizes().begin(), g.sizes().end());
  shape.insert(shape.end() - 2, 2);
  Tensor out = at::empty(shape, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "afdf_grad_spectra", [&] {
    const std::vector<scalar_t> tab = pq_table<scalar_t>(d, true);
    const scalar_t* t = tab.data();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, grain(6 * h), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        scalar_t* o0 = op + r * 4 * h;
        conj_weights_row(gp + r * 2 * h, o0, o0 + 2 * h, t, t + h, t + 2 * h, t + 3 * h, h);
      }
    });
  });
  return out;
}

// One row of afdf_grad_spectra_sums_: c_0 += G conj(S_0), c_1 += G conj(S_1) and, if Map, S <- (conj(p) G,
// conj(q) G) in the same loop (t: the conj tables pr, pi, qr, qi).
template <typename T, bool Map>
inline void cross_sums_row(const T* __restrict g, T* __restrict s0, T* __restrict s1, T* __restrict c0,
                           T* __restrict c1, const T* __restrict t, int64_t h) {
  const T* __restrict pr = t;
  const T* __restrict pi = t + h;
  const T* __restrict qr = t + 2 * h;
  const T* __restrict qi = t + 3 * h;
  for (int64_t k = 0; k < h; ++k) {  // G conj(S) = (gr + i gi)(sr - i si)
    const T gr = g[2 * k], gi = g[2 * k + 1];
    const T ar = s0[2 * k], ai = s0[2 * k + 1], br = s1[2 * k], bi = s1[2 * k + 1];
    c0[2 * k] += gr * ar + gi * ai;
    c0[2 * k + 1] += gi * ar - gr * ai;
    c1[2 * k] += gr * br + gi * bi;
    c1[2 * k + 1] += gi * br - gr * bi;
    if (Map) {
      s0[2 * k] = pr[k] * gr - pi[k] * gi;
      s0[2 * k + 1] = pr[k] * gi + pi[k] * gr;
      s1[2 * k] = qr[k] * gr - qi[k] * gi;
      s1[2 * k + 1] = qr[k] * gi + qi[k] * gr;
    }
  }
}

// The backward's spectral pass with grad_d: g the real view (..., h, 2) of G = rfft(grad_y), s the real
// view (..., 2, h, 2) of S = rfft(stack(x, a)) (a temporary). Accumulates the batch cross sums
// C_c[k] = sum_rows G[k] conj(S_c[k]) and, if map, overwrites s with (conj(p) G, conj(q) G) in the same pass
// (so the caller irfft's s for grad_x / grad_a). Returns grad_d (n, 2) = fft(g) conj(fft(a x)) / n summed over
// the batch: bins j < h are (C_0 - i C_1)[j] / n, the mirrored bins j >= h are (conj C_0 - i conj C_1)[n-j] / n.
Tensor afdf_grad_spectra_sums_(const Tensor& g_, Tensor s, const Tensor& d_, bool map) {
  check_pairs(d_, "d");
  const Tensor g = g_.contiguous(), d = d_.contiguous();
  const int64_t n = d.size(0), h = n / 2 + 1;
  check_spectrum(g, h, "g");
  check_spectrum(s, h, "s");
  TORCH_CHECK(s.is_contiguous(), "afdf_grad_spectra_sums_: s must be contiguous (it is written in place)");
  TORCH_CHECK(s.numel() == 2 * g.numel(), "afdf_grad_spectra_sums_: s ", s.sizes(), " does not match g ", g.sizes());
  const int64_t rows = rows_of(g, 2 * h);
  const int nt = at::get_num_threads();
  Tensor grad_d = at::empty({n, 2}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "afdf_grad_spectra_sums_", [&] {
    const std::vector<scalar_t> tab = pq_table<scalar_t>(d, true);
    const scalar_t* t = tab.data();
    std::vector<scalar_t> partial(static_cast<size_t>(nt) * 4 * h, scalar_t(0));  // per thread: C_0, C_1 interleaved
    const scalar_t* gp = g.data_ptr<scalar_t>();
    scalar_t* sp = s.data_ptr<scalar_t>();
    at::parallel_for(0, rows, grain(8 * h), [&](int64_t r0, int64_t r1) {
      scalar_t* __restrict c0 = partial.data() + at::get_thread_num() * 4 * h;
      scalar_t* __restrict c1 = c0 + 2 * h;
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* __restrict gr_ = gp + r * 2 * h;
        scalar_t* __restrict s0 = sp + r * 4 * h;
        scalar_t* __restrict s1 = s0 + 2 * h;
        if (map) cross_sums_row<scalar_t, true>(gr_, s0, s1, c0, c1, t, h);
        else cross_sums_row<scalar_t, false>(gr_, s0, s1, c0, c1, t, h);
      }
    });
    std::vector<scalar_t> c(4 * h, scalar_t(0));
    for (int i = 0; i < nt; ++i)
      for (int64_t e = 0; e < 4 * h; ++e) c[e] += partial[i * 4 * h + e];
    const scalar_t* C0 = c.data();
    const scalar_t* C1 = C0 + 2 * h;
    scalar_t* out = grad_d.data_ptr<scalar_t>();
    const scalar_t inv_n = scalar_t(1) / scalar_t(n);
    for (int64_t j = 0; j < n; ++j) {
      if (j < h) {  // C_0 - i C_1
        out[2 * j] = (C0[2 * j] + C1[2 * j + 1]) * inv_n;
        out[2 * j + 1] = (C0[2 * j + 1] - C1[2 * j]) * inv_n;
      } else {  // conj(C_0) - i conj(C_1) at bin n - j
        const int64_t k = n - j;
        out[2 * j] = (C0[2 * k] - C1[2 * k + 1]) * inv_n;
        out[2 * j + 1] = (-C0[2 * k + 1] - C1[2 * k]) * inv_n;
      }
    }
  });
  return grad_d;
}

// grad_x = a_r r_0 + a_i r_1 (if need_x) and grad_a[j] = sum_rows x[j] (r_0[j], r_1[j]) as (n, 2) pairs (if
// need_a), in one pass over r (..., 2, n) = irfft of the backward spectra. An empty tensor for one not needed.
std::tuple<Tensor, Tensor> afdf_input_grads(const Tensor& r_, const Tensor& x_, const Tensor& a_, bool need_x,
                                            bool need_a) {
  check_pairs(a_, "a");
  const Tensor r = r_.contiguous(), x = x_.contiguous(), a = a_.contiguous();
  const int64_t n = x.size(-1), rows = rows_of(x, n);
  TORCH_CHECK(a.size(0) == n && r.numel() == 2 * x.numel() && r.size(-1) == n,
              "afdf_input_grads: r ", r.sizes(), ", x ", x.sizes(), " and a ", a.sizes(), " do not match");
  const int nt = at::get_num_threads();
  Tensor gx = need_x ? at::empty(x.sizes(), x.options()) : at::empty({0}, x.options());
  Tensor ga = need_a ? at::empty({n, 2}, x.options()) : at::empty({0}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "afdf_input_grads", [&] {
    const scalar_t* ap = a.data_ptr<scalar_t>();
    std::vector<scalar_t> tab(2 * n);
    for (int64_t j = 0; j < n; ++j) tab[j] = ap[2 * j], tab[n + j] = ap[2 * j + 1];
    const scalar_t* __restrict ar = tab.data();
    const scalar_t* __restrict ai = ar + n;
    std::vector<scalar_t> partial(need_a ? static_cast<size_t>(nt) * 2 * n : 0, scalar_t(0));  // per thread (2, n)
    const scalar_t* rp = r.data_ptr<scalar_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* gxp = need_x ? gx.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, rows, grain(4 * n), [&](int64_t r0, int64_t r1) {
      scalar_t* __restrict acc0 = need_a ? partial.data() + at::get_thread_num() * 2 * n : nullptr;
      scalar_t* __restrict acc1 = need_a ? acc0 + n : nullptr;
      for (int64_t row = r0; row < r1; ++row) {
        const scalar_t* __restrict q0 = rp + row * 2 * n;
        const scalar_t* __restrict q1 = q0 + n;
        const scalar_t* __restrict xr = xp + row * n;
        if (gxp) {
          scalar_t* __restrict o = gxp + row * n;
          for (int64_t j = 0; j < n; ++j) o[j] = ar[j] * q0[j] + ai[j] * q1[j];
        }
        if (need_a) {
          for (int64_t j = 0; j < n; ++j) {
            acc0[j] += xr[j] * q0[j];
            acc1[j] += xr[j] * q1[j];
          }
        }
      }
    });
    if (need_a) {
      scalar_t* out = ga.data_ptr<scalar_t>();
      for (int64_t j = 0; j < n; ++j) {
        scalar_t s0 = 0, s1 = 0;
        for (int i = 0; i < nt; ++i) s0 += partial[i * 2 * n + j], s1 += partial[i * 2 * n + n + j];
        out[2 * j] = s0, out[2 * j + 1] = s1;
      }
    }
  });
  return {gx, ga};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(torch_acdc_native, m) {
  m.def("afdf_stack(Tensor x, Tensor a) -> Tensor");
  m.def("afdf_mix(Tensor s, Tensor d) -> Tensor");
  m.def("afdf_grad_spectra(Tensor g, Tensor d) -> Tensor");
  m.def("afdf_grad_spectra_sums_(Tensor g, Tensor(a!) s, Tensor d, bool map) -> Tensor");
  m.def("afdf_input_grads(Tensor r, Tensor x, Tensor a, bool need_x, bool need_a) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(torch_acdc_native, CPU, m) {
  m.impl("afdf_stack", &afdf_stack);
  m.impl("afdf_mix", &afdf_mix);
  m.impl("afdf_grad_spectra", &afdf_grad_spectra);
  m.impl("afdf_grad_spectra_sums_", &afdf_grad_spectra_sums_);
  m.impl("afdf_input_grads", &afdf_input_grads);
}
