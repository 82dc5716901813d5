// The ACDC operator's CPU entry points (acdc_kernels.cpp), shared with the kernels that compose them
// (lstm_kernels.cpp). Shapes and semantics: see acdc_kernels.cpp and torch_acdc/functional.py.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <tuple>

namespace acdc_cpu {

using at::Tensor;

std::tuple<Tensor, Tensor> acdc_forward(const Tensor& x, const Tensor& a, const Tensor& d,
                                        const c10::optional<Tensor>& b, const c10::optional<Tensor>& param_idx,
                                        const c10::optional<Tensor>& in_idx, const c10::optional<Tensor>& out_idx,
                                        const Tensor& w, bool keep);

std::tuple<Tensor, Tensor, Tensor, Tensor> acdc_backward(
    const Tensor& grad_y, const Tensor& x, const Tensor& a, const Tensor& d,
    const c10::optional<Tensor>& spectrum, const c10::optional<Tensor>& param_idx,
    const c10::optional<Tensor>& in_idx, const c10::optional<Tensor>& out_inv, const Tensor& w,
    const Tensor& unpack, const Tensor& scale_sq, bool need_x, bool need_a, bool need_d, bool need_b);

}  // namespace acdc_cpu
