// DBSCAN on a hashed grid of cell side eps (m3_memory/query/spatial.py: dbscan), with open3d's cluster_dbscan labels. A point is core when at least
// min_points points (itself included) lie closer than eps; clusters are the connected
// components of cores closer than eps to each other (union-find), numbered in the order of
// their lowest-index core; a non-core point closer than eps to cores takes the lowest of their
// cluster numbers, else -1 (noise). Distances in double, strictly below eps, as open3d's radius
// search.
//
// Every point's neighbours closer than eps lie in its own cell or one of the 26 around it.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <unordered_map>
#include <vector>

namespace {

constexpr int64_t SPAN = 1 << 20;  // cells per axis in a key (offset so negative cells fit)

using Range = std::pair<int, int>;  // [begin, end) in a grid's order

struct Grid {
    std::vector<int> order;                        // point indices sorted by cell
    std::unordered_map<int64_t, Range> cells;      // cell key -> its points' range in order
};

void cell_of(const double* p, double eps, int64_t c[3]) {
    for (int a = 0; a < 3; ++a) c[a] = static_cast<int64_t>(std::floor(p[a] / eps));
}

int64_t cell_key(const int64_t c[3]) { return ((c[0] + SPAN / 2) * SPAN + (c[1] + SPAN / 2)) * SPAN + (c[2] + SPAN / 2); }

std::vector<int64_t> keys_of(int n, const double* pts, double eps) {
    std::vector<int64_t> key(n);
    for (int i = 0; i < n; ++i) {
        int64_t c[3];
        cell_of(pts + 3 * i, eps, c);
        key[i] = cell_key(c);
    }
    return key;
}

Grid make_grid(const std::vector<int64_t>& key) {
    const int n = static_cast<int>(key.size());
    Grid g;
    g.order.resize(n);
    std::iota(g.order.begin(), g.order.end(), 0);
    std::stable_sort(g.order.begin(), g.order.end(), [&](int a, int b) { return key[a] < key[b]; });
    for (int s = 0; s < n;) {
        int e = s;
        while (e < n && key[g.order[e]] == key[g.order[s]]) ++e;
        g.cells.emplace(key[g.order[s]], Range(s, e));
        s = e;
    }
    return g;
}

// The ranges of g's points in the 27 cells around the cell of p (a superset of the points closer than eps).
std::vector<Range> around(const Grid& g, const double* p, double eps) {
    int64_t c[3];
    cell_of(p, eps, c);
    std::vector<Range> out;
    for (int64_t dx = -1; dx <= 1; ++dx)
        for (int64_t dy = -1; dy <= 1; ++dy)
            for (int64_t dz = -1; dz <= 1; ++dz) {
                const int64_t q[3] = {c[0] + dx, c[1] + dy, c[2] + dz};
                auto it = g.cells.find(cell_key(q));
                if (it != g.cells.end()) out.push_back(it->second);
            }
    return out;
}

// For each point (by index), the neighbour ranges in g of its cell, looked up once per distinct cell.
std::vector<const std::vector<Range>*> neighbourhoods(const std::vector<int64_t>& key, const double* pts, double eps,
                                                      const Grid& g, std::unordered_map<int64_t, std::vector<Range>>& memo) {
    std::vector<const std::vector<Range>*> out(key.size());
    for (size_t i = 0; i < key.size(); ++i) {
        auto it = memo.find(key[i]);
        if (it == memo.end()) it = memo.emplace(key[i], around(g, pts + 3 * i, eps)).first;
        out[i] = &it->second;
    }
    return out;
}

double dist2(const double* a, const double* b) {
    const double dx = a[0] - b[0], dy = a[1] - b[1], dz = a[2] - b[2];
    return dx * dx + dy * dy + dz * dz;
}

int find(std::vector<int>& parent, int i) {
    while (parent[i] != i) {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    return i;
}

// labels [n]: each core point's cluster (its union-find root), numbered in order of the
// lowest-index core; -1 elsewhere (the border points are labelled by the caller). Returns the count.
int label_cores(int n, const std::vector<char>& core, std::vector<int>& parent, int64_t* labels) {
    std::vector<int64_t> number(n, -1);  // per root: its cluster number
    int clusters = 0;
    for (int i = 0; i < n; ++i) {
        labels[i] = -1;
        if (!core[i]) continue;
        const int r = find(parent, i);
        if (number[r] < 0) number[r] = clusters++;
        labels[i] = number[r];
    }
    return clusters;
}

}  // namespace

extern "C" {

// labels [n] (int64): cluster number or -1; returns the number of clusters.
int m3_dbscan(int n, const double* pts, double eps, int min_points, int64_t* labels) {
    const std::vector<int64_t> key = keys_of(n, pts, eps);
    const Grid g = make_grid(key);
    std::unordered_map<int64_t, std::vector<Range>> memo;
    const auto nb = neighbourhoods(key, pts, eps, g, memo);
    const double eps2 = eps * eps;
    std::vector<char> core(n, 0);
    for (int i = 0; i < n; ++i) {
        int count = 0;
        for (const Range& r : *nb[i])
            for (int k = r.first; k < r.second && count < min_points; ++k)
                count += dist2(pts + 3 * i, pts + 3 * g.order[k]) < eps2;
        core[i] = count >= min_points;
    }
    std::vector<int> parent(n);
    std::iota(parent.begin(), parent.end(), 0);
    for (int i = 0; i < n; ++i) {
        if (!core[i]) continue;
        for (const Range& r : *nb[i])
            for (int k = r.first; k < r.second; ++k) {
                const int j = g.order[k];
                if (j <= i || !core[j] || dist2(pts + 3 * i, pts + 3 * j) >= eps2) continue;
                const int a = find(parent, i), b = find(parent, j);
                if (a != b) parent[std::max(a, b)] = std::min(a, b);
            }
    }
    const int clusters = label_cores(n, core, parent, labels);
    for (int i = 0; i < n; ++i) {
        if (core[i]) continue;
        int64_t best = -1;
        for (const Range& r : *nb[i])
            for (int k = r.first; k < r.second; ++k) {
                const int j = g.order[k];
                if (core[j] && (best < 0 || labels[j] < best) && dist2(pts + 3 * i, pts + 3 * j) < eps2) best = labels[j];
            }
        labels[i] = best;
    }
    return clusters;
}

// near [n] (uint8): 1 where points[i] lies closer than eps to one of the m others (what
// m3_memory/query/api.py: object_gaussians asks of a k-d tree query with distance_upper_bound eps).
int m3_near(int n, const double* pts, int m, const double* others, double eps, uint8_t* near) {
    const std::vector<int64_t> key = keys_of(m, others, eps);
    const Grid g = make_grid(key);
    const std::vector<int64_t> mine = keys_of(n, pts, eps);
    std::unordered_map<int64_t, std::vector<Range>> memo;
    const auto nb = neighbourhoods(mine, pts, eps, g, memo);
    const double eps2 = eps * eps;
    for (int i = 0; i < n; ++i) {
        uint8_t hit = 0;
        for (const Range& r : *nb[i])
            for (int k = r.first; k < r.second && !hit; ++k) hit = dist2(pts + 3 * i, others + 3 * g.order[k]) < eps2;
        near[i] = hit;
    }
    return 0;
}

// m3_dbscan's labels [n] of the points members[0..n) (ascending indices into a larger set) from
// that set's neighbour graph instead of their coordinates: indptr/indices (CSR) list, per point
// of the set, the others closer than eps; at [set size] is scratch, filled with -1 by the caller.
// Returns the number of clusters.
int m3_dbscan_graph(int n, const int64_t* members, const int64_t* indptr, const int32_t* indices, int min_points,
                    int32_t* at, int64_t* labels) {
    for (int i = 0; i < n; ++i) at[members[i]] = i;
    std::vector<char> core(n, 0);
    for (int i = 0; i < n; ++i) {
        int count = 1;  // itself
        for (int64_t e = indptr[members[i]]; e < indptr[members[i] + 1] && count < min_points; ++e)
            count += at[indices[e]] >= 0;
        core[i] = count >= min_points;
    }
    std::vector<int> parent(n);
    std::iota(parent.begin(), parent.end(), 0);
    for (int i = 0; i < n; ++i) {
        if (!core[i]) continue;
        for (int64_t e = indptr[members[i]]; e < indptr[members[i] + 1]; ++e) {
            const int j = at[indices[e]];
            if (j <= i || !core[j]) continue;
            const int a = find(parent, i), b = find(parent, j);
            if (a != b) parent[std::max(a, b)] = std::min(a, b);
        }
    }
    const int clusters = label_cores(n, core, parent, labels);
    for (int i = 0; i < n; ++i) {
        if (core[i]) continue;
        int64_t best = -1;
        for (int64_t e = indptr[members[i]]; e < indptr[members[i] + 1]; ++e) {
            const int j = at[indices[e]];
            if (j >= 0 && core[j] && (best < 0 || labels[j] < best)) best = labels[j];
        }
        labels[i] = best;
    }
    return clusters;
}
}
