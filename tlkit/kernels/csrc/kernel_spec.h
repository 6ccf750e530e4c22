// Kernel kinds and limits shared by the C++ (CPU) and CUDA kernels; tlkit/kernels/_validation constants mirror them
// and tests/test_kernels.py parses this file to check that they agree.  Plain C++: no torch or CUDA header.
#pragma once

namespace tlkit {

// The `kernel` argument of every op.
enum KernelKind : int { kGaussian = 0, kLaplacian = 1 };

// Most bandwidths one call may average (multi-kernel MMD); the CUDA kernels keep their constants in registers.
constexpr int kMaxBandwidths = 16;

}  // namespace tlkit
