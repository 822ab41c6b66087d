/*
 * agilenn range encoder: the payload codec range-v1, integer only.
 *
 * It writes the very bytes of agilenn's range-v1 codec (constriction's queue range coder: 32-bit
 * words, 64-bit state, 24-bit probabilities), given each channel's cumulative table, which the
 * generator computes from the bundle's float tables exactly as the coder quantizes them
 * (agilenn/range_int.py documents the algorithm).
 */
#ifndef AGILENN_RANGE_CODER_H
#define AGILENN_RANGE_CODER_H

#include <stdint.h>

#define AGILENN_RANGE_PRECISION 24

typedef struct {
    uint64_t lower;
    uint64_t range;
    uint32_t held;       /* words held back while a carry may still reach them */
    uint32_t held_first; /* the first held word; the others are all 0xFFFFFFFF */
    uint8_t *out;
    uint32_t length;
    uint32_t capacity;
    int overflow;
} agilenn_range_encoder_t;

void agilenn_range_encoder_init(agilenn_range_encoder_t *e, uint8_t *out, uint32_t capacity);

/* One symbol of cumulative probability `cumulative` and probability `probability` (units of 2^-24). */
static inline void agilenn_range_encode(agilenn_range_encoder_t *e, uint32_t cumulative, uint32_t probability);

/* Seals the stream; returns the payload's length in bytes, or 0 if it did not fit `capacity`. */
uint32_t agilenn_range_encoder_finish(agilenn_range_encoder_t *e);

void agilenn_range_put_word(agilenn_range_encoder_t *e, uint32_t word);
void agilenn_range_flush_held(agilenn_range_encoder_t *e, int carry);

static inline void agilenn_range_encode(agilenn_range_encoder_t *e, uint32_t cumulative, uint32_t probability)
{
    uint64_t step = e->range >> AGILENN_RANGE_PRECISION;
    uint64_t new_lower = e->lower + step * cumulative;
    e->range = step * probability;
    if (e->held != 0 && new_lower + e->range > new_lower) {
        agilenn_range_flush_held(e, new_lower < e->lower);
    }
    e->lower = new_lower;
    if (e->range < ((uint64_t)1 << 32)) {
        uint32_t top = (uint32_t)(e->lower >> 32);
        e->range <<= 32;
        e->lower <<= 32;
        if (e->held != 0) {
            e->held++;
        } else if (e->lower + e->range > e->lower) {
            agilenn_range_put_word(e, top);
        } else {
            e->held = 1;
            e->held_first = top;
        }
    }
}

/*
 * The payload of channels [start, start + count) of an HWC feature tensor: each uint8 feature becomes its
 * nearest-centroid index through `table`, coded in channel-major order (the order of range-v1) with the
 * channel's cumulative table (levels + 1 entries per channel).
 */
static inline void agilenn_quantize_encode(const uint8_t *features, int32_t channels, int32_t start, int32_t count,
                                           int32_t pixels, const uint8_t *table, const uint32_t *cumulative,
                                           int32_t levels, agilenn_range_encoder_t *e)
{
    int32_t c, p;
    for (c = 0; c < count; c++) {
        const uint32_t *cdf = cumulative + c * (levels + 1);
        const uint8_t *src = features + start + c;
        for (p = 0; p < pixels; p++) {
            uint32_t symbol = table[src[p * channels]];
            agilenn_range_encode(e, cdf[symbol], cdf[symbol + 1] - cdf[symbol]);
        }
    }
}

#endif /* AGILENN_RANGE_CODER_H */
