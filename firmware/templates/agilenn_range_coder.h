/*
 * agilenn range encoder: the payload codecs range-v1 and range-v2, integer only.
 *
 * It writes the very bytes of agilenn's range codecs (constriction's queue range coder: 32-bit
 * words, 64-bit state, 24-bit probabilities), given the cumulative tables, which the
 * generator computes from the bundle's float tables exactly as the coder quantizes them
 * (agilenn/range_int.py documents the algorithm).
 */
#ifndef AGILENN_RANGE_CODER_H
#define AGILENN_RANGE_CODER_H

#include <stdint.h>

#define AGILENN_RANGE_PRECISION 24

/* Branch hints: the first symbol of a table (the likeliest, in a trained quantizer) is the common case. */
#if defined(__GNUC__)
#define AGILENN_RARELY(condition) __builtin_expect(!!(condition), 0)
#else
#define AGILENN_RARELY(condition) (condition)
#endif

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

/* Seals the stream; returns the payload's length in bytes, or 0 if it did not fit `capacity`. */
uint32_t agilenn_range_encoder_finish(agilenn_range_encoder_t *e);

/* The rare paths, out of line: a finished word, and held words that a later symbol resolves. */
void agilenn_range_put_word(agilenn_range_encoder_t *e, uint32_t word);
void agilenn_range_flush_held(agilenn_range_encoder_t *e, int carry);

/*
 * The payload of channels [start, start + count) of an HWC feature tensor: each uint8 feature becomes its
 * nearest-centroid index through `table`, coded in channel-major order (the order of both codecs) with
 * its tables: `below` (cumulative probability below each symbol) and `probability`, `levels` entries a
 * table, units of 2^-24; one table per channel (range-v1, `per_position` 0) or one per channel and pixel
 * in coding order (range-v2, `per_position` 1). The coder's state stays in registers; words leave through
 * the out-of-line paths, which are rare (one word per 32 bits of payload).
 */
static inline void agilenn_quantize_encode(const uint8_t *features, int32_t channels, int32_t start, int32_t count,
                                           int32_t pixels, const uint8_t *table, const uint32_t *below,
                                           const uint32_t *probability, int32_t levels, int32_t per_position,
                                           agilenn_range_encoder_t *e)
{
    uint64_t lower = e->lower, range = e->range;
    uint32_t held = e->held;
    /* the tables move on after every symbol (range-v2) or after every channel (range-v1) */
    const int32_t symbol_step = per_position ? levels : 0;
    const int32_t channel_step = per_position ? 0 : levels;
    int32_t c;
    for (c = 0; c < count; c++, below += channel_step, probability += channel_step) {
        const uint8_t *src = features + start + c;
        const uint8_t *end = src + pixels * channels;
        for (; src != end; src += channels, below += symbol_step, probability += symbol_step) {
            uint32_t symbol = table[*src];
            uint32_t cumulative = below[symbol];
            uint64_t step = range >> AGILENN_RANGE_PRECISION;
            uint64_t new_lower = lower;
            range = step * probability[symbol];
            if (AGILENN_RARELY(cumulative != 0)) {
                new_lower += step * cumulative;
            }
            if (AGILENN_RARELY(held != 0) && new_lower + range > new_lower) {
                e->held = held;
                agilenn_range_flush_held(e, new_lower < lower);
                held = 0;
            }
            lower = new_lower;
            if (AGILENN_RARELY((uint32_t)(range >> 32) == 0)) {
                uint32_t top = (uint32_t)(lower >> 32);
                range <<= 32;
                lower <<= 32;
                if (held != 0) {
                    held++;
                } else if (lower + range > lower) {
                    agilenn_range_put_word(e, top);
                } else {
                    held = 1;
                    e->held_first = top;
                }
            }
        }
    }
    e->lower = lower;
    e->range = range;
    e->held = held;
}

#endif /* AGILENN_RANGE_CODER_H */
