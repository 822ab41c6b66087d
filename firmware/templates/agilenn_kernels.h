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

#if defined(__GNUC__)
#define AGILENN_INLINE static inline __attribute__((always_inline))
#else
#define AGILENN_INLINE static inline
#endif

#if AGILENN_DSP
/* The odd bytes of a word, sign- or zero-extended to halfwords: one SXTB16/UXTB16 with its rotation
   (gcc's arm_acle.h has no __ror, and a separate rotate would cost an instruction). */
AGILENN_INLINE uint32_t agilenn_sxtb16_odd(uint32_t word)
{
    uint32_t result;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(result) : "r"(word));
    return result;
}

AGILENN_INLINE uint32_t agilenn_uxtb16_odd(uint32_t word)
{
    uint32_t result;
    __asm__("uxtb16 %0, %1, ror #8" : "=r"(result) : "r"(word));
    return result;
}

AGILENN_INLINE uint32_t agilenn_read_u32(const void *p)
{
    uint32_t word;
    memcpy(&word, p, 4); /* one LDR: Cortex-M7 loads unaligned words */
    return word;
}
#endif

/*
 * Per-channel requantization of one layer. `offset` holds the rounding term and the zero point,
 * 2^(shift-1) + (zero_point << shift), so that one multiply-accumulate and one shift do it all:
 * out = (hi32(acc * M) + offset) >> shift, then clamped to [low, high] (a ReLU or ReLU6 in uint8).
 */
typedef struct {
    const int32_t *multiplier;
    const int32_t *offset;
    const int8_t *shift;
    int32_t low;
    int32_t high;
} agilenn_requant_t;

AGILENN_INLINE uint8_t agilenn_requantize(int32_t acc, const agilenn_requant_t *q, int32_t channel)
{
    int32_t value;
#if AGILENN_DSP
    __asm__("smmla %0, %1, %2, %3" : "=r"(value) : "r"(acc), "r"(q->multiplier[channel]), "r"(q->offset[channel]));
    value >>= q->shift[channel];
    value = (int32_t)__usat(value, 8);
#else
    value = ((int32_t)(((int64_t)acc * q->multiplier[channel]) >> 32) + q->offset[channel]) >> q->shift[channel];
    value = value < 0 ? 0 : (value > 255 ? 255 : value);
#endif
    if (q->low > 0 && value < q->low) {
        value = q->low;
    }
    if (q->high < 255 && value > q->high) {
        value = q->high;
    }
    return (uint8_t)value;
}

/*
 * Two input rows times every weight row: out_r[c] = requant(bias[c] + sum_k a_r[k] * w[c * k_len + k]).
 * The rows are pixels (a pointwise convolution) or im2col patches; outputs are HWC channel vectors.
 */
AGILENN_INLINE void agilenn_mat_mult_2rows(const uint8_t *a0, const uint8_t *a1, const int8_t *w, int32_t k_len,
                                           int32_t channels, const int32_t *bias, const agilenn_requant_t *q,
                                           uint8_t *out0, uint8_t *out1)
{
    const int8_t *row = w; /* weight row c, advanced by steps (no c * k_len to overflow) */
    const int32_t paired = AGILENN_DSP ? channels - channels % 2 : 0;
    int32_t c;
#if AGILENN_DSP
    for (c = 0; c < paired; c += 2) {
        const int8_t *w0 = row;
        const int8_t *w1 = w0 + k_len;
        int32_t s00 = bias[c], s01 = bias[c + 1], s10 = bias[c], s11 = bias[c + 1];
        int32_t k = 0;
        row += 2 * k_len;
        for (; k + 4 <= k_len; k += 4) {
            uint32_t x0 = agilenn_read_u32(a0 + k), x1 = agilenn_read_u32(a1 + k);
            uint32_t y0 = agilenn_read_u32(w0 + k), y1 = agilenn_read_u32(w1 + k);
            uint32_t x0e = __uxtb16(x0), x0o = agilenn_uxtb16_odd(x0);
            uint32_t x1e = __uxtb16(x1), x1o = agilenn_uxtb16_odd(x1);
            uint32_t y0e = __sxtb16(y0), y0o = agilenn_sxtb16_odd(y0);
            uint32_t y1e = __sxtb16(y1), y1o = agilenn_sxtb16_odd(y1);
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
        out0[c] = agilenn_requantize(s00, q, c);
        out0[c + 1] = agilenn_requantize(s01, q, c + 1);
        out1[c] = agilenn_requantize(s10, q, c);
        out1[c + 1] = agilenn_requantize(s11, q, c + 1);
    }
#endif
    for (c = paired; c < channels; c++) {
        const int8_t *wc = row;
        int32_t s0 = bias[c], s1 = bias[c];
        int32_t k;
        row += k_len;
        for (k = 0; k < k_len; k++) {
            s0 += a0[k] * wc[k];
            s1 += a1[k] * wc[k];
        }
        out0[c] = agilenn_requantize(s0, q, c);
        out1[c] = agilenn_requantize(s1, q, c);
    }
}

/* One input row times every weight row (a dense layer); four weight rows share each input word. */
AGILENN_INLINE void agilenn_vec_mat_mult(const uint8_t *a, const int8_t *w, int32_t k_len, int32_t channels,
                                         const int32_t *bias, const agilenn_requant_t *q, uint8_t *out)
{
    const int8_t *row = w; /* weight row c, advanced by steps (no c * k_len to overflow) */
    const int32_t grouped = AGILENN_DSP ? channels - channels % 4 : 0;
    int32_t c;
#if AGILENN_DSP
    for (c = 0; c < grouped; c += 4) {
        const int8_t *w0 = row;
        const int8_t *w1 = w0 + k_len;
        const int8_t *w2 = w1 + k_len;
        const int8_t *w3 = w2 + k_len;
        int32_t s0 = bias[c], s1 = bias[c + 1], s2 = bias[c + 2], s3 = bias[c + 3];
        int32_t k = 0;
        row += 4 * k_len;
        for (; k + 4 <= k_len; k += 4) {
            uint32_t x = agilenn_read_u32(a + k);
            uint32_t xe = __uxtb16(x), xo = agilenn_uxtb16_odd(x);
            uint32_t y0 = agilenn_read_u32(w0 + k), y1 = agilenn_read_u32(w1 + k);
            uint32_t y2 = agilenn_read_u32(w2 + k), y3 = agilenn_read_u32(w3 + k);
            s0 = __smlad(xe, __sxtb16(y0), s0);
            s0 = __smlad(xo, agilenn_sxtb16_odd(y0), s0);
            s1 = __smlad(xe, __sxtb16(y1), s1);
            s1 = __smlad(xo, agilenn_sxtb16_odd(y1), s1);
            s2 = __smlad(xe, __sxtb16(y2), s2);
            s2 = __smlad(xo, agilenn_sxtb16_odd(y2), s2);
            s3 = __smlad(xe, __sxtb16(y3), s3);
            s3 = __smlad(xo, agilenn_sxtb16_odd(y3), s3);
        }
        for (; k < k_len; k++) {
            s0 += a[k] * w0[k];
            s1 += a[k] * w1[k];
            s2 += a[k] * w2[k];
            s3 += a[k] * w3[k];
        }
        out[c] = agilenn_requantize(s0, q, c);
        out[c + 1] = agilenn_requantize(s1, q, c + 1);
        out[c + 2] = agilenn_requantize(s2, q, c + 2);
        out[c + 3] = agilenn_requantize(s3, q, c + 3);
    }
#endif
    for (c = grouped; c < channels; c++) {
        const int8_t *wc = row;
        int32_t s = bias[c];
        int32_t k;
        row += k_len;
        for (k = 0; k < k_len; k++) {
            s += a[k] * wc[k];
        }
        out[c] = agilenn_requantize(s, q, c);
    }
}

/* Raw pixels (CHW) -> the first layer's uint8 input (HWC) through the normalisation table. */
AGILENN_INLINE void agilenn_input_map(const uint8_t *input, uint8_t *out, const uint8_t *table, int32_t channels,
                                      int32_t pixels)
{
    int32_t c, p;
    for (c = 0; c < channels; c++) {
        for (p = 0; p < pixels; p++) {
            out[p * channels + c] = table[input[c * pixels + p]];
        }
    }
}

/*
 * One im2col patch, [kh][kw][in] like the weights: positions outside the input hold the input's zero point
 * (a real zero), so the folded bias (bias - zero_point x sum of weights) stays exact with padding. With a
 * table, the input is raw CHW pixels mapped through it as they are read (the normalisation, fused).
 */
AGILENN_INLINE void agilenn_im2col(const uint8_t *in, const uint8_t *table, int32_t in_height, int32_t in_width,
                                   int32_t in_channels, int32_t kernel_height, int32_t kernel_width, int32_t top,
                                   int32_t left, uint8_t zero_point, uint8_t *patch)
{
    int32_t ky, kx, c;
    for (ky = 0; ky < kernel_height; ky++) {
        int32_t y = top + ky;
        for (kx = 0; kx < kernel_width; kx++) {
            int32_t x = left + kx;
            uint8_t *dst = patch + (ky * kernel_width + kx) * in_channels;
            if (y < 0 || y >= in_height || x < 0 || x >= in_width) {
                memset(dst, zero_point, (size_t)in_channels);
            } else if (table != 0) {
                for (c = 0; c < in_channels; c++) {
                    dst[c] = table[in[(c * in_height + y) * in_width + x]];
                }
            } else {
                memcpy(dst, in + (y * in_width + x) * in_channels, (size_t)in_channels);
            }
        }
    }
}

/* Bytes of the im2col scratch `agilenn_conv` needs: two patches. */
#define AGILENN_CONV_SCRATCH_BYTES(kh, kw, cin) (2 * (kh) * (kw) * (cin))

/*
 * A convolution with groups = 1 as im2col and matrix products over pairs of output pixels; weights are
 * [out][kh][kw][in] and the bias has the input zero point folded in. A pointwise convolution with stride 1
 * and no table reads its pixels in place (no copy).
 */
AGILENN_INLINE void agilenn_conv(const uint8_t *in, const uint8_t *table, const int8_t *w, const int32_t *bias,
                                 const agilenn_requant_t *q, int32_t in_height, int32_t in_width, int32_t in_channels,
                                 int32_t out_height, int32_t out_width, int32_t out_channels, int32_t kernel_height,
                                 int32_t kernel_width, int32_t stride_height, int32_t stride_width, int32_t pad_top,
                                 int32_t pad_left, uint8_t zero_point, uint8_t *scratch, uint8_t *out)
{
    const int32_t patch = kernel_height * kernel_width * in_channels;
    const int in_place = table == 0 && kernel_height == 1 && kernel_width == 1 && stride_height == 1
                         && stride_width == 1 && pad_top == 0 && pad_left == 0;
    int32_t oy, ox;
    const uint8_t *pending = 0;
    uint8_t *pending_out = 0;
    for (oy = 0; oy < out_height; oy++) {
        for (ox = 0; ox < out_width; ox++) {
            const uint8_t *row;
            uint8_t *dst = out + (oy * out_width + ox) * out_channels;
            if (in_place) {
                row = in + (oy * in_width + ox) * in_channels;
            } else {
                uint8_t *buffer = scratch + (pending != 0 ? patch : 0);
                agilenn_im2col(in, table, in_height, in_width, in_channels, kernel_height, kernel_width,
                               oy * stride_height - pad_top, ox * stride_width - pad_left, zero_point, buffer);
                row = buffer;
            }
            if (pending == 0) {
                pending = row;
                pending_out = dst;
            } else {
                agilenn_mat_mult_2rows(pending, row, w, patch, out_channels, bias, q, pending_out, dst);
                pending = 0;
            }
        }
    }
    if (pending != 0) {
        agilenn_vec_mat_mult(pending, w, patch, out_channels, bias, q, pending_out);
    }
}

/*
 * Depthwise convolution (channel multiplier 1), padding included; weights are [kh][kw][channels]. The
 * accumulators of one pixel's channels live in `acc` (channels int32), so the inner loop runs over
 * contiguous channels of input and weights.
 */
AGILENN_INLINE void agilenn_depthwise_conv(const uint8_t *in, const int8_t *w, const int32_t *bias,
                                           int32_t in_zero_point, const agilenn_requant_t *q, int32_t in_height,
                                           int32_t in_width, int32_t channels, int32_t out_height,
                                           int32_t out_width, int32_t kernel_height, int32_t kernel_width,
                                           int32_t stride_height, int32_t stride_width, int32_t pad_top,
                                           int32_t pad_left, int32_t *acc, uint8_t *out)
{
    int32_t oy, ox, c, ky, kx;
    for (oy = 0; oy < out_height; oy++) {
        for (ox = 0; ox < out_width; ox++) {
            uint8_t *dst = out + (oy * out_width + ox) * channels;
            for (c = 0; c < channels; c++) {
                acc[c] = bias[c];
            }
            for (ky = 0; ky < kernel_height; ky++) {
                int32_t y = oy * stride_height - pad_top + ky;
                if (y < 0 || y >= in_height) {
                    continue;
                }
                for (kx = 0; kx < kernel_width; kx++) {
                    int32_t x = ox * stride_width - pad_left + kx;
                    const uint8_t *src;
                    const int8_t *wk;
                    if (x < 0 || x >= in_width) {
                        continue;
                    }
                    src = in + (y * in_width + x) * channels;
                    wk = w + (ky * kernel_width + kx) * channels;
                    for (c = 0; c < channels; c++) {
                        acc[c] += (src[c] - in_zero_point) * wk[c];
                    }
                }
            }
            for (c = 0; c < channels; c++) {
                dst[c] = agilenn_requantize(acc[c], q, c);
            }
        }
    }
}

/* Channels [start, start + count) of every pixel of an HWC tensor, packed. */
AGILENN_INLINE void agilenn_channel_slice(const uint8_t *in, int32_t channels, int32_t start, int32_t count,
                                          int32_t pixels, uint8_t *out)
{
    int32_t p;
    for (p = 0; p < pixels; p++) {
        memcpy(out + p * count, in + p * channels + start, (size_t)count);
    }
}

#endif /* AGILENN_KERNELS_H */
