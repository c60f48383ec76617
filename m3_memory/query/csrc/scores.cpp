// Attention weights for the text scores (m3_memory/query/relevancy.py: attention_weights): exp
// in place over a [rows, cols] float32 block of logits, and each row's sum of squares of the
// results, row by row while the row is in cache. torch's float32 exp costs about 2 ns per element on this
// project's CPUs, and the squares another pass; this exp, Cephes' single-precision expf (range
// reduction by ln 2 in two parts, a degree-7 polynomial, the power of two set in the exponent
// bits), is within 2 ulp of the exact exponential and vectorises (AVX2 + FMA where the CPU has
// them, chosen at load time).
//
// Inputs are clamped to [-87.3, 88.3] (float32's normal range); the scores' logits are
// cosine / temperature - 1 / temperature >= -2 / temperature, so the caller uses this only for
// temperatures above 2 / 87.

#pragma GCC optimize("no-trapping-math")  // lets the clamp below become min/max instructions

#include <algorithm>
#include <cstdint>

namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define M3_CLONES __attribute__((target_clones("avx2,fma", "default")))
#else
#define M3_CLONES
#endif

inline float exp_cephes(float x) {
    x = std::min(std::max(x, -87.3f), 88.3f);
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 2^23)
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    const float z = r * r;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * z + r + 1.0f;
    return y * __builtin_bit_cast(float, (static_cast<int32_t>(n) + 127) << 23);
}

constexpr int LANES = 8;  // partial sums of squares, so the sum vectorises without reassociating floats

M3_CLONES void exp_row(int cols, float* __restrict e, float* __restrict sq) {
    for (int j = 0; j < cols; ++j) e[j] = exp_cephes(e[j]);
    float part[LANES] = {};
    int j = 0;
    for (; j + LANES <= cols; j += LANES)
        for (int k = 0; k < LANES; ++k) part[k] += e[j + k] * e[j + k];
    float s = 0.0f;
    for (; j < cols; ++j) s += e[j] * e[j];
    for (int k = 0; k < LANES; ++k) s += part[k];
    *sq = s;
}

}  // namespace

extern "C" {

// e [rows, cols] (row-major, float32): e <- exp(e) in place; sq [rows] <- the sum of each row's
// squared results.
int m3_exp_rows(int rows, int cols, float* e, float* sq) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < rows; ++i) exp_row(cols, e + static_cast<int64_t>(i) * cols, sq + i);
    return 0;
}

}
