// loam's GPU training kernels: everything a training step does that is not a matrix product
// (those go to cuBLAS). NVRTC compiles this file once per process with IEEE arithmetic
// (--fmad=false, --prec-div=true, --prec-sqrt=true, --ftz=false), so an expression written
// here in the same order as the CPU engine's Rust computes the same float, and the only
// differences from the CPU are summation orders and the last bits of expf/logf.
//
// Every kernel takes plain device pointers and sizes; the Rust wrappers in gpu.rs check the
// buffers' lengths against those sizes before launching. Elementwise kernels loop with a grid
// stride, so any launch size covers any tensor. No kernel uses atomics: each output element is
// computed by one thread (or reduced in a fixed order), so a run repeats bit for bit on the
// same GPU.

typedef long long i64;
typedef unsigned long long u64;

#define GRID_STRIDE(i, n) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)blockDim.x * gridDim.x)

#define FLT_MAX_ 3.402823466e+38f
#define FLT_EPSILON_ 1.1920928955078125e-07f

// Threads per block of the reductions; gpu.rs launches them with this many.
#define REDUCE_THREADS 256

// ---------------------------------------------------------------------------------------------
// Helpers.

// The runtime's fused clamp: `acc.max(lo).min(hi)` (fmaxf/fminf skip a NaN operand, as Rust's
// f32::max/min do).
__device__ __forceinline__ float clampf(float v, float lo, float hi) {
    return fminf(fmaxf(v, lo), hi);
}

// Rust's f32::signum: 1 for +0, -1 for -0, NaN for NaN.
__device__ __forceinline__ float signum(float v) {
    return isnan(v) ? v : copysignf(1.0f, v);
}

// A counter-based generator (SplitMix64's finaliser): the draw for (seed, step, stream, index)
// depends on nothing else, so dropout masks and augmentations are the same whatever order the
// threads run in, and the backward pass recomputes a mask instead of storing it.
__device__ __forceinline__ u64 mix(u64 z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

__device__ __forceinline__ u64 draw(u64 seed, u64 step, u64 stream, u64 index) {
    return mix(mix(mix(seed ^ mix(stream)) ^ step) ^ index);
}

// A uniform float in [0, 1) from the top 24 bits.
__device__ __forceinline__ float uniform(u64 h) {
    return (float)(h >> 40) * (1.0f / 16777216.0f);
}

// Streams of draws, so dropout, augmentation and noise never share one.
#define STREAM_AUGMENT 1ULL
#define STREAM_NOISE 2ULL
#define STREAM_DROPOUT 16ULL

// A standard normal draw (Box-Muller), as the CPU's `gaussian`: u in [epsilon, 1).
__device__ __forceinline__ float gaussian(u64 h) {
    float u = fmaxf(uniform(mix(h ^ 0x1234ULL)), FLT_EPSILON_);
    float v = uniform(mix(h ^ 0x5678ULL));
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853071795864769f * v);
}

// ---------------------------------------------------------------------------------------------
// Data.

// out[b] = data[order[first + b]] for `count` samples of `sample_len` values, with the
// training-time augmentation of the CPU's `Augmentation::apply`: a shift of up to
// shift_rows/shift_cols (vacated positions zero), a horizontal flip with probability 1/2 (both
// only for [h, w, c] samples: h > 0), then Gaussian noise of standard deviation `noise`.
extern "C" __global__ void gather_batch(
    const float* data, const unsigned* order, i64 first, int count, i64 sample_len,
    int h, int w, int c, int shift_rows, int shift_cols, int flip, float noise,
    u64 seed, u64 step, float* out)
{
    GRID_STRIDE(i, (i64)count * sample_len) {
        i64 b = i / sample_len;
        i64 e = i - b * sample_len;
        const float* src = data + (i64)order[first + b] * sample_len;
        float v;
        if (h > 0 && (shift_rows > 0 || shift_cols > 0 || flip)) {
            u64 r = draw(seed, step, STREAM_AUGMENT, (u64)b);
            int dy = shift_rows > 0 ? (int)(mix(r ^ 1ULL) % (u64)(2 * shift_rows + 1)) - shift_rows : 0;
            int dx = shift_cols > 0 ? (int)(mix(r ^ 2ULL) % (u64)(2 * shift_cols + 1)) - shift_cols : 0;
            int mirrored = flip && (mix(r ^ 3ULL) & 1ULL);
            int ch = (int)(e % c);
            i64 p = e / c;
            int x = (int)(p % w);
            int y = (int)(p / w);
            int sy = y - dy;
            int sx = (mirrored ? w - 1 - x : x) - dx;
            v = (sy >= 0 && sy < h && sx >= 0 && sx < w) ? src[((i64)sy * w + sx) * c + ch] : 0.0f;
        } else {
            v = src[e];
        }
        if (noise > 0.0f) {
            v += noise * gaussian(draw(seed, step, STREAM_NOISE, (u64)i));
        }
        out[i] = v;
    }
}

// x[i] = value.
extern "C" __global__ void fill(float* x, i64 n, float value) {
    GRID_STRIDE(i, n) { x[i] = value; }
}

// dst = src, or dst += src with `accumulate` (a gradient reaching a layer by a second path).
extern "C" __global__ void add_into(float* dst, const float* src, i64 n, int accumulate) {
    GRID_STRIDE(i, n) { dst[i] = accumulate ? dst[i] + src[i] : src[i]; }
}

// ---------------------------------------------------------------------------------------------
// Bias, activation, elementwise layers.

// y[r][c] = clamp(y[r][c] + bias[c]): the end of a dense or convolution layer after its
// matrix product, as the runtime's kernels end (sum, then bias, then the clamp).
extern "C" __global__ void bias_act(float* y, const float* bias, i64 rows, int channels, float lo, float hi) {
    GRID_STRIDE(i, rows * channels) { y[i] = clampf(y[i] + bias[i % channels], lo, hi); }
}

// The fused clamp's backward (activation::backward): no gradient where the output sits on a
// bound.
extern "C" __global__ void act_mask(float* dy, const float* y, i64 n, float lo, float hi) {
    GRID_STRIDE(i, n) {
        float v = y[i];
        if (v <= lo || v >= hi) dy[i] = 0.0f;
    }
}

// y = clamp(a + b).
extern "C" __global__ void add_forward(const float* a, const float* b, float* y, i64 n, float lo, float hi) {
    GRID_STRIDE(i, n) { y[i] = clampf(a[i] + b[i], lo, hi); }
}

// Inverted dropout: each element kept with probability 1 - rate and scaled by keep = 1/(1-rate).
__device__ __forceinline__ float dropout_mask(u64 seed, u64 step, u64 layer, i64 i, float rate, float keep) {
    return uniform(draw(seed, step, STREAM_DROPOUT + layer, (u64)i)) < rate ? 0.0f : keep;
}

extern "C" __global__ void dropout_forward(
    const float* x, float* y, i64 n, float rate, float keep, u64 seed, u64 step, u64 layer)
{
    GRID_STRIDE(i, n) { y[i] = x[i] * dropout_mask(seed, step, layer, i, rate, keep); }
}

// dx (+)= dy * mask, the mask recomputed from the same draws as the forward pass.
extern "C" __global__ void dropout_backward(
    const float* dy, float* dx, i64 n, float rate, float keep, u64 seed, u64 step, u64 layer, int accumulate)
{
    GRID_STRIDE(i, n) {
        float g = dy[i] * dropout_mask(seed, step, layer, i, rate, keep);
        dx[i] = accumulate ? dx[i] + g : g;
    }
}

// Softmax over rows of `depth`, as the runtime's softmax_f32: max, exponentials summed in
// double, each divided by the sum rounded to float.
extern "C" __global__ void softmax_forward(const float* x, float* y, i64 rows, int depth) {
    GRID_STRIDE(r, rows) {
        const float* in = x + r * depth;
        float* out = y + r * depth;
        float max = -__int_as_float(0x7f800000);
        for (int j = 0; j < depth; j++) {
            if (in[j] > max) max = in[j];
        }
        double sum = 0.0;
        for (int j = 0; j < depth; j++) {
            float e = expf(in[j] - max);
            out[j] = e;
            sum += (double)e;
        }
        float s = (float)sum;
        for (int j = 0; j < depth; j++) out[j] /= s;
    }
}

// dx (+)= p * (dy - sum(dy * p)) per row.
extern "C" __global__ void softmax_backward(const float* p, const float* dy, float* dx, i64 rows, int depth, int accumulate) {
    GRID_STRIDE(r, rows) {
        const float* pr = p + r * depth;
        const float* gr = dy + r * depth;
        float* out = dx + r * depth;
        float dot = 0.0f;
        for (int j = 0; j < depth; j++) dot += pr[j] * gr[j];
        for (int j = 0; j < depth; j++) {
            float g = pr[j] * (gr[j] - dot);
            out[j] = accumulate ? out[j] + g : g;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Convolutions (NHWC). A tap (ky, kx) of output pixel (oy, ox) reads input row
// oy * sh + ky * dh - pt and column ox * sw + kx * dw - pl, skipped outside the image (the
// runtime's ConvGeometry::input_row/input_col).

// One channel group's patches: cols[pixel][(ky * kw + kx) * gin + c], pixel over every image
// of the batch, zero in the padding.
extern "C" __global__ void im2col(
    const float* x, float* cols, int batch, int ih, int iw, int ic, int oh, int ow,
    int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl, int gin, int group)
{
    i64 patch = (i64)kh * kw * gin;
    GRID_STRIDE(i, (i64)batch * oh * ow * patch) {
        i64 pixel = i / patch;
        int k = (int)(i - pixel * patch);
        int cc = k % gin;
        int t = k / gin;
        int kx = t % kw;
        int ky = t / kw;
        int ox = (int)(pixel % ow);
        i64 r = pixel / ow;
        int oy = (int)(r % oh);
        i64 b = r / oh;
        int iy = oy * sh + ky * dh - pt;
        int ix = ox * sw + kx * dw - pl;
        cols[i] = (iy >= 0 && iy < ih && ix >= 0 && ix < iw)
            ? x[((b * ih + iy) * iw + ix) * ic + (i64)group * gin + cc]
            : 0.0f;
    }
}

// The transpose of im2col: each input element of group `group` gathers (in tap order) the
// patch gradients of every tap that read it; dx (+)= that sum.
extern "C" __global__ void col2im(
    const float* dcols, float* dx, int batch, int ih, int iw, int ic, int oh, int ow,
    int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl, int gin, int group, int accumulate)
{
    i64 patch = (i64)kh * kw * gin;
    GRID_STRIDE(i, (i64)batch * ih * iw * gin) {
        int cc = (int)(i % gin);
        i64 r = i / gin;
        int ix = (int)(r % iw);
        r /= iw;
        int iy = (int)(r % ih);
        i64 b = r / ih;
        float s = 0.0f;
        for (int ky = 0; ky < kh; ky++) {
            int ty = iy + pt - ky * dh;
            if (ty < 0 || ty % sh != 0) continue;
            int oy = ty / sh;
            if (oy >= oh) continue;
            for (int kx = 0; kx < kw; kx++) {
                int tx = ix + pl - kx * dw;
                if (tx < 0 || tx % sw != 0) continue;
                int ox = tx / sw;
                if (ox >= ow) continue;
                s += dcols[((b * oh + oy) * ow + ox) * patch + (ky * kw + kx) * gin + cc];
            }
        }
        float* d = dx + ((b * ih + iy) * iw + ix) * ic + (i64)group * gin + cc;
        *d = accumulate ? *d + s : s;
    }
}

// Depthwise convolution: output channel o filters input channel o / mult; filters
// [kh][kw][oc]. Taps in (ky, kx) order, then bias, then the clamp (the runtime's reference).
extern "C" __global__ void depthwise_forward(
    const float* x, const float* w, const float* bias, float* y, int batch, int ih, int iw, int ic,
    int oh, int ow, int oc, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
    float lo, float hi)
{
    int mult = oc / ic;
    GRID_STRIDE(i, (i64)batch * oh * ow * oc) {
        int o = (int)(i % oc);
        i64 r = i / oc;
        int ox = (int)(r % ow);
        r /= ow;
        int oy = (int)(r % oh);
        i64 b = r / oh;
        int c = o / mult;
        float acc = 0.0f;
        for (int ky = 0; ky < kh; ky++) {
            int iy = oy * sh + ky * dh - pt;
            if (iy < 0 || iy >= ih) continue;
            for (int kx = 0; kx < kw; kx++) {
                int ix = ox * sw + kx * dw - pl;
                if (ix < 0 || ix >= iw) continue;
                acc += x[((b * ih + iy) * iw + ix) * ic + c] * w[(ky * kw + kx) * oc + o];
            }
        }
        y[i] = clampf(acc + bias[o], lo, hi);
    }
}

// dx[b][iy][ix][c] (+)= sum over the channel's outputs and the taps that read the element.
extern "C" __global__ void depthwise_backward_input(
    const float* dy, const float* w, float* dx, int batch, int ih, int iw, int ic,
    int oh, int ow, int oc, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
    int accumulate)
{
    int mult = oc / ic;
    GRID_STRIDE(i, (i64)batch * ih * iw * ic) {
        int c = (int)(i % ic);
        i64 r = i / ic;
        int ix = (int)(r % iw);
        r /= iw;
        int iy = (int)(r % ih);
        i64 b = r / ih;
        float s = 0.0f;
        for (int ky = 0; ky < kh; ky++) {
            int ty = iy + pt - ky * dh;
            if (ty < 0 || ty % sh != 0) continue;
            int oy = ty / sh;
            if (oy >= oh) continue;
            for (int kx = 0; kx < kw; kx++) {
                int tx = ix + pl - kx * dw;
                if (tx < 0 || tx % sw != 0) continue;
                int ox = tx / sw;
                if (ox >= ow) continue;
                const float* g = dy + ((b * oh + oy) * ow + ox) * oc;
                const float* f = w + (ky * kw + kx) * oc;
                for (int m = 0; m < mult; m++) {
                    int o = c * mult + m;
                    s += g[o] * f[o];
                }
            }
        }
        dx[i] = accumulate ? dx[i] + s : s;
    }
}

// The filter gradient, first stage: blockIdx.y is the tap, blockIdx.x a run of 32 output
// channels, blockIdx.z one of gridDim.z equal shares of the batch's output pixels. A block of
// 32 x 8 threads sums its share (channels along x so reads coalesce) and writes
// partial[z][tap][o]; sum_partials adds the shares in order.
extern "C" __global__ void depthwise_filter_partial(
    const float* x, const float* dy, float* partial, int batch, int ih, int iw, int ic,
    int oh, int ow, int oc, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl)
{
    __shared__ float part[8][33];
    int mult = oc / ic;
    int o = blockIdx.x * 32 + threadIdx.x;
    int tap = blockIdx.y;
    int ky = tap / kw;
    int kx = tap % kw;
    i64 pixels = (i64)batch * oh * ow;
    i64 share = (pixels + gridDim.z - 1) / gridDim.z;
    i64 start = share * blockIdx.z;
    i64 end = start + share < pixels ? start + share : pixels;
    float s = 0.0f;
    if (o < oc) {
        int c = o / mult;
        for (i64 p = start + threadIdx.y; p < end; p += 8) {
            int ox = (int)(p % ow);
            i64 r = p / ow;
            int oy = (int)(r % oh);
            i64 b = r / oh;
            int iy = oy * sh + ky * dh - pt;
            int ix = ox * sw + kx * dw - pl;
            if (iy < 0 || iy >= ih || ix < 0 || ix >= iw) continue;
            s += dy[p * oc + o] * x[((b * ih + iy) * iw + ix) * ic + c];
        }
    }
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && o < oc) {
        float t = 0.0f;
        for (int k = 0; k < 8; k++) t += part[k][threadIdx.x];
        partial[((i64)blockIdx.z * kh * kw + tap) * oc + o] = t;
    }
}

// out[j] = sum over s < splits of partial[s * len + j], in order.
extern "C" __global__ void sum_partials(const float* partial, int splits, i64 len, float* out) {
    GRID_STRIDE(j, len) {
        float t = 0.0f;
        for (int s = 0; s < splits; s++) t += partial[(i64)s * len + j];
        out[j] = t;
    }
}

// ---------------------------------------------------------------------------------------------
// Pooling (windows without padding, as the graph writes them).

// The window's largest value starting from f32::MIN (the runtime's max_f32).
extern "C" __global__ void max_pool_forward(
    const float* x, float* y, int batch, int h, int w, int c, int oh, int ow, int kh, int kw, int sh, int sw)
{
    GRID_STRIDE(i, (i64)batch * oh * ow * c) {
        int ch = (int)(i % c);
        i64 r = i / c;
        int ox = (int)(r % ow);
        r /= ow;
        int oy = (int)(r % oh);
        i64 b = r / oh;
        float m = -FLT_MAX_;
        for (int ky = 0; ky < kh; ky++) {
            for (int kx = 0; kx < kw; kx++) {
                m = fmaxf(m, x[((b * h + oy * sh + ky) * w + ox * sw + kx) * c + ch]);
            }
        }
        y[i] = m;
    }
}

// Each input element gathers the gradients of the windows (in output order) whose first
// largest element it is, as pool::max_backward routes them.
extern "C" __global__ void max_pool_backward(
    const float* x, const float* dy, float* dx, int batch, int h, int w, int c, int oh, int ow,
    int kh, int kw, int sh, int sw, int accumulate)
{
    GRID_STRIDE(i, (i64)batch * h * w * c) {
        int ch = (int)(i % c);
        i64 r = i / c;
        int ix = (int)(r % w);
        r /= w;
        int iy = (int)(r % h);
        i64 b = r / h;
        int oy0 = iy - kh + 1 > 0 ? (iy - kh + 1 + sh - 1) / sh : 0;
        int oy1 = iy / sh < oh - 1 ? iy / sh : oh - 1;
        int ox0 = ix - kw + 1 > 0 ? (ix - kw + 1 + sw - 1) / sw : 0;
        int ox1 = ix / sw < ow - 1 ? ix / sw : ow - 1;
        float s = 0.0f;
        for (int oy = oy0; oy <= oy1; oy++) {
            for (int ox = ox0; ox <= ox1; ox++) {
                int by = oy * sh, bx = ox * sw;
                float best = x[((b * h + by) * w + bx) * c + ch];
                for (int ky = 0; ky < kh; ky++) {
                    for (int kx = 0; kx < kw; kx++) {
                        float v = x[((b * h + oy * sh + ky) * w + ox * sw + kx) * c + ch];
                        if (v > best) {
                            best = v;
                            by = oy * sh + ky;
                            bx = ox * sw + kx;
                        }
                    }
                }
                if (by == iy && bx == ix) s += dy[((b * oh + oy) * ow + ox) * c + ch];
            }
        }
        dx[i] = accumulate ? dx[i] + s : s;
    }
}

// The window's values summed in row-major order, divided by their count.
extern "C" __global__ void avg_pool_forward(
    const float* x, float* y, int batch, int h, int w, int c, int oh, int ow, int kh, int kw, int sh, int sw)
{
    float count = (float)(kh * kw);
    GRID_STRIDE(i, (i64)batch * oh * ow * c) {
        int ch = (int)(i % c);
        i64 r = i / c;
        int ox = (int)(r % ow);
        r /= ow;
        int oy = (int)(r % oh);
        i64 b = r / oh;
        float total = 0.0f;
        for (int ky = 0; ky < kh; ky++) {
            for (int kx = 0; kx < kw; kx++) {
                total += x[((b * h + oy * sh + ky) * w + ox * sw + kx) * c + ch];
            }
        }
        y[i] = total / count;
    }
}

// dx (+)= the window gradients (in output order) times 1 / (kh * kw).
extern "C" __global__ void avg_pool_backward(
    const float* dy, float* dx, int batch, int h, int w, int c, int oh, int ow,
    int kh, int kw, int sh, int sw, int accumulate)
{
    float share = 1.0f / (float)(kh * kw);
    GRID_STRIDE(i, (i64)batch * h * w * c) {
        int ch = (int)(i % c);
        i64 r = i / c;
        int ix = (int)(r % w);
        r /= w;
        int iy = (int)(r % h);
        i64 b = r / h;
        int oy0 = iy - kh + 1 > 0 ? (iy - kh + 1 + sh - 1) / sh : 0;
        int oy1 = iy / sh < oh - 1 ? iy / sh : oh - 1;
        int ox0 = ix - kw + 1 > 0 ? (ix - kw + 1 + sw - 1) / sw : 0;
        int ox1 = ix / sw < ow - 1 ? ix / sw : ow - 1;
        float s = 0.0f;
        for (int oy = oy0; oy <= oy1; oy++) {
            for (int ox = ox0; ox <= ox1; ox++) {
                s += dy[((b * oh + oy) * ow + ox) * c + ch] * share;
            }
        }
        dx[i] = accumulate ? dx[i] + s : s;
    }
}

// The mean of each channel over the image's `pixels` positions, summed in order.
extern "C" __global__ void global_avg_forward(const float* x, float* y, int batch, int pixels, int c) {
    GRID_STRIDE(i, (i64)batch * c) {
        int ch = (int)(i % c);
        i64 b = i / c;
        float total = 0.0f;
        for (int p = 0; p < pixels; p++) total += x[(b * pixels + p) * c + ch];
        y[i] = total / (float)pixels;
    }
}

// dx (+)= dy[b][c] * (1 / pixels) at every position.
extern "C" __global__ void global_avg_backward(const float* dy, float* dx, int batch, int pixels, int c, int accumulate) {
    float share = 1.0f / (float)pixels;
    GRID_STRIDE(i, (i64)batch * pixels * c) {
        int ch = (int)(i % c);
        i64 b = i / ((i64)pixels * c);
        float g = dy[b * c + ch] * share;
        dx[i] = accumulate ? dx[i] + g : g;
    }
}

// ---------------------------------------------------------------------------------------------
// Losses (loss.rs, one thread per sample) and the metric (fit.rs's `metric`).

#define LOSS_CROSS_ENTROPY 0
#define LOSS_BINARY_CROSS_ENTROPY 1
#define LOSS_MSE 2
#define LOSS_MAE 3
#define LOSS_HUBER 4

// Sample b of the `count` starting at `first` of `order` is sample order[first + b] of the
// set: its prediction pred[b], its target classes[idx] (one-hot over `width`) when
// has_classes, else values[idx]. Writes the loss to sample_loss[first + b], the metric to
// sample_metric[first + b] and, with write_grad, scale * dloss/dpred to grad[b].
extern "C" __global__ void loss_forward_backward(
    const float* pred, int width, int count, const unsigned* order, i64 first,
    int has_classes, const unsigned* classes, const float* values,
    const float* class_weights, int n_weights,
    int kind, float huber_delta, float scale, int write_grad, float* grad,
    float* sample_loss, double* sample_metric)
{
    GRID_STRIDE(b, (i64)count) {
        unsigned idx = order[first + b];
        const float* z = pred + b * width;
        float* g = grad + b * width;
        unsigned cls = has_classes ? classes[idx] : 0u;
        const float* t_values = has_classes ? z : values + (i64)idx * width;
#define TARGET(j) (has_classes ? ((unsigned)(j) == cls ? 1.0f : 0.0f) : t_values[(j)])
        float n = (float)(width > 0 ? width : 1);
        float loss = 0.0f;
        if (kind == LOSS_CROSS_ENTROPY) {
            float max = -__int_as_float(0x7f800000);
            for (int j = 0; j < width; j++) max = fmaxf(max, z[j]);
            float sum = 0.0f;
            for (int j = 0; j < width; j++) sum += expf(z[j] - max);
            float log_sum = max + logf(sum);
            float weight = 1.0f;
            if (has_classes && (int)cls < n_weights) weight = class_weights[cls];
            float mass = 0.0f;
            for (int j = 0; j < width; j++) mass += TARGET(j);
            for (int j = 0; j < width; j++) {
                float t = TARGET(j);
                float p = expf(z[j] - log_sum);
                loss -= t * (z[j] - log_sum);
                if (write_grad) g[j] = scale * weight * (p * mass - t);
            }
            loss = weight * loss;
        } else if (kind == LOSS_BINARY_CROSS_ENTROPY) {
            for (int j = 0; j < width; j++) {
                float t = TARGET(j);
                float zj = z[j];
                loss += fmaxf(zj, 0.0f) - zj * t + log1pf(expf(-fabsf(zj)));
                float p = 1.0f / (1.0f + expf(-zj));
                if (write_grad) g[j] = scale * (p - t) / n;
            }
            loss = loss / n;
        } else if (kind == LOSS_MSE) {
            for (int j = 0; j < width; j++) {
                float e = z[j] - TARGET(j);
                loss += e * e;
                if (write_grad) g[j] = scale * 2.0f * e / n;
            }
            loss = loss / n;
        } else if (kind == LOSS_MAE) {
            for (int j = 0; j < width; j++) {
                float e = z[j] - TARGET(j);
                loss += fabsf(e);
                if (write_grad) g[j] = scale * signum(e) * (e != 0.0f ? 1.0f : 0.0f) / n;
            }
            loss = loss / n;
        } else {
            float d = huber_delta;
            for (int j = 0; j < width; j++) {
                float e = z[j] - TARGET(j);
                if (fabsf(e) <= d) {
                    loss += 0.5f * e * e;
                    if (write_grad) g[j] = scale * e / n;
                } else {
                    loss += d * (fabsf(e) - 0.5f * d);
                    if (write_grad) g[j] = scale * d * signum(e) / n;
                }
            }
            loss = loss / n;
        }
        sample_loss[first + b] = loss;
        double metric;
        if (has_classes) {
            int best = 0;
            float best_v = -__int_as_float(0x7f800000);
            for (int j = 0; j < width; j++) {
                if (z[j] > best_v) {
                    best = j;
                    best_v = z[j];
                }
            }
            metric = (unsigned)best == cls ? 1.0 : 0.0;
        } else {
            double total = 0.0;
            for (int j = 0; j < width; j++) total += (double)fabsf(z[j] - t_values[j]);
            metric = total / (double)(width > 0 ? width : 1);
        }
        sample_metric[first + b] = metric;
#undef TARGET
    }
}

// ---------------------------------------------------------------------------------------------
// Reductions: a fixed grid of blocks sums grid-strided shares in double and writes one
// partial per block; a one-block kernel adds the partials. The grid size depends only on n,
// so the order of the additions (and the result) does too.

__device__ double block_sum(double v) {
    __shared__ double shared[REDUCE_THREADS];
    shared[threadIdx.x] = v;
    __syncthreads();
    for (int s = REDUCE_THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
        __syncthreads();
    }
    return shared[0];
}

extern "C" __global__ void sum_f32_partial(const float* x, i64 n, double* partial) {
    double s = 0.0;
    GRID_STRIDE(i, n) { s += (double)x[i]; }
    double t = block_sum(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = t;
}

extern "C" __global__ void sum_f64_partial(const double* x, i64 n, double* partial) {
    double s = 0.0;
    GRID_STRIDE(i, n) { s += x[i]; }
    double t = block_sum(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = t;
}

// Squares in double, as clip_by_norm sums them.
extern "C" __global__ void sum_squares_partial(const float* x, i64 n, double* partial) {
    double s = 0.0;
    GRID_STRIDE(i, n) {
        double v = (double)x[i];
        s += v * v;
    }
    double t = block_sum(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = t;
}

// out[slot] = the sum of `count` partials (one block).
extern "C" __global__ void sum_finish(const double* partial, int count, double* out, int slot) {
    double s = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
    double t = block_sum(s);
    if (threadIdx.x == 0) out[slot] = t;
}

// From the partial sums of the gradients' squares (one block): sets *diverged (sticky) when a
// gradient is not finite (a finite f32 squared cannot overflow a double, so the sum is finite
// exactly when every gradient is), and *scale to clip_by_norm's factor: max_norm / norm when
// clipping and the norm exceeds max_norm, else 1.
extern "C" __global__ void clip_finish(const double* partial, int count, int clip, float max_norm, float* scale, int* diverged) {
    double s = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
    double t = block_sum(s);
    if (threadIdx.x == 0) {
        float k = 1.0f;
        if (!isfinite(t)) {
            *diverged = 1;
        } else {
            float norm = (float)sqrt(t);
            if (clip && norm > max_norm && norm > 0.0f) k = max_norm / norm;
        }
        *scale = k;
    }
}

// ---------------------------------------------------------------------------------------------
// Optimizers (optim.rs's OptimizerState::step, expression for expression). Parameters,
// gradients and moments are flat; decay[i] says whether element i is a weight (regularized)
// rather than a bias. Nothing moves once *diverged is set.

extern "C" __global__ void sgd_step(
    float* w, const float* grad, float* velocity, const unsigned char* decay, i64 n,
    float rate, float momentum, int nesterov, float l1, float l2, const float* scale, const int* diverged)
{
    if (*diverged) return;
    float k = *scale;
    GRID_STRIDE(i, n) {
        float wi = w[i];
        float r1 = decay[i] ? l1 : 0.0f;
        float r2 = decay[i] ? l2 : 0.0f;
        float g = grad[i] * k;
        g = g + 2.0f * r2 * wi + r1 * signum(wi);
        float v = momentum * velocity[i] + g;
        velocity[i] = v;
        float update = nesterov ? g + momentum * v : v;
        w[i] = wi - rate * update;
    }
}

// Adam and AdamW: c1 = 1 - beta1^t and c2 = 1 - beta2^t come from the host (computed as the
// CPU computes them); weight_decay is AdamW's decoupled decay (0 for Adam).
extern "C" __global__ void adam_step(
    float* w, const float* grad, float* m1, float* m2, const unsigned char* decay, i64 n,
    float rate, float beta1, float beta2, float epsilon, float c1, float c2, float weight_decay,
    float l1, float l2, const float* scale, const int* diverged)
{
    if (*diverged) return;
    float k = *scale;
    GRID_STRIDE(i, n) {
        float wi = w[i];
        float r1 = decay[i] ? l1 : 0.0f;
        float r2 = decay[i] ? l2 : 0.0f;
        float decoupled = decay[i] ? weight_decay : 0.0f;
        float g = grad[i] * k;
        g = g + 2.0f * r2 * wi + r1 * signum(wi);
        float m = beta1 * m1[i] + (1.0f - beta1) * g;
        float v = beta2 * m2[i] + (1.0f - beta2) * g * g;
        m1[i] = m;
        m2[i] = v;
        float update = (m / c1) / (sqrtf(v / c2) + epsilon);
        w[i] = wi - rate * (update + decoupled * wi);
    }
}
