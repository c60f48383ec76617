// One camera's projection of a loaded memory's Gaussians for the query render
// (m3_memory/query/render.py: render_queries): the culling of render.py's in_view, the
// per-component projection of m3_memory/render/cpu.py's project_static (gsplat's clamp of x/z
// and y/z, eps2d on the 2D covariance's diagonal, culling at near/far and a singular 2D
// covariance) and the compositor's per-Gaussian extent of cpu.py's _composite, in one pass over
// the Gaussians, writing only those that survive, in index order. The same formulas as the
// torch code, in float32, from the same camera-frame centres (so the same depths and depth
// order): the render agrees with the torch path to float32 rounding (tested).

#include <algorithm>
#include <cmath>
#include <cstdint>

extern "C" {

// cam_pts [N, 3]: the centres in the camera frame (computed by the caller as the torch code
// does, so depths and their sort are the same); cov [N, 6] (xx, xy, xz, yy, yz, zz), opac [N],
// max_scale [N]; view [12] the world-to-camera rows of R then t; cam [8]: fx, fy, cx, cy of gsplat's K, then fx, fy, cx, cy
// of m3's K (the culling's); lim [7]: near, far, eps2d, sigmas (culling radius), alpha_min,
// max_extent (sigmas), width and height are ints. Outputs (room for N): index [n] int64,
// means2d [n, 2], conic [n, 3] (xx, xy, yy), depth [n], opacity [n], extent [n, 2] (px).
// Returns n.
int m3_project(int N, const float* cam_pts, const float* cov, const float* opac, const float* max_scale,
               const float* view, const float* cam, const float* lim, int width, int height, int64_t* index,
               float* means2d, float* conic, float* depth, float* opacity, float* extent) {
    const float* R = view;
    const float fx = cam[0], fy = cam[1], cx = cam[2], cy = cam[3];
    const float mfx = cam[4], mfy = cam[5], mcx = cam[6], mcy = cam[7];
    const float near = lim[0], far = lim[1], eps2d = lim[2], sigmas = lim[3], alpha_min = lim[4], max_ext = lim[5];
    const float tan_x = 0.5f * width / fx, tan_y = 0.5f * height / fy;
    const float lim_x_pos = (width - cx) / fx + 0.3f * tan_x, lim_x_neg = cx / fx + 0.3f * tan_x;
    const float lim_y_pos = (height - cy) / fy + 0.3f * tan_y, lim_y_neg = cy / fy + 0.3f * tan_y;
    const float mf = std::max(mfx, mfy);
    int n = 0;
    for (int i = 0; i < N; ++i) {
        const float x = cam_pts[3 * i], y = cam_pts[3 * i + 1], z = cam_pts[3 * i + 2];
        // in_view: in front, centre within sigmas x the largest scale (px) of the image
        const float zc = std::max(z, 1e-6f);
        const float u = mfx * x / zc + mcx, v = mfy * y / zc + mcy;
        const float r = sigmas * max_scale[i] * mf / zc + 1.0f;
        if (!(z > 0.01f && u > -0.5f - r && u < width - 0.5f + r && v > -0.5f - r && v < height - 0.5f + r)) continue;
        if (!(z > near && z < far)) continue;
        // project_static: the rows of J R, then (J R) Sigma (J R)^T + eps2d I
        const float inv_z = 1.0f / z;
        const float tx = std::min(lim_x_pos, std::max(-lim_x_neg, x * inv_z));
        const float ty = std::min(lim_y_pos, std::max(-lim_y_neg, y * inv_z));
        const float a = fx * inv_z, b = fy * inv_z;
        const float uu[3] = {a * (R[0] - tx * R[6]), a * (R[1] - tx * R[7]), a * (R[2] - tx * R[8])};
        const float vv[3] = {b * (R[3] - ty * R[6]), b * (R[4] - ty * R[7]), b * (R[5] - ty * R[8])};
        const float* c = cov + 6 * i;
        const float su[3] = {c[0] * uu[0] + c[1] * uu[1] + c[2] * uu[2], c[1] * uu[0] + c[3] * uu[1] + c[4] * uu[2],
                             c[2] * uu[0] + c[4] * uu[1] + c[5] * uu[2]};
        const float sv[3] = {c[0] * vv[0] + c[1] * vv[1] + c[2] * vv[2], c[1] * vv[0] + c[3] * vv[1] + c[4] * vv[2],
                             c[2] * vv[0] + c[4] * vv[1] + c[5] * vv[2]};
        const float c00 = uu[0] * su[0] + uu[1] * su[1] + uu[2] * su[2] + eps2d;
        const float c01 = vv[0] * su[0] + vv[1] * su[1] + vv[2] * su[2];
        const float c11 = vv[0] * sv[0] + vv[1] * sv[1] + vv[2] * sv[2] + eps2d;
        const float det = c00 * c11 - c01 * c01;
        if (!(det > 0)) continue;
        const float inv_det = 1.0f / det;
        const float k0 = c11 * inv_det, k1 = -c01 * inv_det, k2 = c00 * inv_det;
        // _composite's extent: the Mahalanobis cut-off where alpha falls to 1/255, 1% margin
        const float o = opac[i];
        const float kdet = k0 * k2 - k1 * k1;
        const float sig = std::min(std::sqrt(2.0f * std::log(std::max(255.0f * o, 1.0f))), max_ext);
        index[n] = i;
        means2d[2 * n] = fx * x * inv_z + cx;
        means2d[2 * n + 1] = fy * y * inv_z + cy;
        conic[3 * n] = k0, conic[3 * n + 1] = k1, conic[3 * n + 2] = k2;
        depth[n] = z;
        opacity[n] = o;
        extent[2 * n] = o < alpha_min ? 0.0f : 1.01f * (sig * std::sqrt(k2 / kdet));
        extent[2 * n + 1] = o < alpha_min ? 0.0f : 1.01f * (sig * std::sqrt(k0 / kdet));
        ++n;
    }
    return n;
}
}
