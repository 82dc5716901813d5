// Fused CPU kernels for the memory-bound passes of ACDC (torch_acdc/native.py builds and wraps them).
// Each is one pass over its (rows, n) operands, parallel over rows with at::parallel_for (torch's pool).
// All inputs are contiguous; the Python wrapper checks shapes and dtypes (float32 / float64).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/Dispatch.h>
#include <c10/util/Optional.h>
#include <torch/library.h>

#include <vector>

namespace {

using at::Tensor;

// Rows per task: enough elements per task that scheduling costs nothing.
int64_t grain(int64_t n) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, n)); }

const int64_t* idx_ptr(const c10::optional<Tensor>& idx) {
  return idx.has_value() ? idx->data_ptr<int64_t>() : nullptr;
}

template <typename T>
const T* opt_ptr(const c10::optional<Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

// out[r, j] = x[r, idx[j]] * s[j] + b[j]   (idx, s, b each optional)
Tensor gather_scale(const Tensor& x, const c10::optional<Tensor>& idx, const c10::optional<Tensor>& s,
                    const c10::optional<Tensor>& b) {
  const int64_t n = x.size(-1), rows = n ? x.numel() / n : 0;
  Tensor out = at::empty(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gather_scale", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const int64_t* ip = idx_ptr(idx);
    const scalar_t* sp = opt_ptr<scalar_t>(s);
    const scalar_t* bp = opt_ptr<scalar_t>(b);
    at::parallel_for(0, rows, grain(n), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* xr = xp + r * n;
        scalar_t* orow = op + r * n;
        if (ip) {
          if (sp && bp) for (int64_t j = 0; j < n; ++j) orow[j] = xr[ip[j]] * sp[j] + bp[j];
          else if (sp) for (int64_t j = 0; j < n; ++j) orow[j] = xr[ip[j]] * sp[j];
          else if (bp) for (int64_t j = 0; j < n; ++j) orow[j] = xr[ip[j]] + bp[j];
          else for (int64_t j = 0; j < n; ++j) orow[j] = xr[ip[j]];
        } else {
          for (int64_t j = 0; j < n; ++j) orow[j] = xr[j] * (sp ? sp[j] : scalar_t(1)) + (bp ? bp[j] : scalar_t(0));
        }
      }
    });
  });
  return out;
}

// The middle M^-1 diag(d) M of ACDC on one raw spectrum bin k (Z = rfft(u), no twiddle applied) is the
// symmetric real 2x2 [[p, q], [q, r]] on (Re Z, Im Z): with a = (d[k] + d[n-k]) / 2, b = (d[k] - d[n-k]) / 2
// (d[n] := 0) and c = conj(w_k)^2, p = a + b Re c, q = b Im c, r = a - b Re c. w (h, 2) is the twiddle.
template <typename T>
struct BinMap {
  const T* d;
  const T* w;
  int64_t n;
  void coeffs(int64_t k, T& p, T& q, T& r) const {
    const T d1 = d[k], d2 = k == 0 ? T(0) : d[n - k];
    const T a = (d1 + d2) / 2, b = (d1 - d2) / 2, wr = w[2 * k], wi = w[2 * k + 1];
    const T cr = wr * wr - wi * wi, ci = -2 * wr * wi;
    p = a + b * cr;
    q = b * ci;
    r = a - b * cr;
  }
};

// Per-bin coefficients (h, 3) of BinMap, computed once per call into a small table.
template <typename T>
std::vector<T> bin_table(const Tensor& d, const Tensor& w) {
  const int64_t n = d.size(0), h = n / 2 + 1;
  BinMap<T> bm{d.data_ptr<T>(), w.data_ptr<T>(), n};
  std::vector<T> m(3 * h);
  for (int64_t k = 0; k < h; ++k) bm.coeffs(k, m[3 * k], m[3 * k + 1], m[3 * k + 2]);
  return m;
}

// In place on the real view z (rows, h, 2) of raw spectra: z <- BinMap(d, w) z per bin.
void bin_map_(Tensor z, const Tensor& d, const Tensor& w) {
  const int64_t h = z.size(-2), rows = h ? z.numel() / (2 * h) : 0;
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "bin_map_", [&] {
    scalar_t* zp = z.data_ptr<scalar_t>();
    const std::vector<scalar_t> tab = bin_table<scalar_t>(d, w);
    const scalar_t* mp = tab.data();
    at::parallel_for(0, rows, grain(2 * h), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        scalar_t* zr = zp + r * 2 * h;
        for (int64_t k = 0; k < h; ++k) {
          const scalar_t re = zr[2 * k], im = zr[2 * k + 1];
          zr[2 * k] = mp[3 * k] * re + mp[3 * k + 1] * im;
          zr[2 * k + 1] = mp[3 * k + 1] * re + mp[3 * k + 2] * im;
        }
      }
    });
  });
}

// Sum over rows of (Re(w V) Re(w Z), Im(w V) Im(w Z)) -> (h, 2), V and Z raw spectra as real views
// (rows, h, 2); in the same pass (if d is given) Z <- BinMap(d, w) Z. One read of V, one read-write of Z.
Tensor diag_sums_map_(const Tensor& v, Tensor z, const Tensor& w, const c10::optional<Tensor>& d) {
  const int64_t h = z.size(-2), rows = h ? z.numel() / (2 * h) : 0;
  const int nt = at::get_num_threads();
  Tensor partial = at::zeros({nt, h, 2}, z.options());
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "diag_sums_map_", [&] {
    const scalar_t* vp = v.data_ptr<scalar_t>();
    scalar_t* zp = z.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    const std::vector<scalar_t> tab = d.has_value() ? bin_table<scalar_t>(*d, w) : std::vector<scalar_t>();
    const scalar_t* mp = d.has_value() ? tab.data() : nullptr;
    scalar_t* pp = partial.data_ptr<scalar_t>();
    at::parallel_for(0, rows, grain(2 * h), [&](int64_t r0, int64_t r1) {
      scalar_t* acc = pp + at::get_thread_num() * 2 * h;
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* vr = vp + r * 2 * h;
        scalar_t* zr = zp + r * 2 * h;
        for (int64_t k = 0; k < h; ++k) {
          const scalar_t wr = wp[2 * k], wi = wp[2 * k + 1];
          const scalar_t vre = vr[2 * k], vim = vr[2 * k + 1], zre = zr[2 * k], zim = zr[2 * k + 1];
          acc[2 * k] += (wr * vre - wi * vim) * (wr * zre - wi * zim);
          acc[2 * k + 1] += (wr * vim + wi * vre) * (wr * zim + wi * zre);
          if (mp) {
            zr[2 * k] = mp[3 * k] * zre + mp[3 * k + 1] * zim;
            zr[2 * k + 1] = mp[3 * k + 1] * zre + mp[3 * k + 2] * zim;
          }
        }
      }
    });
  });
  return partial.sum(0);
}

// grad_x[r, idx[m]] = a[m] g[r, m] (if need_x) and grad_a[m] = sum_r x[r, idx[m]] g[r, m] (if need_a),
// in one pass over g (idx optional: identity). Returns (grad_x, grad_a), an empty tensor for one not needed.
std::tuple<Tensor, Tensor> input_grads(const Tensor& g, const Tensor& x, const c10::optional<Tensor>& idx,
                                       const Tensor& a, bool need_x, bool need_a) {
  const int64_t n = g.size(-1), rows = n ? g.numel() / n : 0;
  const int nt = at::get_num_threads();
  Tensor gx = need_x ? at::empty(g.sizes(), g.options()) : at::empty({0}, g.options());
  Tensor partial = need_a ? at::zeros({nt, n}, g.options()) : at::empty({0}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "input_grads", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* ap = a.data_ptr<scalar_t>();
    const int64_t* ip = idx_ptr(idx);
    scalar_t* gxp = need_x ? gx.data_ptr<scalar_t>() : nullptr;
    scalar_t* pp = need_a ? partial.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, rows, grain(n), [&](int64_t r0, int64_t r1) {
      scalar_t* acc = pp ? pp + at::get_thread_num() * n : nullptr;
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* gr = gp + r * n;
        const scalar_t* xr = xp + r * n;
        scalar_t* gxr = gxp ? gxp + r * n : nullptr;
        if (ip) {
          if (gxr) for (int64_t m = 0; m < n; ++m) gxr[ip[m]] = ap[m] * gr[m];
          if (acc) for (int64_t m = 0; m < n; ++m) acc[m] += xr[ip[m]] * gr[m];
        } else {
          if (gxr) for (int64_t m = 0; m < n; ++m) gxr[m] = ap[m] * gr[m];
          if (acc) for (int64_t m = 0; m < n; ++m) acc[m] += xr[m] * gr[m];
        }
      }
    });
  });
  return {gx, need_a ? partial.sum(0) : partial};
}

}  // namespace

TORCH_LIBRARY(torch_acdc_native, m) {
  m.def("gather_scale(Tensor x, Tensor? idx, Tensor? s, Tensor? b) -> Tensor");
  m.def("bin_map_(Tensor(a!) z, Tensor d, Tensor w) -> ()");
  m.def("diag_sums_map_(Tensor v, Tensor(a!) z, Tensor w, Tensor? d) -> Tensor");
  m.def("input_grads(Tensor g, Tensor x, Tensor? idx, Tensor a, bool need_x, bool need_a) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(torch_acdc_native, CPU, m) {
  m.impl("gather_scale", &gather_scale);
  m.impl("bin_map_", &bin_map_);
  m.impl("diag_sums_map_", &diag_sums_map_);
  m.impl("input_grads", &input_grads);
}
