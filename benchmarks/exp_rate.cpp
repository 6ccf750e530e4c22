// The exp floor of bench_kernels.py: tlkit's own vectorised exp (tlkit/kernels/csrc/exp2.h) summed over a
// cache-resident block on one thread, as the fused kernels sum it.  The benchmark compiles this file with the
// extension's C++ flags and calls it through ctypes.
#include "exp2.h"

extern "C" double tlkit_exp2_sums(const float* t, long n, float rate, int repeats) {
  double total = 0.0;
  for (int r = 0; r < repeats; ++r) {
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (long j = 0; j < n; ++j) acc += tlkit::cpu::exp2_nonpositive(rate * t[j]);
    total += acc;
  }
  return total;
}
