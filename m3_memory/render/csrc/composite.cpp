// Alpha compositing of projected 2D Gaussians on the CPU, forward and backward.
// Plain C++ with OpenMP over 16x16 tiles; called through ctypes on raw float32 pointers.
// Gaussians arrive sorted front to back. Per Gaussian: mean2d [2] (pixels, gsplat's
// convention: pixel (i, j) is sampled at (j + 0.5, i + 0.5)), conic [3] = (a, b, c) of the
// inverse 2D covariance [[a, b], [b, c]], opacity, D feature channels, and the half extent
// of its bounding box [2] in pixels (0 = culled).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {
constexpr int TILE = 16;
constexpr float ALPHA_MAX = 0.999f;
constexpr float ALPHA_MIN = 1.0f / 255.0f;
constexpr float T_MIN = 1e-4f;

int num_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

struct Bins {
    int tiles_x, tiles_y;
    std::vector<std::vector<int32_t>> lists;  // per tile, Gaussian ids front to back
};

// Smallest 0.5 * d^T conic d over the rectangle [x0, x1] x [y0, y1] of offsets d from the mean:
// 0 when the mean is inside, else the minimum over the four edges (a 1D quadratic on each).
float min_sigma(float a, float b, float c, float x0, float x1, float y0, float y1) {
    if (x0 <= 0.f && 0.f <= x1 && y0 <= 0.f && 0.f <= y1) return 0.f;
    auto q = [&](float dx, float dy) { return 0.5f * (a * dx * dx + c * dy * dy) + b * dx * dy; };
    float best = INFINITY;
    for (float dy : {y0, y1}) best = std::min(best, q(std::clamp(-b * dy / a, x0, x1), dy));
    for (float dx : {x0, x1}) best = std::min(best, q(dx, std::clamp(-b * dx / c, y0, y1)));
    return best;
}

// Each Gaussian goes to the tiles its bounding box covers whose pixel centres come within its
// alpha cut-off (sigma <= ln(255 opacity), the same test alpha_at makes per pixel): a thin,
// slanted Gaussian does not fill every tile of its box. Threads bin contiguous ranges of
// Gaussians (static schedule: thread order is Gaussian order) and the tiles' lists are then
// joined thread by thread, so every list stays front to back.
Bins bin(int n, int width, int height, const float* means2d, const float* conics, const float* opac,
         const float* extent) {
    Bins b{(width + TILE - 1) / TILE, (height + TILE - 1) / TILE, {}};
    const size_t ntiles = static_cast<size_t>(b.tiles_x) * b.tiles_y;
    b.lists.resize(ntiles);
    const int threads = num_threads();
    std::vector<std::vector<std::vector<int32_t>>> part(threads, std::vector<std::vector<int32_t>>(ntiles));
#pragma omp parallel num_threads(threads)
    {
        std::vector<std::vector<int32_t>>& lists = part[thread_id()];
#pragma omp for schedule(static)
        for (int g = 0; g < n; ++g) {
            const float ex = extent[2 * g], ey = extent[2 * g + 1];
            if (ex <= 0.f || ey <= 0.f) continue;
            const float mx = means2d[2 * g], my = means2d[2 * g + 1];
            const float ca = conics[3 * g], cb = conics[3 * g + 1], cc = conics[3 * g + 2];
            const float cut = 1.001f * std::log(std::max(255.f * opac[g], 1.f)) + 1e-6f;
            // pixel centres px + 0.5 within [m - e, m + e]
            const int x0 = std::max(0, static_cast<int>(std::ceil(mx - ex - 0.5f)));
            const int x1 = std::min(width - 1, static_cast<int>(std::floor(mx + ex - 0.5f)));
            const int y0 = std::max(0, static_cast<int>(std::ceil(my - ey - 0.5f)));
            const int y1 = std::min(height - 1, static_cast<int>(std::floor(my + ey - 0.5f)));
            if (x0 > x1 || y0 > y1) continue;
            const bool small = x1 / TILE == x0 / TILE && y1 / TILE == y0 / TILE;
            for (int ty = y0 / TILE; ty <= y1 / TILE; ++ty)
                for (int tx = x0 / TILE; tx <= x1 / TILE; ++tx) {
                    // pixel centres of this tile, as offsets from the mean
                    const float lx = std::max(tx * TILE, x0) + 0.5f - mx, hx = std::min(tx * TILE + TILE - 1, x1) + 0.5f - mx;
                    const float ly = std::max(ty * TILE, y0) + 0.5f - my, hy = std::min(ty * TILE + TILE - 1, y1) + 0.5f - my;
                    if (small || min_sigma(ca, cb, cc, lx, hx, ly, hy) <= cut)
                        lists[static_cast<size_t>(ty) * b.tiles_x + tx].push_back(g);
                }
        }
    }
#pragma omp parallel for schedule(dynamic, 16) num_threads(threads)
    for (long t = 0; t < static_cast<long>(ntiles); ++t) {
        size_t total = 0;
        for (int th = 0; th < threads; ++th) total += part[th][t].size();
        b.lists[t].reserve(total);
        for (int th = 0; th < threads; ++th) b.lists[t].insert(b.lists[t].end(), part[th][t].begin(), part[th][t].end());
    }
    return b;
}

// One Gaussian's 2D footprint, packed so a tile's list is read contiguously.
struct Splat {
    float mx, my, a, b, c, opacity;
    float sigma_max;  // beyond this Mahalanobis half-distance alpha < ALPHA_MIN: skip the exp
    int32_t id;
};

// One tile's list, front to back: its splats and their feature rows [list size, D], packed so
// pixels read them contiguously.
struct Tile {
    std::vector<Splat> splats;
    std::vector<float> feats;
};

Tile gather(const std::vector<int32_t>& list, int d, const float* means2d, const float* conics, const float* opac,
            const float* feats) {
    Tile tile{std::vector<Splat>(list.size()), std::vector<float>(list.size() * d)};
    for (size_t k = 0; k < list.size(); ++k) {
        const int g = list[k];
        const float o = opac[g];
        tile.splats[k] = {means2d[2 * g], means2d[2 * g + 1], conics[3 * g], conics[3 * g + 1], conics[3 * g + 2], o,
                          o * 255.f > 1.f ? std::log(o * 255.f) : -1.f, g};
        std::copy(feats + static_cast<size_t>(g) * d, feats + static_cast<size_t>(g + 1) * d, tile.feats.begin() + k * d);
    }
    return tile;
}

inline bool alpha_at(const Splat& s, float px, float py, float& dx, float& dy, float& sigma, float& alpha, float& raw) {
    dx = px - s.mx;
    dy = py - s.my;
    sigma = 0.5f * (s.a * dx * dx + s.c * dy * dy) + s.b * dx * dy;
    if (sigma < 0.f || sigma > s.sigma_max) return false;
    raw = s.opacity * std::exp(-sigma);
    alpha = std::min(ALPHA_MAX, raw);
    return alpha >= ALPHA_MIN;
}
}  // namespace

extern "C" {

// out: [H, W, D] accumulated features; alpha: [H, W]; last: [H, W] entries of the tile list used.
void m3_composite_forward(int n, int d, int width, int height, const float* means2d, const float* conics,
                          const float* opac, const float* feats, const float* extent, float* out, float* alpha_out,
                          int32_t* last) {
    const Bins b = bin(n, width, height, means2d, conics, opac, extent);
    const int ntiles = b.tiles_x * b.tiles_y;
#pragma omp parallel for schedule(dynamic, 1)
    for (int t = 0; t < ntiles; ++t) {
        const Tile tile = gather(b.lists[t], d, means2d, conics, opac, feats);
        const int size = static_cast<int>(tile.splats.size());
        const int tx = t % b.tiles_x, ty = t / b.tiles_x;
        for (int y = ty * TILE; y < std::min(height, (ty + 1) * TILE); ++y) {
            for (int x = tx * TILE; x < std::min(width, (tx + 1) * TILE); ++x) {
                const size_t pix = static_cast<size_t>(y) * width + x;
                float* o = out + pix * d;
                float T = 1.f;
                int used = 0;
                for (int k = 0; k < size; ++k) {
                    float dx, dy, sigma, a, raw;
                    if (!alpha_at(tile.splats[k], x + 0.5f, y + 0.5f, dx, dy, sigma, a, raw)) continue;
                    const float next = T * (1.f - a);
                    if (next <= T_MIN) break;
                    const float w = a * T;
                    const float* f = tile.feats.data() + static_cast<size_t>(k) * d;
#pragma omp simd
                    for (int ch = 0; ch < d; ++ch) o[ch] += w * f[ch];
                    T = next;
                    used = k + 1;
                }
                alpha_out[pix] = 1.f - T;
                last[pix] = used;
            }
        }
    }
}

// Gradients of the forward outputs with respect to means2d [N, 2], conics [N, 3], opacities [N]
// and features [N, D]; written (not accumulated) into the grad_* arrays. Each tile accumulates
// into buffers indexed by its list position, added into its thread's per-Gaussian buffer once
// the tile is done. A pixel works only on the channels whose output gradient is non-zero
// there (a loss on sampled pixels leaves most of a feature map without gradient): the others
// add exactly zero.
void m3_composite_backward(int n, int d, int width, int height, const float* means2d, const float* conics,
                           const float* opac, const float* feats, const float* extent, const float* alpha_out,
                           const int32_t* last, const float* grad_out, const float* grad_alpha, float* grad_means2d,
                           float* grad_conics, float* grad_opac, float* grad_feats) {
    const Bins b = bin(n, width, height, means2d, conics, opac, extent);
    const int ntiles = b.tiles_x * b.tiles_y;
    const int threads = num_threads();
    const size_t per = static_cast<size_t>(n) * (6 + d);  // mean 2, conic 3, opacity 1, features d
    std::vector<float> buf(per * threads, 0.f);
#pragma omp parallel num_threads(threads)
    {
        float* mine = buf.data() + per * thread_id();
        std::vector<float> behind(d), gi(d), lg, lf;
        std::vector<int> active(d);
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < ntiles; ++t) {
            const Tile tile = gather(b.lists[t], d, means2d, conics, opac, feats);
            const int size = static_cast<int>(tile.splats.size());
            lg.assign(static_cast<size_t>(size) * 6, 0.f);  // per list entry: mean 2, conic 3, opacity 1
            lf.assign(static_cast<size_t>(size) * d, 0.f);  // per list entry: features
            const int tx = t % b.tiles_x, ty = t / b.tiles_x;
            for (int y = ty * TILE; y < std::min(height, (ty + 1) * TILE); ++y) {
                for (int x = tx * TILE; x < std::min(width, (tx + 1) * TILE); ++x) {
                    const size_t pix = static_cast<size_t>(y) * width + x;
                    if (last[pix] == 0) continue;
                    const float* go = grad_out + pix * d;
                    int m = 0;  // channels with a gradient, their gradients packed into gi
                    for (int ch = 0; ch < d; ++ch)
                        if (go[ch] != 0.f) {
                            active[m] = ch;
                            gi[m++] = go[ch];
                        }
                    const float ga = grad_alpha[pix];
                    if (m == 0 && ga == 0.f) continue;
                    const bool all = m == d;
                    const float T_final = 1.f - alpha_out[pix];
                    float T = T_final;
                    std::fill(behind.begin(), behind.begin() + m, 0.f);
                    for (int k = last[pix] - 1; k >= 0; --k) {
                        const Splat& s = tile.splats[k];
                        float dx, dy, sigma, a, raw;
                        if (!alpha_at(s, x + 0.5f, y + 0.5f, dx, dy, sigma, a, raw)) continue;
                        const float inv = 1.f / (1.f - a);
                        T *= inv;  // transmittance in front of this Gaussian
                        const float w = a * T;
                        const float* f = tile.feats.data() + static_cast<size_t>(k) * d;
                        float* gf = lf.data() + static_cast<size_t>(k) * d;
                        float dl_da = ga * T_final * inv;
                        if (all) {
#pragma omp simd reduction(+ : dl_da)
                            for (int ch = 0; ch < d; ++ch) {
                                gf[ch] += w * gi[ch];
                                dl_da += gi[ch] * (f[ch] * T - behind[ch] * inv);
                                behind[ch] += f[ch] * w;
                            }
                        } else {
                            for (int j = 0; j < m; ++j) {
                                const int ch = active[j];
                                gf[ch] += w * gi[j];
                                dl_da += gi[j] * (f[ch] * T - behind[j] * inv);
                                behind[j] += f[ch] * w;
                            }
                        }
                        if (raw > ALPHA_MAX) continue;  // clamped: no gradient through opacity or shape
                        const float dl_dsigma = -dl_da * a;
                        float* gm = lg.data() + static_cast<size_t>(k) * 6;
                        gm[0] += -dl_dsigma * (s.a * dx + s.b * dy);
                        gm[1] += -dl_dsigma * (s.b * dx + s.c * dy);
                        gm[2] += dl_dsigma * 0.5f * dx * dx;
                        gm[3] += dl_dsigma * dx * dy;
                        gm[4] += dl_dsigma * 0.5f * dy * dy;
                        gm[5] += dl_da * std::exp(-sigma);
                    }
                }
            }
            for (int k = 0; k < size; ++k) {
                const size_t g = static_cast<size_t>(tile.splats[k].id);
                float* gm = mine + g * 6;
                float* gf = mine + static_cast<size_t>(n) * 6 + g * d;
                for (int i = 0; i < 6; ++i) gm[i] += lg[static_cast<size_t>(k) * 6 + i];
                for (int ch = 0; ch < d; ++ch) gf[ch] += lf[static_cast<size_t>(k) * d + ch];
            }
        }
    }
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int g = 0; g < n; ++g) {
        float acc[6] = {0, 0, 0, 0, 0, 0};
        for (int th = 0; th < threads; ++th)
            for (int i = 0; i < 6; ++i) acc[i] += buf[per * th + static_cast<size_t>(g) * 6 + i];
        grad_means2d[2 * g] = acc[0];
        grad_means2d[2 * g + 1] = acc[1];
        grad_conics[3 * g] = acc[2];
        grad_conics[3 * g + 1] = acc[3];
        grad_conics[3 * g + 2] = acc[4];
        grad_opac[g] = acc[5];
        for (int ch = 0; ch < d; ++ch) {
            float s = 0.f;
            for (int th = 0; th < threads; ++th) s += buf[per * th + static_cast<size_t>(n) * 6 + static_cast<size_t>(g) * d + ch];
            grad_feats[static_cast<size_t>(g) * d + ch] = s;
        }
    }
}
}
