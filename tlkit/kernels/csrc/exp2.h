// The vectorisable exp of the fused CPU kernels.  No torch header: benchmarks/bench_kernels.py compiles it alone
// (with the extension's flags) to measure the exp rate that is the floor of every kernel row.
#pragma once

#include <bit>
#include <cstdint>

#define TLKIT_INLINE inline __attribute__((always_inline))

namespace tlkit::cpu {

// 2^x for x <= 0, vectorisable (GCC turns it into SIMD code inside `omp simd` loops).  x = n + f with n the nearest
// integer, found by the 1.5 * 2^(mantissa bits) shift (exact without -ffast-math), and |f| <= 1/2; 2^f by its Taylor
// polynomial (truncation < 5.2e-9 in fp32, < 4.2e-18 in fp64); 2^n built in the exponent bits.  Arguments at or
// below the smallest normal exponent give exactly 0.
TLKIT_INLINE float exp2_nonpositive(float x) {
  constexpr float shift = 12582912.0f;  // 1.5 * 2^23
  x = x > -127.0f ? x : -127.0f;
  const float shifted = x + shift;
  const float f = x - (shifted - shift);
  float p = 1.525273380405984028e-5f;
  p = p * f + 1.5403530393381609954e-4f;
  p = p * f + 1.3333558146428443423e-3f;
  p = p * f + 9.618129107628477162e-3f;
  p = p * f + 5.5504108664821579953e-2f;
  p = p * f + 2.4022650695910071233e-1f;
  p = p * f + 6.9314718055994530942e-1f;
  p = p * f + 1.0f;
  const int32_t n = std::bit_cast<int32_t>(shifted) - 0x4B400000;
  return p * std::bit_cast<float>((n + 127) << 23);  // n = -127 gives +0.0
}

TLKIT_INLINE double exp2_nonpositive(double x) {
  constexpr double shift = 6755399441055744.0;  // 1.5 * 2^52
  x = x > -1023.0 ? x : -1023.0;
  const double shifted = x + shift;
  const double f = x - (shifted - shift);
  double p = 1.3691488853904128881e-12;
  p = p * f + 2.5678435993488205142e-11;
  p = p * f + 4.4455382718708114976e-10;
  p = p * f + 7.0549116208011233299e-9;
  p = p * f + 1.0178086009239699727e-7;
  p = p * f + 1.3215486790144309488e-6;
  p = p * f + 1.525273380405984028e-5;
  p = p * f + 1.5403530393381609954e-4;
  p = p * f + 1.3333558146428443423e-3;
  p = p * f + 9.618129107628477162e-3;
  p = p * f + 5.5504108664821579953e-2;
  p = p * f + 2.4022650695910071233e-1;
  p = p * f + 6.9314718055994530942e-1;
  p = p * f + 1.0;
  const int64_t n = std::bit_cast<int64_t>(shifted) - 0x4338000000000000LL;
  return p * std::bit_cast<double>((n + 1023) << 52);  // n = -1023 gives +0.0
}

}  // namespace tlkit::cpu
