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
 * One output channel: its bias (input zero point folded in where the kernel reads raw inputs) and its
 * requantization. `offset` holds the rounding term and the zero point, 2^(shift-1) + (zero_point << shift),
 * so that one multiply-accumulate and one shift do it all: out = (hi32(acc * M) + offset) >> shift, then
 * clamped to [low, high] (0..255, or narrower for a ReLU6 on a wider scale). One struct per channel keeps
 * the four numbers behind one pointer.
 */
typedef struct {
    int32_t bias;
    int32_t multiplier;
    int32_t offset;
    int32_t shift;
} agilenn_channel_t;

AGILENN_INLINE uint8_t agilenn_requantize(int32_t acc, const agilenn_channel_t *channel, int32_t low, int32_t high)
{
    int32_t value;
#if AGILENN_DSP
    __asm__("smmla %0, %1, %2, %3" : "=r"(value) : "r"(acc), "r"(channel->multiplier), "r"(channel->offset));
    value >>= channel->shift;
    value = (int32_t)__usat(value, 8);
#else
    value = ((int32_t)(((int64_t)acc * channel->multiplier) >> 32) + channel->offset) >> channel->shift;
    value = value < 0 ? 0 : (value > 255 ? 255 : value);
#endif
    if (low > 0 && value < low) {
        value = low;
    }
    if (high < 255 && value > high) {
        value = high;
    }
    return (uint8_t)value;
}

/*
 * Operands of the convolution kernels are "extended": int16 values in the order SXTB16/UXTB16 produce
 * them, each group of four k as (x0, x2, x1, x3), so that one 32-bit word feeds one SMLAD. A row of
 * k_len bytes extends to 4 * ceil(k_len / 4) halfwords; the tail is zero. The generator stores the
 * weights of convolutions extended already (flash holds int16); inputs are extended once per pixel.
 */
AGILENN_INLINE int32_t agilenn_extended_len(int32_t k_len)
{
    return (k_len + 3) / 4 * 4;
}

AGILENN_INLINE void agilenn_extend(const uint8_t *bytes, int32_t k_len, int16_t *out)
{
    int32_t k = 0;
#if AGILENN_DSP
    for (; k + 4 <= k_len; k += 4) {
        uint32_t word = agilenn_read_u32(bytes + k);
        uint32_t even = __uxtb16(word), odd = agilenn_uxtb16_odd(word);
        memcpy(out + k, &even, 4);
        memcpy(out + k + 2, &odd, 4);
    }
#endif
    for (; k < agilenn_extended_len(k_len); k += 4) {
        int32_t i;
        for (i = 0; i < 4; i++) {
            /* position of byte k+i in the group: 0 -> 0, 1 -> 2, 2 -> 1, 3 -> 3 */
            out[k + (i == 1 ? 2 : (i == 2 ? 1 : i))] = (int16_t)(k + i < k_len ? bytes[k + i] : 0);
        }
    }
}

/*
 * Four extended input rows times every extended weight row, two weight rows at a time:
 * out_r[c] = requant(bias_c + a_r . w_c) for four pixels (or im2col patches) at once. Each weight word
 * feeds four SMLADs and each channel's requantization four outputs. The rows a_r lie `length` halfwords
 * apart from `a`; the outputs are four consecutive HWC pixels from `out0`.
 */
AGILENN_INLINE void agilenn_mat_mult_4rows(const int16_t *a, const int16_t *w, int32_t k_len, int32_t channels,
                                           const agilenn_channel_t *ch, int32_t low, int32_t high, uint8_t *out0)
{
    const int32_t length = agilenn_extended_len(k_len);
    uint8_t *out1 = out0 + channels, *out2 = out1 + channels, *out3 = out2 + channels;
    const int16_t *a1 = a + length, *a2 = a1 + length, *a3 = a2 + length;
    const int16_t *row = w; /* weight row c, advanced by steps (no c * length to overflow) */
    const int32_t paired = channels - channels % 2;
    int32_t c;
    for (c = 0; c < paired; c += 2, ch += 2) {
        const int16_t *w0 = row;
        const int16_t *w1 = row + length;
        int32_t s00 = ch[0].bias, s10 = s00, s20 = s00, s30 = s00;
        int32_t s01 = ch[1].bias, s11 = s01, s21 = s01, s31 = s01;
        int32_t k;
        row += 2 * length;
#if AGILENN_DSP
        for (k = 0; k < length; k += 2) {
            uint32_t y0 = agilenn_read_u32(w0 + k), y1 = agilenn_read_u32(w1 + k);
            uint32_t x = agilenn_read_u32(a + k);
            s00 = __smlad(x, y0, s00);
            s01 = __smlad(x, y1, s01);
            x = agilenn_read_u32(a1 + k);
            s10 = __smlad(x, y0, s10);
            s11 = __smlad(x, y1, s11);
            x = agilenn_read_u32(a2 + k);
            s20 = __smlad(x, y0, s20);
            s21 = __smlad(x, y1, s21);
            x = agilenn_read_u32(a3 + k);
            s30 = __smlad(x, y0, s30);
            s31 = __smlad(x, y1, s31);
        }
#else
        for (k = 0; k < length; k++) {
            s00 += a[k] * w0[k];
            s01 += a[k] * w1[k];
            s10 += a1[k] * w0[k];
            s11 += a1[k] * w1[k];
            s20 += a2[k] * w0[k];
            s21 += a2[k] * w1[k];
            s30 += a3[k] * w0[k];
            s31 += a3[k] * w1[k];
        }
#endif
        out0[c] = agilenn_requantize(s00, &ch[0], low, high);
        out1[c] = agilenn_requantize(s10, &ch[0], low, high);
        out2[c] = agilenn_requantize(s20, &ch[0], low, high);
        out3[c] = agilenn_requantize(s30, &ch[0], low, high);
        out0[c + 1] = agilenn_requantize(s01, &ch[1], low, high);
        out1[c + 1] = agilenn_requantize(s11, &ch[1], low, high);
        out2[c + 1] = agilenn_requantize(s21, &ch[1], low, high);
        out3[c + 1] = agilenn_requantize(s31, &ch[1], low, high);
    }
    for (c = paired; c < channels; c++, ch++) {
        int32_t s0 = ch->bias, s1 = ch->bias, s2 = ch->bias, s3 = ch->bias;
        int32_t k;
        for (k = 0; k < length; k++) {
            s0 += a[k] * row[k];
            s1 += a1[k] * row[k];
            s2 += a2[k] * row[k];
            s3 += a3[k] * row[k];
        }
        out0[c] = agilenn_requantize(s0, ch, low, high);
        out1[c] = agilenn_requantize(s1, ch, low, high);
        out2[c] = agilenn_requantize(s2, ch, low, high);
        out3[c] = agilenn_requantize(s3, ch, low, high);
        row += length;
    }
}

/*
 * One extended input row times every extended weight row (a dense layer), four weight rows at a time so
 * that each input word feeds four SMLADs. The input is extended once, into `extended`.
 */
AGILENN_INLINE void agilenn_dense(const uint8_t *in, const int16_t *w, int32_t k_len, int32_t channels,
                                  const agilenn_channel_t *ch, int32_t low, int32_t high, int16_t *extended,
                                  uint8_t *out)
{
    const int32_t length = agilenn_extended_len(k_len);
    const int16_t *row = w; /* weight row c, advanced by steps (no c * length to overflow) */
    const int32_t grouped = channels - channels % 4;
    int32_t c;
    agilenn_extend(in, k_len, extended);
    for (c = 0; c < grouped; c += 4, ch += 4) {
        const int16_t *w0 = row, *w1 = row + length, *w2 = w1 + length, *w3 = w2 + length;
        int32_t s0 = ch[0].bias, s1 = ch[1].bias, s2 = ch[2].bias, s3 = ch[3].bias;
        int32_t k;
        row += 4 * length;
#if AGILENN_DSP
        for (k = 0; k < length; k += 4) {
            uint32_t x = agilenn_read_u32(extended + k), z = agilenn_read_u32(extended + k + 2);
            s0 = __smlad(x, agilenn_read_u32(w0 + k), s0);
            s1 = __smlad(x, agilenn_read_u32(w1 + k), s1);
            s2 = __smlad(x, agilenn_read_u32(w2 + k), s2);
            s3 = __smlad(x, agilenn_read_u32(w3 + k), s3);
            s0 = __smlad(z, agilenn_read_u32(w0 + k + 2), s0);
            s1 = __smlad(z, agilenn_read_u32(w1 + k + 2), s1);
            s2 = __smlad(z, agilenn_read_u32(w2 + k + 2), s2);
            s3 = __smlad(z, agilenn_read_u32(w3 + k + 2), s3);
        }
#else
        for (k = 0; k < length; k++) {
            s0 += extended[k] * w0[k];
            s1 += extended[k] * w1[k];
            s2 += extended[k] * w2[k];
            s3 += extended[k] * w3[k];
        }
#endif
        out[c] = agilenn_requantize(s0, &ch[0], low, high);
        out[c + 1] = agilenn_requantize(s1, &ch[1], low, high);
        out[c + 2] = agilenn_requantize(s2, &ch[2], low, high);
        out[c + 3] = agilenn_requantize(s3, &ch[3], low, high);
    }
    for (c = grouped; c < channels; c++, ch++) {
        int32_t s = ch->bias;
        int32_t k;
        for (k = 0; k < length; k++) {
            s += extended[k] * row[k];
        }
        out[c] = agilenn_requantize(s, ch, low, high);
        row += length;
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

/* Bytes of scratch `agilenn_conv` needs: a byte patch, four extended rows, four pixels of output. */
#define AGILENN_CONV_SCRATCH_BYTES(patch, out_channels) (9 * (((patch) + 3) / 4 * 4) + 4 * (out_channels))

/*
 * A convolution with groups = 1 as matrix products over four consecutive output pixels at a time; weights
 * are extended rows of [kh][kw][in] and the bias has the input zero point folded in. A patch that lies
 * inside the input is extended straight from its rows when they split into whole words (a pointwise
 * convolution, or kw x in a multiple of 4); others go through an im2col copy, which reads padding as the
 * zero point and, with a table, maps raw CHW pixels through it (the normalisation, fused).
 */
AGILENN_INLINE void agilenn_conv(const uint8_t *in, const uint8_t *table, const int16_t *w,
                                 const agilenn_channel_t *ch, int32_t low, int32_t high, int32_t in_height,
                                 int32_t in_width, int32_t in_channels, int32_t out_height, int32_t out_width,
                                 int32_t out_channels, int32_t kernel_height, int32_t kernel_width,
                                 int32_t stride_height, int32_t stride_width, int32_t pad_top, int32_t pad_left,
                                 uint8_t zero_point, uint8_t *scratch, uint8_t *out)
{
    const int32_t patch = kernel_height * kernel_width * in_channels;
    const int32_t length = agilenn_extended_len(patch);
    const int32_t row_bytes = kernel_width * in_channels;
    const int direct = table == 0 && (kernel_height == 1 || row_bytes % 4 == 0);
    const int32_t pixels = out_height * out_width;
    int16_t *extended = (int16_t *)(void *)(scratch + length); /* four rows of `length` halfwords */
    uint8_t *spare = scratch + 9 * length;                      /* four pixels of output */
    int32_t p, first = 0, filled = 0;
    for (p = 0; p < pixels; p++) {
        const int32_t y = (p / out_width) * stride_height - pad_top, x = (p % out_width) * stride_width - pad_left;
        int16_t *row = extended + filled * length;
        if (direct && y >= 0 && x >= 0 && y + kernel_height <= in_height && x + kernel_width <= in_width) {
            int32_t ky;
            for (ky = 0; ky < kernel_height; ky++) {
                agilenn_extend(in + ((y + ky) * in_width + x) * in_channels, row_bytes, row + ky * row_bytes);
            }
        } else {
            agilenn_im2col(in, table, in_height, in_width, in_channels, kernel_height, kernel_width, y, x,
                           zero_point, scratch);
            agilenn_extend(scratch, patch, row);
        }
        if (++filled == 4) {
            agilenn_mat_mult_4rows(extended, w, patch, out_channels, ch, low, high, out + first * out_channels);
            first = p + 1;
            filled = 0;
        }
    }
    if (filled != 0) { /* the last pixels, with repeats of the last one, through the spare output */
        int32_t r;
        for (r = filled; r < 4; r++) {
            memcpy(extended + r * length, extended + (filled - 1) * length, (size_t)length * sizeof(int16_t));
        }
        agilenn_mat_mult_4rows(extended, w, patch, out_channels, ch, low, high, spare);
        memcpy(out + first * out_channels, spare, (size_t)(filled * out_channels));
    }
}

/*
 * Depthwise convolution (channel multiplier 1), padding included; weights are [kh][kw][channels]. The
 * accumulators of one pixel's channels live in `acc` (channels int32), so the inner loop runs over
 * contiguous channels of input and weights.
 */
AGILENN_INLINE void agilenn_depthwise_conv(const uint8_t *in, const int8_t *w, const agilenn_channel_t *ch,
                                           int32_t low, int32_t high, int32_t in_zero_point, int32_t in_height,
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
                acc[c] = ch[c].bias;
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
                dst[c] = agilenn_requantize(acc[c], &ch[c], low, high);
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
