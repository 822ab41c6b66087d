/*
 * agilenn integer kernels: the arithmetic of TFLite int8 / CMSIS-NN on uint8 activations.
 *
 * Activations are uint8 with a zero point, laid out HWC (the channels of one pixel together); weights
 * int8 with zero point 0; accumulators int32. An accumulator becomes a uint8 output by a per-channel
 * multiplier M in [2^30, 2^31) and shift s (the total shift is 32 + s):
 *
 *     out = clamp(((hi32(acc * M) + 2^(s-1)) >> s) + zero_point, low, high)
 *
 * which equals floor((acc * M + 2^(31+s)) / 2^(32+s)) + zero_point: a single rounding, half up.
 * Right shifts of negative values are arithmetic, as on every compiler agilenn targets (gcc, clang).
 *
 * The matrix kernels take raw uint8 inputs: the generator folds the input zero point into the bias
 * (bias - zero_point * sum of weights), which is exact wherever no padding is read.
 *
 * On a core with the DSP extension (Cortex-M4/M7/M33) the inner loops use SXTB16/UXTB16 and SMLAD,
 * two multiply-accumulates per instruction, as CMSIS-NN does; elsewhere (the host build, or with
 * AGILENN_PLAIN_C defined) plain C computes the very same integers.
 */
#ifndef AGILENN_KERNELS_H
#define AGILENN_KERNELS_H

#include <stdint.h>
#include <string.h>

#if defined(__ARM_FEATURE_DSP) && !defined(AGILENN_PLAIN_C)
#include <arm_acle.h>
#define AGILENN_DSP 1
#else
#define AGILENN_DSP 0
#endif

/* Per-channel requantization of one layer. */
typedef struct {
    const int32_t *multiplier;
    const int8_t *shift;
    int32_t zero_point;
    int32_t low;
    int32_t high;
} agilenn_requant_t;

static inline uint8_t agilenn_requantize(int32_t acc, int32_t multiplier, int32_t shift, const agilenn_requant_t *q)
{
    int32_t high_word = (int32_t)(((int64_t)acc * multiplier) >> 32);
    int32_t value = ((high_word + (1 << (shift - 1))) >> shift) + q->zero_point;
    if (value < q->low) {
        value = q->low;
    }
    if (value > q->high) {
        value = q->high;
    }
    return (uint8_t)value;
}

#if AGILENN_DSP
static inline uint32_t agilenn_read_u32(const void *p)
{
    uint32_t word;
    memcpy(&word, p, 4); /* one LDR: Cortex-M7 loads unaligned words */
    return word;
}
#endif

/* Raw pixels (CHW) -> the first layer's uint8 input (HWC) through the normalisation table. */
static inline void agilenn_input_map(const uint8_t *input, uint8_t *out, const uint8_t *table,
                                     int32_t channels, int32_t pixels)
{
    int32_t c, p;
    if (channels == 1) {
        for (p = 0; p < pixels; p++) {
            out[p] = table[input[p]];
        }
        return;
    }
    for (c = 0; c < channels; c++) {
        for (p = 0; p < pixels; p++) {
            out[p * channels + c] = table[input[c * pixels + p]];
        }
    }
}

/*
 * Two input rows times every weight row: out_r[c] = requant(bias[c] + sum_k a_r[k] * w[c * k_len + k]).
 * The rows are pixels (a pointwise convolution) or im2col patches; outputs are HWC channel vectors.
 */
static inline void agilenn_mat_mult_2rows(const uint8_t *a0, const uint8_t *a1, const int8_t *w, int32_t k_len,
                                          int32_t channels, const int32_t *bias, const agilenn_requant_t *q,
                                          uint8_t *out0, uint8_t *out1)
{
    int32_t c = 0;
#if AGILENN_DSP
    for (; c + 2 <= channels; c += 2) {
        const int8_t *w0 = w + c * k_len;
        const int8_t *w1 = w0 + k_len;
        int32_t s00 = bias[c], s01 = bias[c + 1], s10 = bias[c], s11 = bias[c + 1];
        int32_t k = 0;
        for (; k + 4 <= k_len; k += 4) {
            uint32_t x0 = agilenn_read_u32(a0 + k), x1 = agilenn_read_u32(a1 + k);
            uint32_t y0 = agilenn_read_u32(w0 + k), y1 = agilenn_read_u32(w1 + k);
            uint32_t x0e = __uxtb16(x0), x0o = __uxtb16(__ror(x0, 8));
            uint32_t x1e = __uxtb16(x1), x1o = __uxtb16(__ror(x1, 8));
            uint32_t y0e = __sxtb16(y0), y0o = __sxtb16(__ror(y0, 8));
            uint32_t y1e = __sxtb16(y1), y1o = __sxtb16(__ror(y1, 8));
            s00 = __smlad(x0e, y0e, s00);
            s00 = __smlad(x0o, y0o, s00);
            s01 = __smlad(x0e, y1e, s01);
            s01 = __smlad(x0o, y1o, s01);
            s10 = __smlad(x1e, y0e, s10);
            s10 = __smlad(x1o, y0o, s10);
            s11 = __smlad(x1e, y1e, s11);
            s11 = __smlad(x1o, y1o, s11);
        }
        for (; k < k_len; k++) {
            s00 += a0[k] * w0[k];
            s01 += a0[k] * w1[k];
            s10 += a1[k] * w0[k];
            s11 += a1[k] * w1[k];
        }
        out0[c] = agilenn_requantize(s00, q->multiplier[c], q->shift[c], q);
        out0[c + 1] = agilenn_requantize(s01, q->multiplier[c + 1], q->shift[c + 1], q);
        out1[c] = agilenn_requantize(s10, q->multiplier[c], q->shift[c], q);
        out1[c + 1] = agilenn_requantize(s11, q->multiplier[c + 1], q->shift[c + 1], q);
    }
#endif
    for (; c < channels; c++) {
        const int8_t *wc = w + c * k_len;
        int32_t s0 = bias[c], s1 = bias[c];
        int32_t k;
        for (k = 0; k < k_len; k++) {
            s0 += a0[k] * wc[k];
            s1 += a1[k] * wc[k];
        }
        out0[c] = agilenn_requantize(s0, q->multiplier[c], q->shift[c], q);
        out1[c] = agilenn_requantize(s1, q->multiplier[c], q->shift[c], q);
    }
}

/* One input row times every weight row (a dense layer); four weight rows share each input word. */
static inline void agilenn_vec_mat_mult(const uint8_t *a, const int8_t *w, int32_t k_len, int32_t channels,
                                        const int32_t *bias, const agilenn_requant_t *q, uint8_t *out)
{
    int32_t c = 0;
#if AGILENN_DSP
    for (; c + 4 <= channels; c += 4) {
        const int8_t *w0 = w + c * k_len;
        const int8_t *w1 = w0 + k_len;
        const int8_t *w2 = w1 + k_len;
        const int8_t *w3 = w2 + k_len;
        int32_t s0 = bias[c], s1 = bias[c + 1], s2 = bias[c + 2], s3 = bias[c + 3];
        int32_t k = 0;
        for (; k + 4 <= k_len; k += 4) {
            uint32_t x = agilenn_read_u32(a + k);
            uint32_t xe = __uxtb16(x), xo = __uxtb16(__ror(x, 8));
            uint32_t y0 = agilenn_read_u32(w0 + k), y1 = agilenn_read_u32(w1 + k);
            uint32_t y2 = agilenn_read_u32(w2 + k), y3 = agilenn_read_u32(w3 + k);
            s0 = __smlad(xe, __sxtb16(y0), s0);
            s0 = __smlad(xo, __sxtb16(__ror(y0, 8)), s0);
            s1 = __smlad(xe, __sxtb16(y1), s1);
            s1 = __smlad(xo, __sxtb16(__ror(y1, 8)), s1);
            s2 = __smlad(xe, __sxtb16(y2), s2);
            s2 = __smlad(xo, __sxtb16(__ror(y2, 8)), s2);
            s3 = __smlad(xe, __sxtb16(y3), s3);
            s3 = __smlad(xo, __sxtb16(__ror(y3, 8)), s3);
        }
        for (; k < k_len; k++) {
            s0 += a[k] * w0[k];
            s1 += a[k] * w1[k];
            s2 += a[k] * w2[k];
            s3 += a[k] * w3[k];
        }
        out[c] = agilenn_requantize(s0, q->multiplier[c], q->shift[c], q);
        out[c + 1] = agilenn_requantize(s1, q->multiplier[c + 1], q->shift[c + 1], q);
        out[c + 2] = agilenn_requantize(s2, q->multiplier[c + 2], q->shift[c + 2], q);
        out[c + 3] = agilenn_requantize(s3, q->multiplier[c + 3], q->shift[c + 3], q);
    }
#endif
    for (; c < channels; c++) {
        const int8_t *wc = w + c * k_len;
        int32_t s = bias[c];
        int32_t k;
        for (k = 0; k < k_len; k++) {
            s += a[k] * wc[k];
        }
        out[c] = agilenn_requantize(s, q->multiplier[c], q->shift[c], q);
    }
}

/* Geometry of a convolution: HWC input and output, square or not. */
typedef struct {
    int32_t in_height, in_width, in_channels;
    int32_t out_height, out_width, out_channels;
    int32_t kernel_height, kernel_width;
    int32_t stride_height, stride_width;
    int32_t pad_top, pad_left;
} agilenn_conv_dims_t;

/* Bytes of the im2col scratch `agilenn_conv_unpadded` needs: two patches. */
#define AGILENN_CONV_SCRATCH_BYTES(kh, kw, cin) (2 * (kh) * (kw) * (cin))

/*
 * A convolution that reads no padding, as im2col and matrix products over pairs of pixels; weights are
 * [out][kh][kw][in] and the bias has the input zero point folded in. A pointwise convolution with
 * stride 1 reads its pixels in place (no copy).
 */
static inline void agilenn_conv_unpadded(const uint8_t *in, const int8_t *w, const int32_t *bias,
                                         const agilenn_requant_t *q, const agilenn_conv_dims_t *d,
                                         uint8_t *scratch, uint8_t *out)
{
    const int32_t patch = d->kernel_height * d->kernel_width * d->in_channels;
    const int32_t row_bytes = d->kernel_width * d->in_channels;
    const int32_t pixels = d->out_height * d->out_width;
    const int in_place = d->kernel_height == 1 && d->kernel_width == 1 && d->stride_height == 1 && d->stride_width == 1;
    const uint8_t *rows[2];
    int32_t p;
    for (p = 0; p < pixels; p += 2) {
        int32_t r;
        int32_t count = pixels - p < 2 ? pixels - p : 2;
        for (r = 0; r < count; r++) {
            int32_t oy = (p + r) / d->out_width, ox = (p + r) % d->out_width;
            const uint8_t *origin = in + ((oy * d->stride_height) * d->in_width + ox * d->stride_width) * d->in_channels;
            if (in_place) {
                rows[r] = origin;
            } else {
                uint8_t *dst = scratch + r * patch;
                int32_t ky;
                for (ky = 0; ky < d->kernel_height; ky++) {
                    memcpy(dst + ky * row_bytes, origin + ky * d->in_width * d->in_channels, (size_t)row_bytes);
                }
                rows[r] = dst;
            }
        }
        if (count == 2) {
            agilenn_mat_mult_2rows(rows[0], rows[1], w, patch, d->out_channels, bias, q,
                                   out + p * d->out_channels, out + (p + 1) * d->out_channels);
        } else {
            agilenn_vec_mat_mult(rows[0], w, patch, d->out_channels, bias, q, out + p * d->out_channels);
        }
    }
}

/* Any convolution with groups = 1, padding included (padding holds the zero point, so it adds nothing). */
static inline void agilenn_conv_padded(const uint8_t *in, const int8_t *w, const int32_t *bias, int32_t in_zero_point,
                                       const agilenn_requant_t *q, const agilenn_conv_dims_t *d, uint8_t *out)
{
    int32_t oy, ox, c, ky, kx, i;
    for (oy = 0; oy < d->out_height; oy++) {
        for (ox = 0; ox < d->out_width; ox++) {
            uint8_t *dst = out + (oy * d->out_width + ox) * d->out_channels;
            for (c = 0; c < d->out_channels; c++) {
                int32_t acc = bias[c];
                for (ky = 0; ky < d->kernel_height; ky++) {
                    int32_t y = oy * d->stride_height - d->pad_top + ky;
                    if (y < 0 || y >= d->in_height) {
                        continue;
                    }
                    for (kx = 0; kx < d->kernel_width; kx++) {
                        int32_t x = ox * d->stride_width - d->pad_left + kx;
                        const uint8_t *src;
                        const int8_t *wk;
                        if (x < 0 || x >= d->in_width) {
                            continue;
                        }
                        src = in + (y * d->in_width + x) * d->in_channels;
                        wk = w + ((c * d->kernel_height + ky) * d->kernel_width + kx) * d->in_channels;
                        for (i = 0; i < d->in_channels; i++) {
                            acc += (src[i] - in_zero_point) * wk[i];
                        }
                    }
                }
                dst[c] = agilenn_requantize(acc, q->multiplier[c], q->shift[c], q);
            }
        }
    }
}

/* Depthwise convolution (channel multiplier 1), padding included; weights are [kh][kw][channels]. */
static inline void agilenn_depthwise_conv(const uint8_t *in, const int8_t *w, const int32_t *bias,
                                          int32_t in_zero_point, const agilenn_requant_t *q,
                                          const agilenn_conv_dims_t *d, uint8_t *out)
{
    int32_t oy, ox, c, ky, kx;
    const int32_t channels = d->in_channels;
    for (oy = 0; oy < d->out_height; oy++) {
        for (ox = 0; ox < d->out_width; ox++) {
            uint8_t *dst = out + (oy * d->out_width + ox) * channels;
            for (c = 0; c < channels; c++) {
                int32_t acc = bias[c];
                for (ky = 0; ky < d->kernel_height; ky++) {
                    int32_t y = oy * d->stride_height - d->pad_top + ky;
                    if (y < 0 || y >= d->in_height) {
                        continue;
                    }
                    for (kx = 0; kx < d->kernel_width; kx++) {
                        int32_t x = ox * d->stride_width - d->pad_left + kx;
                        if (x < 0 || x >= d->in_width) {
                            continue;
                        }
                        acc += (in[(y * d->in_width + x) * channels + c] - in_zero_point)
                               * w[(ky * d->kernel_width + kx) * channels + c];
                    }
                }
                dst[c] = agilenn_requantize(acc, q->multiplier[c], q->shift[c], q);
            }
        }
    }
}

/* Channels [start, start + count) of every pixel of an HWC tensor, packed. */
static inline void agilenn_channel_slice(const uint8_t *in, int32_t channels, int32_t start, int32_t count,
                                         int32_t pixels, uint8_t *out)
{
    int32_t p;
    for (p = 0; p < pixels; p++) {
        memcpy(out + p * count, in + p * channels + start, (size_t)count);
    }
}

#endif /* AGILENN_KERNELS_H */
