// The time loop of an ACDC LSTM layer in C++: forward and backpropagation through time, as nn.LSTM's own
// kernel runs its loop natively. Per step the hidden stack (depth L linear ACDC layers on N = 4H features,
// Makhoul working order, the shuffles between layers fused into each layer's input gather) is the ACDC
// operator of acdc_kernels.cpp, and the LSTM cell is one fused pass. Same maths as ACDCLSTMCell.step (the
// reference it is tested against, torch_acdc/recurrent.py):
//
//   gates = xg[t] + hh(h[t-1])        (hh skipped at t = 0 without an initial state: hh(0) = 0)
//   i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of the four H-wide chunks (nn.LSTM's order)
//   c[t] = f * c[t-1] + i * g,   h[t] = o * tanh(c[t])
//
// Saved for the backward: each layer's input and (keep) its forward spectrum per step, the activations
// (T, B, 4H) and c (T, B, H).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/add.h>
#include <ATen/ops/rsub.h>
#include <ATen/ops/sub.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/tanh.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "acdc_ops.h"

namespace {

using at::Tensor;

// The cell as torch's own vectorised elementwise kernels (sigmoid, tanh: SIMD; a scalar libm loop was 10x
// slower and dominated the step), on (B, 4H) gates whose chunks are nn.LSTM's (i, f, g, o).

// acts (B, 4H) <- (sigmoid i, sigmoid f, tanh g, sigmoid o) of xg + hh (hh may be undefined); c, h (B, H).
void cell_forward(const Tensor& xg, const Tensor& hh, const Tensor& c_prev, Tensor acts, Tensor c, Tensor h) {
  const int64_t H = c.size(1);
  const Tensor gates = hh.defined() ? at::add(xg, hh) : xg;
  at::sigmoid_out(acts, gates);
  Tensor g = acts.narrow(1, 2 * H, H);
  at::tanh_out(g, gates.narrow(1, 2 * H, H));
  at::mul_out(c, acts.narrow(1, 0, H), g);
  if (c_prev.defined()) c.addcmul_(acts.narrow(1, H, H), c_prev);
  at::tanh_out(h, c);
  h.mul_(acts.narrow(1, 3 * H, H));
}

// One step back: dgates (B, 4H) from dh (B, H) and dc (B, H; in: the gradient into c[t], out: into c[t-1]).
void cell_backward(const Tensor& acts, const Tensor& c, const Tensor& c_prev, const Tensor& dh, Tensor dc,
                   Tensor dgates) {
  const int64_t H = c.size(1);
  const Tensor i = acts.narrow(1, 0, H), f = acts.narrow(1, H, H), g = acts.narrow(1, 2 * H, H),
               o = acts.narrow(1, 3 * H, H);
  const Tensor tc = at::tanh(c);
  dc.add_(dh * o * (1 - tc * tc));                                    // gradient into c[t]
  dgates.narrow(1, 0, H).copy_(dc * g * i * (1 - i));
  if (c_prev.defined()) dgates.narrow(1, H, H).copy_(dc * c_prev * f * (1 - f));
  else dgates.narrow(1, H, H).zero_();
  dgates.narrow(1, 2 * H, H).copy_(dc * i * (1 - g * g));
  dgates.narrow(1, 3 * H, H).copy_(dh * tc * o * (1 - o));
  dc.mul_(f);                                                         // gradient into c[t-1]
}

using Gathers = c10::List<c10::optional<Tensor>>;

void check_inputs(const Tensor& xg, const Tensor& a, const Tensor& d, const Gathers& in_idx) {
  TORCH_CHECK(xg.dim() == 3 && xg.size(2) % 4 == 0, "acdc_lstm: xg must be (T, B, 4H), got ", xg.sizes());
  TORCH_CHECK(a.dim() == 2 && a.sizes() == d.sizes() && a.size(1) == xg.size(2),
              "acdc_lstm: a, d must be (depth, 4H), got ", a.sizes(), " and ", d.sizes());
  TORCH_CHECK(static_cast<int64_t>(in_idx.size()) == a.size(0), "acdc_lstm: one input gather per layer");
}

// Forward over T steps. Returns (h (T, B, H), c (T, B, H), acts (T, B, 4H) or empty, layer inputs [T * L]
// or [], spectra [T * L] or []); save=false (inference) keeps nothing but h and c.
std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>, std::vector<Tensor>> lstm_forward(
    const Tensor& xg_any, const c10::optional<Tensor>& h0, const c10::optional<Tensor>& c0, const Tensor& a,
    const Tensor& d, const Gathers& in_idx, const Tensor& perm, const Tensor& iperm, const Tensor& w, bool keep,
    bool save) {
  check_inputs(xg_any, a, d, in_idx);
  const Tensor xg = xg_any.contiguous();
  const int64_t T = xg.size(0), B = xg.size(1), N = xg.size(2), H = N / 4, L = a.size(0);
  Tensor out = at::empty({T, B, H}, xg.options()), c_all = at::empty({T, B, H}, xg.options());
  Tensor acts = at::empty({save ? T : 1, B, N}, xg.options());
  std::vector<Tensor> inputs, spectra;
  const Tensor h0c = h0.has_value() ? h0->contiguous() : Tensor(), c0c = c0.has_value() ? c0->contiguous() : Tensor();
  for (int64_t t = 0; t < T; ++t) {
    Tensor hh;
    if (t > 0 || h0.has_value()) {
      Tensor v = at::zeros({B, N}, xg.options());
      v.narrow(1, 0, H).copy_(t > 0 ? out.select(0, t - 1) : h0c);
      for (int64_t i = 0; i < L; ++i) {
        auto [y, spec] = acdc_cpu::acdc_forward(v, a.select(0, i), d.select(0, i), c10::nullopt, perm, in_idx.get(i),
                                                i == L - 1 ? c10::optional<Tensor>(iperm) : c10::nullopt, w,
                                                keep && save);
        if (save) {
          inputs.push_back(v);
          spectra.push_back(spec);
        }
        v = y;
      }
      hh = v;
    } else if (save) {
      for (int64_t i = 0; i < L; ++i) {
        inputs.push_back(at::empty({0}, xg.options()));
        spectra.push_back(at::empty({0}, xg.options()));
      }
    }
    const Tensor c_prev = t > 0 ? c_all.select(0, t - 1) : (c0.has_value() ? c0c : Tensor());
    cell_forward(xg.select(0, t), hh, c_prev, acts.select(0, save ? t : 0), c_all.select(0, t), out.select(0, t));
  }
  return {out, c_all, save ? acts : at::empty({0}, xg.options()), inputs, spectra};
}

// Backpropagation through time. grad_h (T, B, H) and grad_c (T, B, H) are the gradients of the outputs h and
// c (either may be empty: zeros). Returns (grad_xg (T, B, 4H), grad_h0 (B, H) or empty, grad_c0 (B, H) or
// empty, grad_a (L, 4H), grad_d (L, 4H)).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_backward(
    const Tensor& grad_h_any, const Tensor& grad_c_any, const c10::optional<Tensor>& h0,
    const c10::optional<Tensor>& c0, const Tensor& c_all, const Tensor& acts, at::TensorList inputs,
    at::TensorList spectra, const Tensor& a, const Tensor& d, const Gathers& in_idx, const Tensor& perm,
    const Tensor& w, const Tensor& unpack, const Tensor& scale_sq) {
  const int64_t T = acts.size(0), B = acts.size(1), N = acts.size(2), H = N / 4, L = a.size(0);
  const auto opts = acts.options();
  const Tensor grad_h = grad_h_any.numel() ? grad_h_any.contiguous() : Tensor();
  const Tensor grad_c = grad_c_any.numel() ? grad_c_any.contiguous() : Tensor();
  Tensor grad_xg = at::empty({T, B, N}, opts);
  Tensor grad_a = at::zeros({L, N}, opts), grad_d = at::zeros({L, N}, opts);
  Tensor dh = at::zeros({B, H}, opts), dc = at::zeros({B, H}, opts), dh_next = at::zeros({B, H}, opts);
  const Tensor c0c = c0.has_value() ? c0->contiguous() : Tensor();
  for (int64_t t = T - 1; t >= 0; --t) {
    dh.copy_(dh_next);
    if (grad_h.defined()) dh.add_(grad_h.select(0, t));
    if (grad_c.defined()) dc.add_(grad_c.select(0, t));
    Tensor dgates = grad_xg.select(0, t);
    const Tensor c_prev = t > 0 ? c_all.select(0, t - 1) : (c0.has_value() ? c0c : Tensor());
    cell_backward(acts.select(0, t), c_all.select(0, t), c_prev, dh, dc, dgates);
    if (t > 0 || h0.has_value()) {
      Tensor g = dgates;
      for (int64_t i = L - 1; i >= 0; --i) {
        const Tensor& spec = spectra[t * L + i];
        auto [gx, ga, gd, gb] = acdc_cpu::acdc_backward(
            g, inputs[t * L + i], a.select(0, i), d.select(0, i),
            spec.numel() ? c10::optional<Tensor>(spec) : c10::nullopt, perm, in_idx.get(i),
            i == L - 1 ? c10::optional<Tensor>(perm) : c10::nullopt, w, unpack, scale_sq, true, true, true, false);
        grad_a.select(0, i).add_(ga);
        grad_d.select(0, i).add_(gd);
        g = gx;
      }
      dh_next.copy_(g.narrow(1, 0, H));
    } else {
      dh_next.zero_();
    }
  }
  return {grad_xg, h0.has_value() ? dh_next : at::empty({0}, opts), c0.has_value() ? dc : at::empty({0}, opts),
          grad_a, grad_d};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(torch_acdc_native, m) {
  m.def("acdc_lstm_forward(Tensor xg, Tensor? h0, Tensor? c0, Tensor a, Tensor d, Tensor?[] in_idx, Tensor perm, "
        "Tensor iperm, Tensor w, bool keep, bool save) -> (Tensor, Tensor, Tensor, Tensor[], Tensor[])");
  m.def("acdc_lstm_backward(Tensor grad_h, Tensor grad_c, Tensor? h0, Tensor? c0, Tensor c_all, Tensor acts, "
        "Tensor[] inputs, Tensor[] spectra, Tensor a, Tensor d, Tensor?[] in_idx, Tensor perm, Tensor w, "
        "Tensor unpack, Tensor scale_sq) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(torch_acdc_native, CPU, m) {
  m.impl("acdc_lstm_forward", &lstm_forward);
  m.impl("acdc_lstm_backward", &lstm_backward);
}
