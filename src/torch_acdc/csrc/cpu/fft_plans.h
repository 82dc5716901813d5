// Kept FFT plans: real FFTs of contiguous row batches through MKL's DFTI with descriptors that are created
// once per (precision, length, rows, direction, threads) and reused, instead of torch's CPU FFT, which
// creates and commits a descriptor on every call (measured: most of a small FFT's time; see
// docs/performance.md). The DFTI entry points are the ones libtorch_cpu exports; they are declared weak, so a
// torch build without MKL loads this library too and every call takes at::fft_rfft / at::fft_irfft.
//
// Bounded: at most kMaxPlans descriptors, least recently used evicted (a plan in use by another thread is
// freed when that call returns: shared ownership). Correct with any thread count (the count is part of the
// key and set as the descriptor's thread limit) and after fork (the child drops the parent's plans unused
// and builds its own). Any DFTI error falls back to torch's FFT for that call.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/fft_irfft.h>
#include <ATen/ops/fft_rfft.h>
#include <c10/util/complex.h>

#include <atomic>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include <pthread.h>

extern "C" {
typedef struct DFTI_DESCRIPTOR* DFTI_DESCRIPTOR_HANDLE;
// mkl_dfti.h (oneMKL): configuration parameters and values used here.
enum AcdcDftiParam { kDftiForwardScale = 4, kDftiBackwardScale = 5, kDftiNumberOfTransforms = 7,
                     kDftiConjugateEvenStorage = 10, kDftiPlacement = 11, kDftiInputDistance = 14,
                     kDftiOutputDistance = 15, kDftiThreadLimit = 27 };
enum AcdcDftiValue { kDftiReal = 33, kDftiComplexComplex = 39, kDftiNotInplace = 44 };
long DftiCreateDescriptor_s_1d(DFTI_DESCRIPTOR_HANDLE*, int domain, ...) __attribute__((weak));
long DftiCreateDescriptor_d_1d(DFTI_DESCRIPTOR_HANDLE*, int domain, ...) __attribute__((weak));
long DftiSetValue(DFTI_DESCRIPTOR_HANDLE, int param, ...) __attribute__((weak));
long DftiCommitDescriptor(DFTI_DESCRIPTOR_HANDLE) __attribute__((weak));
long DftiComputeForward(DFTI_DESCRIPTOR_HANDLE, void*, ...) __attribute__((weak));
long DftiComputeBackward(DFTI_DESCRIPTOR_HANDLE, void*, ...) __attribute__((weak));
long DftiFreeDescriptor(DFTI_DESCRIPTOR_HANDLE*) __attribute__((weak));
}

namespace acdc_fft {

using at::Tensor;

struct Plan {
  DFTI_DESCRIPTOR_HANDLE handle = nullptr;
  ~Plan() {
    if (handle && DftiFreeDescriptor) DftiFreeDescriptor(&handle);
  }
};

// (double precision, n, rows, inverse, threads)
using Key = std::tuple<bool, int64_t, int64_t, bool, int>;
constexpr size_t kMaxPlans = 64;

struct Cache {
  std::mutex mutex;
  std::list<std::pair<Key, std::shared_ptr<Plan>>> order;  // most recent first
  std::map<Key, decltype(order)::iterator> index;
};

inline std::atomic<bool>& enabled() {
  static std::atomic<bool> on{true};
  return on;
}

inline Cache*& cache_ptr() {
  static Cache* cache = nullptr;
  return cache;
}

// After fork the child must not touch the parent's plans (MKL's thread state) or its possibly-held mutex:
// it forgets them (a deliberate leak of at most kMaxPlans descriptors) and starts a fresh cache.
inline void forget_in_child() { cache_ptr() = new Cache(); }

inline Cache& cache() {
  static std::once_flag once;
  std::call_once(once, [] {
    cache_ptr() = new Cache();
    pthread_atfork(nullptr, nullptr, &forget_in_child);
  });
  return *cache_ptr();
}

inline bool dfti_present() {
  return DftiCreateDescriptor_s_1d && DftiCreateDescriptor_d_1d && DftiSetValue && DftiCommitDescriptor &&
         DftiComputeForward && DftiComputeBackward && DftiFreeDescriptor;
}

inline std::shared_ptr<Plan> make_plan(const Key& key) {
  const auto [dbl, n, rows, inverse, threads] = key;
  auto plan = std::make_shared<Plan>();
  const long len = static_cast<long>(n), h = static_cast<long>(n / 2 + 1);
  long st = dbl ? DftiCreateDescriptor_d_1d(&plan->handle, kDftiReal, len)
                : DftiCreateDescriptor_s_1d(&plan->handle, kDftiReal, len);
  if (st != 0) { plan->handle = nullptr; return nullptr; }
  st |= DftiSetValue(plan->handle, kDftiPlacement, kDftiNotInplace);
  st |= DftiSetValue(plan->handle, kDftiConjugateEvenStorage, kDftiComplexComplex);
  st |= DftiSetValue(plan->handle, kDftiNumberOfTransforms, static_cast<long>(rows));
  st |= DftiSetValue(plan->handle, kDftiInputDistance, inverse ? h : len);
  st |= DftiSetValue(plan->handle, kDftiOutputDistance, inverse ? len : h);
  st |= DftiSetValue(plan->handle, kDftiThreadLimit, static_cast<long>(threads));
  if (inverse) {
    if (dbl) st |= DftiSetValue(plan->handle, kDftiBackwardScale, 1.0 / static_cast<double>(n));
    else st |= DftiSetValue(plan->handle, kDftiBackwardScale, static_cast<float>(1.0 / static_cast<double>(n)));
  }
  if (st != 0 || DftiCommitDescriptor(plan->handle) != 0) return nullptr;
  return plan;
}

inline std::shared_ptr<Plan> plan_for(const Key& key) {
  Cache& c = cache();
  std::lock_guard<std::mutex> guard(c.mutex);
  auto hit = c.index.find(key);
  if (hit != c.index.end()) {
    c.order.splice(c.order.begin(), c.order, hit->second);
    return hit->second->second;
  }
  std::shared_ptr<Plan> plan = make_plan(key);
  if (!plan) return nullptr;
  c.order.emplace_front(key, plan);
  c.index[key] = c.order.begin();
  while (c.order.size() > kMaxPlans) {
    c.index.erase(c.order.back().first);
    c.order.pop_back();
  }
  return plan;
}

inline size_t cached_plans() {
  Cache& c = cache();
  std::lock_guard<std::mutex> guard(c.mutex);
  return c.order.size();
}

inline void clear() {
  Cache& c = cache();
  std::lock_guard<std::mutex> guard(c.mutex);
  c.index.clear();
  c.order.clear();
}

inline std::shared_ptr<Plan> usable_plan(const Tensor& t, int64_t n, bool inverse) {
  if (!enabled().load(std::memory_order_relaxed) || !dfti_present() || !t.is_contiguous() || t.numel() == 0)
    return nullptr;
  const int64_t width = inverse ? n / 2 + 1 : n;
  const int64_t rows = t.numel() / width;
  return plan_for(Key{t.scalar_type() == at::kDouble || t.scalar_type() == at::kComplexDouble, n, rows, inverse,
                      at::get_num_threads()});
}

// rfft over the last dimension of a contiguous real tensor (..., n) -> complex (..., n/2 + 1).
inline Tensor rfft(const Tensor& x) {
  const int64_t n = x.size(-1);
  if (auto plan = usable_plan(x, n, false)) {
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = n / 2 + 1;
    Tensor out = at::empty(shape, x.options().dtype(c10::toComplexType(x.scalar_type())));
    if (DftiComputeForward(plan->handle, x.data_ptr(), out.data_ptr()) == 0) return out;
  }
  return at::fft_rfft(x);
}

// irfft over the last dimension of a contiguous complex tensor (..., n/2 + 1) -> real (..., n), scaled 1/n.
inline Tensor irfft(const Tensor& z, int64_t n) {
  if (auto plan = usable_plan(z, n, true)) {
    std::vector<int64_t> shape(z.sizes().begin(), z.sizes().end());
    shape.back() = n;
    Tensor out = at::empty(shape, z.options().dtype(c10::toRealValueType(z.scalar_type())));
    if (DftiComputeBackward(plan->handle, z.data_ptr(), out.data_ptr()) == 0) return out;
  }
  return at::fft_irfft(z, n);
}

}  // namespace acdc_fft
