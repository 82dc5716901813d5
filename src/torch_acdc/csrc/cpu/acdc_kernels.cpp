// Fused CPU kernels for the memory-bound passes of ACDC (torch_acdc/native.py builds and wraps them).
// Each is one pass over its (rows, n) operands, parallel over rows with at::parallel_for (torch's pool).
// All inputs are contiguous; the Python wrapper checks shapes and dtypes (float32 / float64).
//
// Vectorisation: the hot loops are plain contiguous loops gcc vectorises (-O3 -march=native). Gathers by
// Makhoul's permutation (evens, then odds reversed) and its inverse are recognised (an O(n) check per call)
// and run as structured loops (stride-2 and reversed accesses vectorise; index gathers do not); any other
// index (a stack's random shuffle) takes the general indexed loop. Per-bin coefficients are computed once
// per call into structure-of-arrays tables.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/fft_irfft.h>
#include <ATen/ops/fft_rfft.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/view_as_real.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Optional.h>
#include <torch/library.h>

#include <vector>

#include "acdc_ops.h"
#include "fft_plans.h"

namespace {

using at::Tensor;

// Rows per task: enough elements per task that scheduling costs nothing.
int64_t grain(int64_t n) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, n)); }

template <typename T>
const T* opt_ptr(const c10::optional<Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

// ---- gathers of the last dimension ----

enum class Pattern { None, Makhoul, Inverse, General };

// Makhoul's reorder: perm[j] = 2j for 2j < n, else 2n - 1 - 2j; its inverse iperm[m] = m/2 (m even),
// n - 1 - m/2 (m odd). out[j] = x[idx[j]] with idx one of these (or None) is a structured loop.
// A general index as int32 (vectorised gathers take 16 lanes of int32 against 8 of int64). O(n) per call.
std::vector<int32_t> index32(const c10::optional<Tensor>& idx, int64_t n) {
  TORCH_CHECK(n < (int64_t(1) << 31), "torch_acdc native kernels: n = ", n, " exceeds int32 indexing");
  TORCH_CHECK(idx->numel() == n && idx->scalar_type() == at::kLong, "torch_acdc native kernels: a gather index must "
              "be int64 of length ", n, ", got ", idx->scalar_type(), " of length ", idx->numel());
  const int64_t* ip = idx->data_ptr<int64_t>();
  std::vector<char> seen(n, 0);  // a gather index must be a permutation: anything else reads out of range
  for (int64_t j = 0; j < n; ++j) {
    TORCH_CHECK(ip[j] >= 0 && ip[j] < n && !seen[ip[j]], "torch_acdc native kernels: the gather index is not a ",
                "permutation of range(", n, "): entry ", j, " is ", ip[j]);
    seen[ip[j]] = 1;
  }
  return std::vector<int32_t>(ip, ip + n);
}

// Each check stops at the first mismatch (a random permutation fails on its first entries).
bool is_makhoul(const int64_t* ip, int64_t n) {
  const int64_t evens = (n + 1) / 2;
  for (int64_t j = 0; j < evens; ++j)
    if (ip[j] != 2 * j) return false;
  for (int64_t j = evens; j < n; ++j)
    if (ip[j] != 2 * n - 1 - 2 * j) return false;
  return true;
}

bool is_makhoul_inverse(const int64_t* ip, int64_t n) {
  for (int64_t i = 0; 2 * i < n; ++i)
    if (ip[2 * i] != i || (2 * i + 1 < n && ip[2 * i + 1] != n - 1 - i)) return false;
  return true;
}

Pattern classify(const c10::optional<Tensor>& idx, int64_t n) {
  if (!idx.has_value()) return Pattern::None;
  TORCH_CHECK(idx->numel() == n && idx->scalar_type() == at::kLong, "torch_acdc native kernels: a gather index must "
              "be int64 of length ", n, ", got ", idx->scalar_type(), " of length ", idx->numel());
  const int64_t* ip = idx->data_ptr<int64_t>();
  return is_makhoul(ip, n) ? Pattern::Makhoul : is_makhoul_inverse(ip, n) ? Pattern::Inverse : Pattern::General;
}

// One row: o[j] = x[idx[j]] * s[j] + b[j] (s, b optional: compile-time flags).
template <typename T, Pattern P, bool S, bool B>
void gather_row(const T* __restrict__ x, T* __restrict__ o, const int32_t* __restrict__ ip,
                const T* __restrict__ s, const T* __restrict__ b, int64_t n) {
  auto f = [&](int64_t j, T v) { return (S ? v * s[j] : v) + (B ? b[j] : T(0)); };
  const int64_t h = n / 2;
  if constexpr (P == Pattern::Makhoul) {  // o[i] = x[2i], o[n-1-i] = x[2i+1]
    for (int64_t i = 0; i < h; ++i) o[i] = f(i, x[2 * i]);
    for (int64_t i = 0; i < h; ++i) o[n - 1 - i] = f(n - 1 - i, x[2 * i + 1]);
    if (n & 1) o[h] = f(h, x[2 * h]);
  } else if constexpr (P == Pattern::Inverse) {  // o[2i] = x[i], o[2i+1] = x[n-1-i]
    for (int64_t i = 0; i < h; ++i) {
      o[2 * i] = f(2 * i, x[i]);
      o[2 * i + 1] = f(2 * i + 1, x[n - 1 - i]);
    }
    if (n & 1) o[2 * h] = f(2 * h, x[h]);
  } else if constexpr (P == Pattern::General) {
    for (int64_t j = 0; j < n; ++j) o[j] = f(j, x[ip[j]]);
  } else {
    for (int64_t j = 0; j < n; ++j) o[j] = f(j, x[j]);
  }
}

// A row's source, safe to read while the row is overwritten: a copy in the task's scratch (L1-resident)
// when the pass runs in place (in == out) or when it will be read in random order (``stage``: a cold row
// read through a random index is latency-bound, one cache miss per element; a sequential copy streams).
template <typename T>
inline const T* row_source(const T* in, const T* out, std::vector<T>& scratch, int64_t n, bool stage = false) {
  if (in != out && !stage) return in;
  scratch.assign(in, in + n);
  return scratch.data();
}

// Batch sums are blocked: rows are summed kBlockRows at a time into a block accumulator that is then added
// to the thread's accumulator, so the rounding error of a float32 sum over B rows grows like
// kBlockRows + B / kBlockRows instead of B (torch's own sums are pairwise for the same reason).
constexpr int64_t kBlockRows = 32;

// A block accumulator: ``len`` zeros, folded into ``total`` by ``flush``.
template <typename T>
struct BlockSum {
  std::vector<T> acc;
  int64_t count = 0;
  explicit BlockSum(int64_t len) : acc(len, T(0)) {}
  T* row() { return acc.data(); }
  // After each row: every kBlockRows rows (and at the end, force) add the block into total and restart.
  void step(T* total, bool force = false) {
    if (++count < kBlockRows && !force) return;
    const int64_t len = static_cast<int64_t>(acc.size());
    for (int64_t i = 0; i < len; ++i) total[i] += acc[i];
    std::fill(acc.begin(), acc.end(), T(0));
    count = 0;
  }
};

// Rows [0, rows): gather each row, and (partial: per-thread (n,) accumulators) add it into its thread's
// column sums while it is in L1 (blocked, see BlockSum).
template <typename T, Pattern P>
void gather_rows(const T* x, T* o, const int32_t* ip, const T* s, const T* b, T* partial, int64_t rows,
                 int64_t n) {
  at::parallel_for(0, rows, grain(n), [&](int64_t r0, int64_t r1) {
    std::vector<T> scratch;
    T* total = partial ? partial + at::get_thread_num() * n : nullptr;
    BlockSum<T> block(partial ? n : 0);
    for (int64_t r = r0; r < r1; ++r) {
      T* __restrict__ orow = o + r * n;
      const T* xr = row_source(x + r * n, orow, scratch, n, P == Pattern::General);
      if (s && b) gather_row<T, P, true, true>(xr, orow, ip, s, b, n);
      else if (s) gather_row<T, P, true, false>(xr, orow, ip, s, b, n);
      else if (b) gather_row<T, P, false, true>(xr, orow, ip, s, b, n);
      else gather_row<T, P, false, false>(xr, orow, ip, s, b, n);
      if (total) {
        T* __restrict__ acc = block.row();
        for (int64_t j = 0; j < n; ++j) acc[j] += orow[j];
        block.step(total, r + 1 == r1);
      }
    }
  });
}

// out[r, j] = x[r, idx[j]] * s[j] + b[j]   (idx, s, b each optional); with gather_b, + b[idx[j]] instead
// (a bias given in the source order, as when a layer's output leaves Makhoul order). out may be x. With
// colsum, also *colsum = the column sums of out (n,), in the same pass.
void gather_scale_into(Tensor& out, const Tensor& x, const c10::optional<Tensor>& idx,
                       const c10::optional<Tensor>& s, const c10::optional<Tensor>& b, bool gather_b,
                       Tensor* colsum = nullptr) {
  const int64_t n = x.size(-1), rows = n ? x.numel() / n : 0;
  const Pattern p = classify(idx, n);
  Tensor partial = colsum ? at::zeros({at::get_num_threads(), n}, x.options()) : Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gather_scale", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    scalar_t* pp = colsum ? partial.data_ptr<scalar_t>() : nullptr;
    const std::vector<int32_t> i32 = p == Pattern::General ? index32(idx, n) : std::vector<int32_t>();
    const int32_t* ip = i32.data();
    const scalar_t *sp = opt_ptr<scalar_t>(s), *bp = opt_ptr<scalar_t>(b);
    std::vector<scalar_t> bg;
    if (bp && idx.has_value() && gather_b) {  // O(n) once per call
      const int64_t* ix = idx->data_ptr<int64_t>();
      bg.resize(n);
      for (int64_t j = 0; j < n; ++j) bg[j] = bp[ix[j]];
      bp = bg.data();
    }
    switch (p) {
      case Pattern::Makhoul: gather_rows<scalar_t, Pattern::Makhoul>(xp, op, ip, sp, bp, pp, rows, n); break;
      case Pattern::Inverse: gather_rows<scalar_t, Pattern::Inverse>(xp, op, ip, sp, bp, pp, rows, n); break;
      case Pattern::General: gather_rows<scalar_t, Pattern::General>(xp, op, ip, sp, bp, pp, rows, n); break;
      default: gather_rows<scalar_t, Pattern::None>(xp, op, ip, sp, bp, pp, rows, n);
    }
  });
  if (colsum) *colsum = partial.sum(0);
}

Tensor gather_scale(const Tensor& x, const c10::optional<Tensor>& idx, const c10::optional<Tensor>& s,
                    const c10::optional<Tensor>& b, bool gather_b) {
  Tensor out = at::empty(x.sizes(), x.options());
  gather_scale_into(out, x, idx, s, b, gather_b);
  return out;
}

// ---- the per-bin map ----
//
// Spectra are real views (rows, h, 2): interleaved (re, im) pairs. Every array the hot loops touch (tables,
// accumulators) uses the same interleaved layout, so each loop is one uniform stream of pairs that gcc
// vectorises (a pair swap is a lane permute).

// The middle M^-1 diag(d) M of ACDC on one raw spectrum bin k (Z = rfft(u), no twiddle applied) is the
// symmetric real 2x2 [[p, q], [q, r]] on (Re Z, Im Z): with a = (d[k] + d[n-k]) / 2, b = (d[k] - d[n-k]) / 2
// (d[n] := 0) and c = conj(w_k)^2, p = a + b Re c, q = b Im c, r = a - b Re c. w (h, 2) is the twiddle.
// Stored interleaved as P = (p, r) and Q = (q, q) per bin: Z' = P * Z + Q * swap(Z).
template <typename T>
std::vector<T> bin_table(const Tensor& d, const Tensor& w) {
  const int64_t n = d.size(0), h = n / 2 + 1;
  const T* dp = d.data_ptr<T>();
  const T* wp = w.data_ptr<T>();
  std::vector<T> m(4 * h);  // P (2h), then Q (2h)
  for (int64_t k = 0; k < h; ++k) {
    const T d1 = dp[k], d2 = k == 0 ? T(0) : dp[n - k];
    const T a = (d1 + d2) / 2, b = (d1 - d2) / 2, wr = wp[2 * k], wi = wp[2 * k + 1];
    m[2 * k] = a + b * (wr * wr - wi * wi);
    m[2 * k + 1] = a - b * (wr * wr - wi * wi);
    m[2 * h + 2 * k] = m[2 * h + 2 * k + 1] = b * (-2 * wr * wi);
  }
  return m;
}

// Bins [k0, k1) of one spectrum row: out <- P * z + Q * swap(z) + add (add optional: a fixed spectrum).
// out may be z (each pair is read before it is written).
template <typename T, bool ADD>
inline void map_row(const T* z, T* out, const T* __restrict__ P, const T* __restrict__ Q,
                    const T* __restrict__ add, int64_t k0, int64_t k1) {
  for (int64_t k = k0; k < k1; ++k) {
    const T z0 = z[2 * k], z1 = z[2 * k + 1];
    out[2 * k] = P[2 * k] * z0 + Q[2 * k] * z1 + (ADD ? add[2 * k] : T(0));
    out[2 * k + 1] = P[2 * k + 1] * z1 + Q[2 * k + 1] * z0 + (ADD ? add[2 * k + 1] : T(0));
  }
}

// On real views (rows, h, 2) of raw spectra: out <- BinMap(d, w) z (+ add, a (h, 2) spectrum: the raw rfft
// of a bias in Makhoul order, so the bias costs no pass of its own). out may be z (in place).
void bin_map_into(Tensor& out, const Tensor& z, const Tensor& d, const Tensor& w, const c10::optional<Tensor>& add) {
  const int64_t h = z.size(-2), rows = h ? z.numel() / (2 * h) : 0;
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "bin_map", [&] {
    const scalar_t* zp = z.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const std::vector<scalar_t> tab = bin_table<scalar_t>(d, w);
    const scalar_t *P = tab.data(), *Q = P + 2 * h;
    const scalar_t* ap = opt_ptr<scalar_t>(add);
    at::parallel_for(0, rows, grain(2 * h), [&](int64_t r0, int64_t r1) {
      for (int64_t row = r0; row < r1; ++row) {
        if (ap) map_row<scalar_t, true>(zp + row * 2 * h, op + row * 2 * h, P, Q, ap, 0, h);
        else map_row<scalar_t, false>(zp + row * 2 * h, op + row * 2 * h, P, Q, ap, 0, h);
      }
    });
  });
}

// ---- the backward spectral pass ----

// Bins [k0, k1) of one row, one loop over interleaved pairs: (V) A += V * Z (pairs re*re, im*im) and
// X += V * swap(Z) (re*im, im*re); (MAP) Z <- P * Z + Q * swap(Z). acc = [A, X] (2h each).
template <typename T, bool V, bool MAP>
inline void spectral_block(const T* __restrict__ v, T* __restrict__ z, T* __restrict__ acc, int64_t h,
                           const T* __restrict__ P, const T* __restrict__ Q, int64_t k0, int64_t k1) {
  T* __restrict__ A = acc;
  T* __restrict__ X = acc + 2 * h;
  for (int64_t k = k0; k < k1; ++k) {
    const T z0 = z[2 * k], z1 = z[2 * k + 1];
    if constexpr (V) {
      const T v0 = v[2 * k], v1 = v[2 * k + 1];
      A[2 * k] += v0 * z0;
      A[2 * k + 1] += v1 * z1;
      X[2 * k] += v0 * z1;
      X[2 * k + 1] += v1 * z0;
    }
    if constexpr (MAP) {
      z[2 * k] = P[2 * k] * z0 + Q[2 * k] * z1;
      z[2 * k + 1] = P[2 * k + 1] * z1 + Q[2 * k + 1] * z0;
    }
  }
}

// Rows [r0, r1) in blocks of kBlockRows rows (outer), bins (middle) and rows (inner): a bin block's
// accumulators stay in L1 while the rows stream past, and each row block's sums are added to ``total`` once
// (blocked summation, see BlockSum).
template <typename T, bool V, bool MAP>
void spectral_rows(const T* v, T* z, T* total, int64_t h, const T* P, const T* Q, int64_t r0, int64_t r1) {
  constexpr int64_t kBlock = 256;
  BlockSum<T> block(V ? 4 * h : 0);
  for (int64_t b0 = r0; b0 < r1; b0 += kBlockRows) {
    const int64_t b1 = std::min(r1, b0 + kBlockRows);
    for (int64_t k0 = 0; k0 < h; k0 += kBlock) {
      const int64_t k1 = std::min(h, k0 + kBlock);
      for (int64_t row = b0; row < b1; ++row)
        spectral_block<T, V, MAP>(V ? v + row * 2 * h : nullptr, z + row * 2 * h, block.row(), h, P, Q, k0, k1);
    }
    if constexpr (V) block.step(total, true);
  }
}

// From raw spectra V = rfft(u) and Z = rfft(g) (real views (rows, h, 2)), one pass that
//  * (if v) sums over rows Re(wV) Re(wZ) and Im(wV) Im(wZ) -> sums (h, 2), the grad_d sums; with |w| = 1,
//    Re(a)Re(b) = (Re(a conj b) + Re(ab)) / 2 and Im(a)Im(b) = (Re(a conj b) - Re(ab)) / 2 for a = wV,
//    b = wZ, so the loop only accumulates the products of V and Z (no twiddle) and w^2 is applied once per bin;
//  * (if d) maps Z <- BinMap(d, w) Z in place.
// Returns the sums (empty without v).
Tensor spectral_grads_(const c10::optional<Tensor>& v, Tensor z, const Tensor& w, const c10::optional<Tensor>& d) {
  const int64_t h = z.size(-2), rows = h ? z.numel() / (2 * h) : 0;
  const int nt = at::get_num_threads();
  const int64_t nacc = v.has_value() ? 4 * h : 1;  // accumulator length per thread
  Tensor partial = at::zeros({nt, nacc}, z.options());
  Tensor sums = at::empty({v.has_value() ? h : 0, 2}, z.options());
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "spectral_grads_", [&] {
    using T = scalar_t;
    const T* vp = opt_ptr<T>(v);
    T* zp = z.data_ptr<T>();
    const std::vector<T> tab = d.has_value() ? bin_table<T>(*d, w) : std::vector<T>();
    const T *P = d.has_value() ? tab.data() : nullptr, *Q = P ? P + 2 * h : nullptr;
    T* pp = partial.data_ptr<T>();
    // One row range per thread (the partial accumulators are per thread).
    at::parallel_for(0, rows, std::max<int64_t>(grain(2 * h), (rows + nt - 1) / nt), [&](int64_t r0, int64_t r1) {
      T* acc = pp + at::get_thread_num() * nacc;
      if (vp && P) spectral_rows<T, true, true>(vp, zp, acc, h, P, Q, r0, r1);
      else if (vp) spectral_rows<T, true, false>(vp, zp, acc, h, P, Q, r0, r1);
      else if (P) spectral_rows<T, false, true>(vp, zp, acc, h, P, Q, r0, r1);
    });
    if (!vp) return;
    // Reduce the per-thread partials and apply the twiddle once per bin.
    std::vector<T> tot(nacc, T(0));
    for (int t = 0; t < nt; ++t)
      for (int64_t i = 0; i < nacc; ++i) tot[i] += pp[t * nacc + i];
    const T* wp = w.data_ptr<T>();
    T* sp = sums.data_ptr<T>();
    const T *A = tot.data(), *X = A + 2 * h;
    for (int64_t k = 0; k < h; ++k) {
      const T wr = wp[2 * k], wi = wp[2 * k + 1], cr = wr * wr - wi * wi, ci = 2 * wr * wi;
      const T conj_re = A[2 * k] + A[2 * k + 1];                                  // Re(V conj Z)
      const T prod_re = A[2 * k] - A[2 * k + 1], prod_im = X[2 * k] + X[2 * k + 1];  // V Z
      const T twisted = cr * prod_re - ci * prod_im;                              // Re(w^2 V Z)
      sp[2 * k] = (conj_re + twisted) / 2;
      sp[2 * k + 1] = (conj_re - twisted) / 2;
    }
  });
  return sums;
}

// ---- grad_x and grad_a together ----

// One row: gx[idx[m]] = a[m] g[m] (if gx) and acc[m] += x[idx[m]] g[m] (if acc), idx by pattern.
template <typename T, Pattern P>
void input_grads_row(const T* __restrict__ g, const T* __restrict__ x, const int32_t* __restrict__ ip,
                     const int32_t* __restrict__ inv, const T* __restrict__ a, const T* __restrict__ a_inv,
                     T* __restrict__ gx, T* __restrict__ acc, int64_t n) {
  const int64_t h = n / 2;
  if constexpr (P == Pattern::Makhoul) {  // idx[i] = 2i, idx[n-1-i] = 2i+1
    if (gx) {
      for (int64_t i = 0; i < h; ++i) {
        gx[2 * i] = a[i] * g[i];
        gx[2 * i + 1] = a[n - 1 - i] * g[n - 1 - i];
      }
      if (n & 1) gx[2 * h] = a[h] * g[h];
    }
    if (acc) {
      for (int64_t i = 0; i < h; ++i) acc[i] += x[2 * i] * g[i];
      for (int64_t i = 0; i < h; ++i) acc[n - 1 - i] += x[2 * i + 1] * g[n - 1 - i];
      if (n & 1) acc[h] += x[2 * h] * g[h];
    }
  } else if constexpr (P == Pattern::None) {
    if (gx) for (int64_t m = 0; m < n; ++m) gx[m] = a[m] * g[m];
    if (acc) for (int64_t m = 0; m < n; ++m) acc[m] += x[m] * g[m];
  } else {  // any other index (Inverse included): the scatter gx[idx[m]] = a[m] g[m] runs as the gather
            // gx[j] = a[inv[j]] g[inv[j]] (a[inv] precomputed), which vectorises
    if (gx) for (int64_t j = 0; j < n; ++j) gx[j] = a_inv[j] * g[inv[j]];
    if (acc) for (int64_t m = 0; m < n; ++m) acc[m] += x[ip[m]] * g[m];
  }
}

// grad_x[r, idx[m]] = a[m] g[r, m] (if need_x) and grad_a[m] = sum_r x[r, idx[m]] g[r, m] (if need_a),
// in one pass over g (idx optional: identity); gx may be g itself (in place). Returns grad_a (or empty).
Tensor input_grads_into(Tensor& gx, const Tensor& g, const Tensor& x, const c10::optional<Tensor>& idx,
                        const Tensor& a, bool need_x, bool need_a) {
  const int64_t n = g.size(-1), rows = n ? g.numel() / n : 0;
  const int nt = at::get_num_threads();
  const Pattern pat = classify(idx, n);
  Tensor partial = need_a ? at::zeros({nt, n}, g.options()) : at::empty({0}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "input_grads", [&] {
    using T = scalar_t;
    const T* gp = g.data_ptr<T>();
    const T* xp = x.data_ptr<T>();
    const T* ap = a.data_ptr<T>();
    const bool general = pat == Pattern::General || pat == Pattern::Inverse;
    const std::vector<int32_t> i32 = general ? index32(idx, n) : std::vector<int32_t>();
    std::vector<int32_t> inv(general ? n : 0);
    std::vector<T> a_inv(general ? n : 0);
    for (int64_t m = 0; m < (general ? n : 0); ++m) inv[i32[m]] = int32_t(m);
    for (int64_t j = 0; j < (general ? n : 0); ++j) a_inv[j] = ap[inv[j]];
    const int32_t* ip = i32.data();
    T* gxp = need_x ? gx.data_ptr<T>() : nullptr;
    T* pp = need_a ? partial.data_ptr<T>() : nullptr;
    at::parallel_for(0, rows, grain(n), [&](int64_t r0, int64_t r1) {
      T* total = pp ? pp + at::get_thread_num() * n : nullptr;
      BlockSum<T> block(pp ? n : 0);
      T* acc = pp ? block.row() : nullptr;
      std::vector<T> scratch, xscratch;
      for (int64_t r = r0; r < r1; ++r) {
        T* gxr = gxp ? gxp + r * n : nullptr;
        const T* gr = row_source(gp + r * n, static_cast<const T*>(gxr), scratch, n, general && gxr);
        const T* xr = acc && general ? row_source(xp + r * n, static_cast<const T*>(nullptr), xscratch, n, true) : xp + r * n;
        switch (pat) {
          case Pattern::Makhoul:
            input_grads_row<T, Pattern::Makhoul>(gr, xr, ip, inv.data(), ap, a_inv.data(), gxr, acc, n);
            break;
          case Pattern::None:
            input_grads_row<T, Pattern::None>(gr, xr, ip, inv.data(), ap, a_inv.data(), gxr, acc, n);
            break;
          default: input_grads_row<T, Pattern::General>(gr, xr, ip, inv.data(), ap, a_inv.data(), gxr, acc, n);
        }
        if (total) block.step(total, r + 1 == r1);
      }
    });
  });
  return need_a ? partial.sum(0) : partial;
}

// ---- parameters in the layer's order ----
//
// A layer keeps its diagonal a and bias b in the natural order; its middle acts in Makhoul order, so the
// kernels use a_p = a[param_idx], b_m = b[param_idx] (an O(n) gather per call, done here so that no Python
// runs per call and nothing is cached), and scatter the gradients back: grad_a[param_idx[j]] = grad_a_p[j].

Tensor gather_vec(const Tensor& p, const c10::optional<Tensor>& idx) {
  if (!idx.has_value()) return p;
  Tensor out = at::empty(p.sizes(), p.options());
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "gather_vec", [&] {
    const scalar_t* src = p.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const int64_t* ix = idx->data_ptr<int64_t>();
    const int64_t n = p.numel();
    TORCH_CHECK(idx->numel() == n, "torch_acdc native kernels: parameter index of length ", idx->numel(), " for ", n,
                " features");
    for (int64_t j = 0; j < n; ++j) {
      TORCH_CHECK(ix[j] >= 0 && ix[j] < n, "torch_acdc native kernels: parameter index entry ", ix[j], " out of range");
      o[j] = src[ix[j]];
    }
  });
  return out;
}

Tensor scatter_vec(const Tensor& g, const c10::optional<Tensor>& idx) {
  if (!idx.has_value() || g.numel() == 0) return g;
  Tensor out = at::empty(g.sizes(), g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "scatter_vec", [&] {
    const scalar_t* src = g.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const int64_t* ix = idx->data_ptr<int64_t>();
    for (int64_t j = 0, n = g.numel(); j < n; ++j) o[ix[j]] = src[j];
  });
  return out;
}

}  // namespace

namespace acdc_cpu {

// ---- the whole operator: one op call per forward and per backward ----
//
// The passes above plus torch's own FFTs (at::fft_rfft / at::fft_irfft), called from C++: no Python between
// the passes, which is most of the cost of a small layer or a batch of one. w: the twiddle as (h, 2) real
// pairs.

// y = G_out(M^-1 diag(d) M (a_p * G_in(x)) + b_m); the bias rides on the output gather, or without one (a
// layer inside a stack) is added as its spectrum rfft(b_m) in the bin map. With keep, also returns the
// forward spectrum V = rfft(a_p * G_in(x)) (complex (rows, h)) for the backward (which then needs 2 FFTs
// instead of 3); the bin map then writes a fresh buffer instead of V. Without keep the second output is empty.
std::tuple<Tensor, Tensor> acdc_forward(const Tensor& x_any, const Tensor& a_any, const Tensor& d_any,
                                        const c10::optional<Tensor>& b_any, const c10::optional<Tensor>& param_idx,
                                        const c10::optional<Tensor>& in_idx, const c10::optional<Tensor>& out_idx,
                                        const Tensor& w, bool keep) {
  const Tensor x = x_any.contiguous(), a = a_any.contiguous(), d = d_any.contiguous();
  c10::optional<Tensor> b;
  if (b_any.has_value()) b = b_any->contiguous();
  const int64_t n = x.size(-1);
  Tensor none = at::empty({0}, x.options());
  if (x.numel() == 0) return {at::empty(x.sizes(), x.options()), none};
  const Tensor a_p = gather_vec(a, param_idx);
  c10::optional<Tensor> b_m;
  if (b.has_value()) b_m = gather_vec(*b, param_idx);
  Tensor v = acdc_fft::rfft(gather_scale(x, in_idx, a_p, c10::nullopt, false));
  Tensor z = keep ? at::empty(v.sizes(), v.options()) : v;
  const bool spectral_bias = b_m.has_value() && !out_idx.has_value();
  Tensor zr = at::view_as_real(z);
  bin_map_into(zr, at::view_as_real(v), d, w,
               spectral_bias ? c10::optional<Tensor>(at::view_as_real(acdc_fft::rfft(*b_m))) : c10::nullopt);
  Tensor y = acdc_fft::irfft(z, n);
  z.reset();
  zr.reset();
  if (out_idx.has_value()) gather_scale_into(y, y, out_idx, c10::nullopt, b_m, true);
  return {y, keep ? v : none};
}

// Gradients of acdc_forward w.r.t. (x, a, d, b) (a, b in the parameter order), each an empty tensor when not
// needed. 3 FFTs and 4 passes, or 2 FFTs and 3 passes given the forward spectrum (+ a column sum of grad_y
// for the bias). unpack, scale_sq: the DCT tables turning the bin sums into grad_d.
std::tuple<Tensor, Tensor, Tensor, Tensor> acdc_backward(
    const Tensor& grad_y_any, const Tensor& x_any, const Tensor& a_any, const Tensor& d_any,
    const c10::optional<Tensor>& spectrum, const c10::optional<Tensor>& param_idx,
    const c10::optional<Tensor>& in_idx, const c10::optional<Tensor>& out_inv, const Tensor& w,
    const Tensor& unpack, const Tensor& scale_sq, bool need_x, bool need_a, bool need_d, bool need_b) {
  const Tensor grad_y = grad_y_any.contiguous(), x = x_any.contiguous(), a = a_any.contiguous(),
               d = d_any.contiguous();
  const int64_t n = x.size(-1);
  auto none = [&] { return at::empty({0}, x.options()); };  // distinct tensors: outputs must not alias
  Tensor grad_x = none(), grad_a = none(), grad_d = none(), grad_b = none();
  const Tensor a_p = gather_vec(a, param_idx);
  // The bias gradient is a plain column sum (exact zeros stay exact); with an output gather it is summed
  // in the gather's own pass.
  const bool fused_b = need_b && out_inv.has_value() && x.numel() > 0 && (need_x || need_a || need_d);
  if (need_b && !fused_b) {
    grad_b = grad_y.reshape({-1, n}).sum(0);
    if (out_inv.has_value()) grad_b = grad_b.index_select(0, *out_inv);
  }
  if (x.numel() == 0) {
    if (need_x) grad_x = at::empty(x.sizes(), x.options());
    if (need_a) grad_a = at::zeros({n}, x.options());
    if (need_d) grad_d = at::zeros({n}, x.options());
    return {grad_x, grad_a, grad_d, scatter_vec(grad_b, param_idx)};
  }
  if (!(need_x || need_a || need_d)) return {grad_x, grad_a, grad_d, scatter_vec(grad_b, param_idx)};
  Tensor gy;
  if (fused_b) {
    gy = at::empty(grad_y.sizes(), grad_y.options());
    gather_scale_into(gy, grad_y, out_inv, c10::nullopt, c10::nullopt, false, &grad_b);
  } else if (out_inv.has_value()) {
    gy = gather_scale(grad_y, out_inv, c10::nullopt, c10::nullopt, false);
  }
  Tensor zeta = acdc_fft::rfft(gy.defined() ? gy : grad_y);
  c10::optional<Tensor> v;
  const bool kept = spectrum.has_value() && spectrum->numel() > 0;
  if (need_d && kept) {
    v = at::view_as_real(*spectrum);
  } else if (need_d) {  // u = a_p * G_in(x), into gy's memory when gy is our own (now dead) temporary
    Tensor u;
    if (gy.defined()) {
      gather_scale_into(gy, x, in_idx, a_p, c10::nullopt, false);
      u = std::move(gy);
    } else {
      u = gather_scale(x, in_idx, a_p, c10::nullopt, false);
    }
    v = at::view_as_real(acdc_fft::rfft(u));
  }
  gy.reset();
  const bool need_xa = need_x || need_a;
  Tensor sums = spectral_grads_(v, at::view_as_real(zeta), w, need_xa ? c10::optional<Tensor>(d) : c10::nullopt);
  v.reset();
  if (need_d) grad_d = at::mul(sums.reshape({-1}).index_select(0, unpack), scale_sq);
  if (need_xa) {
    Tensor g = acdc_fft::irfft(zeta, n);
    zeta.reset();
    Tensor ga = input_grads_into(g, g, x, in_idx, a_p, need_x, need_a);  // g becomes grad_x in place
    if (need_x) grad_x = g;
    if (need_a) grad_a = scatter_vec(ga, param_idx);
  }
  return {grad_x, grad_a, grad_d, scatter_vec(grad_b, param_idx)};
}

}  // namespace acdc_cpu

namespace {

// The FFT plan cache's switch and size: mode 1 keeps plans (the default), 0 clears them and uses torch's FFT,
// -1 only asks. Returns the number of cached plans.
int64_t fft_plans(int64_t mode) {
  if (mode == 0) {
    acdc_fft::enabled() = false;
    acdc_fft::clear();
  } else if (mode == 1) {
    acdc_fft::enabled() = acdc_fft::dfti_present();
  }
  return acdc_fft::enabled() ? static_cast<int64_t>(acdc_fft::cached_plans()) : -1;
}

}  // namespace

// Schemas, one per path-facing op (the fakes are in torch_acdc/kernels/schemas.py, beside these).
TORCH_LIBRARY(torch_acdc_native, m) {
  m.def("acdc_forward(Tensor x, Tensor a, Tensor d, Tensor? b, Tensor? param_idx, Tensor? in_idx, "
        "Tensor? out_idx, Tensor w, bool keep) -> (Tensor, Tensor)");
  m.def("acdc_backward(Tensor grad_y, Tensor x, Tensor a, Tensor d, Tensor? spectrum, Tensor? param_idx, "
        "Tensor? in_idx, Tensor? out_inv, Tensor w, Tensor unpack, Tensor scale_sq, bool need_x, bool need_a, "
        "bool need_d, bool need_b) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("fft_plans(int mode) -> int");
}

TORCH_LIBRARY_IMPL(torch_acdc_native, CPU, m) {
  m.impl("acdc_forward", &acdc_cpu::acdc_forward);
  m.impl("acdc_backward", &acdc_cpu::acdc_backward);
}

TORCH_LIBRARY_IMPL(torch_acdc_native, CompositeExplicitAutograd, m) {
  m.impl("fft_plans", &fft_plans);
}
