// Alpha compositing of projected 2D Gaussians on the CPU, forward and backward.
// C++ with OpenMP over 16x16 tiles and GCC/Clang vector types over blocks of 8 pixels of a
// tile row; called through ctypes on raw float32 pointers.
// Gaussians arrive sorted front to back. Per Gaussian: mean2d [2] (pixels, gsplat's
// convention: pixel (i, j) is sampled at (j + 0.5, i + 0.5)), conic [3] = (a, b, c) of the
// inverse 2D covariance [[a, b], [b, c]], opacity, D feature channels, and the half extent
// of its bounding box [2] in pixels (0 = culled).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
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
// alpha cut-off (sigma <= ln(255 opacity), the same test block_alpha makes per pixel): a thin,
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
    int x0, x1, y0, y1;  // pixels whose centres lie in the bounding box (the extent), as in bin()
};

// One tile's list, front to back: its splats and their feature rows [list size, D], packed so
// pixels read them contiguously.
struct Tile {
    std::vector<Splat> splats;
    std::vector<float> feats;
};

// A pixel coordinate as an int, clamped far outside any image (and NaN to -1).
inline int pixel(float v) { return v > -1e6f ? static_cast<int>(std::min(v, 1e6f)) : -1; }

Tile gather(const std::vector<int32_t>& list, int d, const float* means2d, const float* conics, const float* opac,
            const float* feats, const float* extent) {
    Tile tile{std::vector<Splat>(list.size()), std::vector<float>(list.size() * d)};
    for (size_t k = 0; k < list.size(); ++k) {
        const int g = list[k];
        const float o = opac[g], mx = means2d[2 * g], my = means2d[2 * g + 1];
        const float ex = extent[2 * g], ey = extent[2 * g + 1];
        tile.splats[k] = {mx, my, conics[3 * g], conics[3 * g + 1], conics[3 * g + 2], o,
                          o * 255.f > 1.f ? std::log(o * 255.f) : -1.f, g,
                          pixel(std::ceil(mx - ex - 0.5f)), pixel(std::floor(mx + ex - 0.5f)),
                          pixel(std::ceil(my - ey - 0.5f)), pixel(std::floor(my + ey - 0.5f))};
        std::copy(feats + static_cast<size_t>(g) * d, feats + static_cast<size_t>(g + 1) * d, tile.feats.begin() + k * d);
    }
    return tile;
}

// The pixel rectangle [x0, x1] x [y0, y1] of one tile.
struct Rect {
    int x0, x1, y0, y1;
};

// Columns [lo, hi] of row y, inside ``r`` and the splat's box, whose pixel centres can pass the
// alpha test: the chord of the ellipse sigma = sigma_max at the row's centre, widened by a pixel
// on each side against rounding (block_alpha still decides each pixel, so results do not depend
// on the span). Empty (lo > hi) when the splat never reaches ALPHA_MIN.
inline void row_span(const Splat& s, int y, const Rect& r, int& lo, int& hi) {
    lo = std::max(r.x0, s.x0);
    hi = std::min(r.x1, s.x1);
    if (s.sigma_max < 0.f) {
        hi = lo - 1;
        return;
    }
    const float dy = y + 0.5f - s.my;
    // 0.5 (a dx^2 + c dy^2) + b dx dy <= sigma_max  <=>  a dx^2 + 2 b dy dx + c dy^2 - 2 sigma_max <= 0
    const float disc = std::max(0.f, s.b * s.b * dy * dy - s.a * (s.c * dy * dy - 2.f * s.sigma_max));
    const float mid = s.mx - s.b * dy / s.a - 0.5f, half = std::sqrt(disc) / s.a;
    const float left = std::floor(mid - half) - 1.f, right = std::ceil(mid + half) + 1.f;
    if (!(s.a > 0.f) || !std::isfinite(left) || !std::isfinite(right)) return;  // the whole box
    lo = std::max(lo, static_cast<int>(std::max(left, static_cast<float>(lo))));
    hi = std::min(hi, static_cast<int>(std::min(right, static_cast<float>(hi))));
}

// Lanes: a tile row is walked in blocks of LANES pixels held in GCC/Clang vector types, so each
// operation on a block is one vector instruction (AVX2: 8 floats; two on SSE or NEON).
constexpr int LANES = 8;
typedef float vf __attribute__((vector_size(4 * LANES)));
typedef int32_t vi __attribute__((vector_size(4 * LANES)));
typedef float vf_u __attribute__((vector_size(4 * LANES), aligned(4), may_alias));  // unaligned access
typedef int32_t vi_u __attribute__((vector_size(4 * LANES), aligned(4), may_alias));

inline vf load(const float* p) { return *reinterpret_cast<const vf_u*>(p); }
inline void store(float* p, vf v) { *reinterpret_cast<vf_u*>(p) = v; }
inline bool any(vi v) {
    int32_t m = 0;
    for (int i = 0; i < LANES; ++i) m |= v[i];
    return m != 0;
}
inline float sum(vf v) {
    float s = 0.f;
    for (int i = 0; i < LANES; ++i) s += v[i];
    return s;
}

// exp(-s) per lane for s in [0, 87]: Cephes' expf (range reduction by ln 2, degree-6
// polynomial, 2^n through the exponent bits), within 2 ulp of std::exp.
inline vf exp_neg(vf s) {
    const vf x = -s;
    const vf t = x * 1.44269504088896341f + 0.5f;
    vi n = __builtin_convertvector(t, vi);  // toward zero; floor below
    n += __builtin_convertvector(n, vf) > t;  // true is -1
    const vf nf = __builtin_convertvector(n, vf);
    const vf r = (x - nf * 0.693359375f) + nf * 2.12194440e-4f;
    vf y = vf{} + 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.f;
    return y * reinterpret_cast<vf>((n + 127) << 23);
}

// Splat s on the block of pixels x0 + i (i < LANES) of row y: per lane the offset (dx, dy) from
// its mean, sigma (half the squared Mahalanobis distance), the Gaussian's value e = exp(-sigma),
// raw = opacity * e (unclamped), alpha = min(ALPHA_MAX, raw), and ok (-1) where the pixel lies in
// [lo, hi] (its row span), 0 <= sigma <= sigma_max and alpha >= ALPHA_MIN.
struct Block {
    vf dx, dy, e, a, raw;
    vi ok;
};

inline Block block_alpha(const Splat& s, int x0, int y, int lo, int hi) {
    static constexpr vi iota = {0, 1, 2, 3, 4, 5, 6, 7};
    static_assert(LANES == 8, "iota has 8 lanes");
    const vi x = x0 + iota;
    Block b;
    b.dx = (__builtin_convertvector(x, vf) + 0.5f) - s.mx;
    b.dy = vf{} + ((y + 0.5f) - s.my);
    const vf sigma = 0.5f * (s.a * b.dx * b.dx + s.c * b.dy * b.dy) + s.b * b.dx * b.dy;
    b.e = exp_neg(sigma < 0.f ? 0.f : sigma > 87.f ? 87.f : sigma);
    b.raw = s.opacity * b.e;
    b.a = b.raw < ALPHA_MAX ? b.raw : ALPHA_MAX;
    b.ok = (x >= lo) & (x <= hi) & (sigma >= 0.f) & (sigma <= s.sigma_max) & (b.a >= ALPHA_MIN);
    return b;
}

Rect tile_rect(int t, int tiles_x, int width, int height) {
    const int tx = t % tiles_x, ty = t / tiles_x;
    return {tx * TILE, std::min(width, (tx + 1) * TILE) - 1, ty * TILE, std::min(height, (ty + 1) * TILE) - 1};
}
}  // namespace


extern "C" {

// out: [H, W, D] accumulated features; alpha: [H, W]; last: [H, W] entries of the tile list used.
// A tile walks its list once, front to back; each splat updates the pixels of its row spans
// that are still open, in blocks of LANES pixels (branch-free lane loops), so every pixel sees
// its Gaussians in the per-pixel order. The tile's features accumulate channel-major and are
// written out once at the end of the tile.
void m3_composite_forward(int n, int d, int width, int height, const float* means2d, const float* conics,
                          const float* opac, const float* feats, const float* extent, float* out, float* alpha_out,
                          int32_t* last) {
    const Bins b = bin(n, width, height, means2d, conics, opac, extent);
    const int ntiles = b.tiles_x * b.tiles_y;
    constexpr int PX = TILE * TILE;
#pragma omp parallel
    {
        std::vector<float> acc(static_cast<size_t>(PX) * d);  // [D, tile pixels]
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < ntiles; ++t) {
            const Tile tile = gather(b.lists[t], d, means2d, conics, opac, feats, extent);
            const Rect r = tile_rect(t, b.tiles_x, width, height);
            float T[PX];
            int32_t used[PX], done[PX];
            std::fill(T, T + PX, 1.f);
            std::fill(used, used + PX, 0);
            std::fill(done, done + PX, 0);
            std::fill(acc.begin(), acc.end(), 0.f);
            int open = (r.x1 - r.x0 + 1) * (r.y1 - r.y0 + 1);
            for (int k = 0; k < static_cast<int>(tile.splats.size()) && open > 0; ++k) {
                const Splat& s = tile.splats[k];
                const float* f = tile.feats.data() + static_cast<size_t>(k) * d;
                for (int y = std::max(r.y0, s.y0); y <= std::min(r.y1, s.y1); ++y) {
                    int lo, hi;
                    row_span(s, y, r, lo, hi);
                    for (int bx = r.x0 + (lo - r.x0) / LANES * LANES; bx <= hi; bx += LANES) {
                        const Block blk = block_alpha(s, bx, y, lo, hi);
                        if (!any(blk.ok)) continue;
                        const int p0 = (y - r.y0) * TILE + (bx - r.x0);
                        const vf Tv = load(T + p0);
                        vi_u& dn = *reinterpret_cast<vi_u*>(done + p0);
                        const vi live = blk.ok & ~dn;
                        const vf next = Tv * (1.f - blk.a);
                        const vi fin = live & (next <= T_MIN);  // this splat would end the pixel: it stops
                        const vi use = live & ~fin;
                        for (int i = 0; i < LANES; ++i) open += fin[i];  // fin is -1 where a pixel ends
                        dn |= fin;
                        const vf w = use ? blk.a * Tv : 0.f;
                        store(T + p0, use ? next : Tv);
                        vi_u& u = *reinterpret_cast<vi_u*>(used + p0);
                        u = use ? k + 1 : u;
                        for (int ch = 0; ch < d; ++ch) {
                            float* a = acc.data() + static_cast<size_t>(ch) * PX + p0;
                            store(a, load(a) + w * f[ch]);
                        }
                    }
                }
            }
            for (int y = r.y0; y <= r.y1; ++y)
                for (int x = r.x0; x <= r.x1; ++x) {
                    const int p = (y - r.y0) * TILE + (x - r.x0);
                    const size_t pix = static_cast<size_t>(y) * width + x;
                    alpha_out[pix] = 1.f - T[p];
                    last[pix] = used[p];
                    for (int ch = 0; ch < d; ++ch) out[pix * d + ch] = acc[static_cast<size_t>(ch) * PX + p];
                }
        }
    }
}

// Gradients of the forward outputs with respect to means2d [N, 2], conics [N, 3], opacities [N]
// and features [N, D]; written (not accumulated) into the grad_* arrays. A tile walks its list
// once, back to front, each splat visiting the pixels of its row spans whose list it ended
// (last) in blocks of LANES pixels, so every pixel sees its Gaussians in the per-pixel reverse
// order; a splat's gradient is summed over its pixels (per lane, then over the lanes) and added
// into the thread's per-Gaussian buffer once per tile. Channels with a non-zero output gradient
// at more than an eighth of the tile's pixels (colour, depth) are worked on every pixel in the
// lane loops; the others (a loss on sampled pixels: the queries) only where their gradient is
// non-zero, one pixel at a time: elsewhere they would add exactly zero.
void m3_composite_backward(int n, int d, int width, int height, const float* means2d, const float* conics,
                           const float* opac, const float* feats, const float* extent, const float* alpha_out,
                           const int32_t* last, const float* grad_out, const float* grad_alpha, float* grad_means2d,
                           float* grad_conics, float* grad_opac, float* grad_feats) {
    const Bins b = bin(n, width, height, means2d, conics, opac, extent);
    const int ntiles = b.tiles_x * b.tiles_y;
    const int threads = num_threads();
    const size_t per = static_cast<size_t>(n) * (6 + d);  // mean 2, conic 3, opacity 1, features d
    constexpr int PX = TILE * TILE;
    std::vector<float> buf(per * threads, 0.f);
#pragma omp parallel num_threads(threads)
    {
        float* mine = buf.data() + per * thread_id();
        // per tile pixel: transmittance, final transmittance, alpha gradient, list end; per
        // channel and pixel (channel-major): the dense channels' output gradients and the
        // features composited behind the current splat; per pixel, its sparse channels and
        // their gradients; per tile row, the pixels with sparse channels (bits)
        std::vector<float> T(PX), T_final(PX), ga(PX), gi(static_cast<size_t>(PX) * d), behind(static_cast<size_t>(PX) * d);
        std::vector<float> sparse_g(static_cast<size_t>(PX) * d);
        std::vector<int32_t> end(PX), sparse_n(PX), sparse_ch(static_cast<size_t>(PX) * d), dense(d), count(d);
        std::vector<float> gf_lanes(static_cast<size_t>(d) * LANES), gf_sparse(d);
        uint32_t row_sparse[TILE];
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < ntiles; ++t) {
            const Tile tile = gather(b.lists[t], d, means2d, conics, opac, feats, extent);
            const Rect r = tile_rect(t, b.tiles_x, width, height);
            const int npix = (r.x1 - r.x0 + 1) * (r.y1 - r.y0 + 1);
            std::fill(count.begin(), count.end(), 0);
            for (int y = r.y0; y <= r.y1; ++y)
                for (int x = r.x0; x <= r.x1; ++x) {
                    const float* go = grad_out + (static_cast<size_t>(y) * width + x) * d;
                    for (int ch = 0; ch < d; ++ch) count[ch] += go[ch] != 0.f;
                }
            int nd = 0;
            for (int ch = 0; ch < d; ++ch)
                if (count[ch] * 8 > npix) dense[nd++] = ch;
            std::fill(T.begin(), T.end(), 1.f);
            std::fill(T_final.begin(), T_final.end(), 1.f);
            std::fill(ga.begin(), ga.end(), 0.f);
            std::fill(end.begin(), end.end(), 0);
            std::fill(sparse_n.begin(), sparse_n.end(), 0);
            std::fill(gi.begin(), gi.end(), 0.f);
            std::fill(behind.begin(), behind.end(), 0.f);
            std::fill(row_sparse, row_sparse + TILE, 0u);
            int kmax = 0;
            for (int y = r.y0; y <= r.y1; ++y)
                for (int x = r.x0; x <= r.x1; ++x) {
                    const size_t pix = static_cast<size_t>(y) * width + x;
                    const int p = (y - r.y0) * TILE + (x - r.x0);
                    const float* go = grad_out + pix * d;
                    bool any = grad_alpha[pix] != 0.f;
                    for (int j = 0; j < nd; ++j) {
                        gi[static_cast<size_t>(dense[j]) * PX + p] = go[dense[j]];
                        any = any || go[dense[j]] != 0.f;
                    }
                    int m = 0;
                    for (int ch = 0, j = 0; ch < d; ++ch) {
                        if (j < nd && dense[j] == ch) {
                            ++j;
                            continue;
                        }
                        if (go[ch] != 0.f) {
                            sparse_ch[static_cast<size_t>(p) * d + m] = ch;
                            sparse_g[static_cast<size_t>(p) * d + m++] = go[ch];
                        }
                    }
                    if (last[pix] == 0 || !(any || m > 0)) continue;  // nothing to do at this pixel
                    sparse_n[p] = m;
                    if (m > 0) row_sparse[y - r.y0] |= 1u << (x - r.x0);
                    ga[p] = grad_alpha[pix];
                    end[p] = last[pix];
                    T_final[p] = T[p] = 1.f - alpha_out[pix];
                    kmax = std::max(kmax, end[p]);
                }
            for (int k = kmax - 1; k >= 0; --k) {
                const Splat& s = tile.splats[k];
                const float* f = tile.feats.data() + static_cast<size_t>(k) * d;
                vf gm[6] = {};
                std::fill(gf_lanes.begin(), gf_lanes.begin() + static_cast<size_t>(nd) * LANES, 0.f);
                bool sparse_hit = false;
                for (int y = std::max(r.y0, s.y0); y <= std::min(r.y1, s.y1); ++y) {
                    int lo, hi;
                    row_span(s, y, r, lo, hi);
                    for (int bx = r.x0 + (lo - r.x0) / LANES * LANES; bx <= hi; bx += LANES) {
                        const Block blk = block_alpha(s, bx, y, lo, hi);
                        const int p0 = (y - r.y0) * TILE + (bx - r.x0);
                        const vi live = blk.ok & (k < vi(*reinterpret_cast<const vi_u*>(end.data() + p0)));
                        if (!any(live)) continue;
                        const vf inv = 1.f / (1.f - blk.a);
                        const vf Tv = load(T.data() + p0);
                        const vf Tp = Tv * inv;  // transmittance in front of this Gaussian
                        store(T.data() + p0, live ? Tp : Tv);
                        const vf w = live ? blk.a * Tp : 0.f;
                        vf dl = load(ga.data() + p0) * load(T_final.data() + p0) * inv;
                        for (int j = 0; j < nd; ++j) {
                            const size_t ch = dense[j];
                            const float fc = f[ch];
                            const vf g = load(gi.data() + ch * PX + p0);
                            float* bh = behind.data() + ch * PX + p0;
                            const vf bhv = load(bh);
                            float* gf = gf_lanes.data() + static_cast<size_t>(j) * LANES;
                            store(gf, load(gf) + w * g);
                            dl += g * (fc * Tp - bhv * inv);
                            store(bh, bhv + fc * w);
                        }
                        const uint32_t bits = (row_sparse[y - r.y0] >> (bx - r.x0)) & ((1u << LANES) - 1);
                        if (bits) {
                            if (!sparse_hit) std::fill(gf_sparse.begin(), gf_sparse.end(), 0.f);
                            sparse_hit = true;
                            for (int i = 0; i < LANES; ++i) {
                                if (!(bits >> i & 1u) || !live[i]) continue;
                                const int p = p0 + i;
                                for (int j = 0; j < sparse_n[p]; ++j) {
                                    const size_t ch = sparse_ch[static_cast<size_t>(p) * d + j];
                                    const float g = sparse_g[static_cast<size_t>(p) * d + j];
                                    float& bh = behind[ch * PX + p];
                                    gf_sparse[ch] += w[i] * g;
                                    dl[i] += g * (f[ch] * Tp[i] - bh * inv[i]);
                                    bh += f[ch] * w[i];
                                }
                            }
                        }
                        // clamped alpha (raw > ALPHA_MAX): no gradient through opacity or shape
                        const vi geo = live & (blk.raw <= ALPHA_MAX);
                        const vf dx = blk.dx, dy = blk.dy;
                        const vf dl_dsigma = geo ? -dl * blk.a : 0.f;
                        gm[0] += -dl_dsigma * (s.a * dx + s.b * dy);
                        gm[1] += -dl_dsigma * (s.b * dx + s.c * dy);
                        gm[2] += dl_dsigma * 0.5f * dx * dx;
                        gm[3] += dl_dsigma * dx * dy;
                        gm[4] += dl_dsigma * 0.5f * dy * dy;
                        gm[5] += geo ? dl * blk.e : 0.f;
                    }
                }
                const size_t id = static_cast<size_t>(s.id);
                for (int q = 0; q < 6; ++q) mine[id * 6 + q] += sum(gm[q]);
                float* out = mine + static_cast<size_t>(n) * 6 + id * d;
                for (int j = 0; j < nd; ++j) out[dense[j]] += sum(load(gf_lanes.data() + static_cast<size_t>(j) * LANES));
                if (sparse_hit)
                    for (int ch = 0; ch < d; ++ch) out[ch] += gf_sparse[ch];
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
