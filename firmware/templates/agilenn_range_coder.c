/* agilenn range encoder: see agilenn_range_coder.h. */
#include "agilenn_range_coder.h"

void agilenn_range_encoder_init(agilenn_range_encoder_t *e, uint8_t *out, uint32_t capacity)
{
    e->lower = 0;
    e->range = ~(uint64_t)0;
    e->held = 0;
    e->held_first = 0;
    e->out = out;
    e->length = 0;
    e->capacity = capacity;
    e->overflow = 0;
}

/* Words go out little-endian; a word past the capacity is dropped and marks the stream. */
void agilenn_range_put_word(agilenn_range_encoder_t *e, uint32_t word)
{
    if (e->length + 4 > e->capacity) {
        e->overflow = 1;
        return;
    }
    e->out[e->length] = (uint8_t)word;
    e->out[e->length + 1] = (uint8_t)(word >> 8);
    e->out[e->length + 2] = (uint8_t)(word >> 16);
    e->out[e->length + 3] = (uint8_t)(word >> 24);
    e->length += 4;
}

/* The held words resolve: a carry turns first into first + 1 and the 0xFFFFFFFF words into 0. */
void agilenn_range_flush_held(agilenn_range_encoder_t *e, int carry)
{
    uint32_t filler = carry ? 0u : 0xFFFFFFFFu;
    uint32_t i;
    agilenn_range_put_word(e, e->held_first + (carry ? 1u : 0u));
    for (i = 1; i < e->held; i++) {
        agilenn_range_put_word(e, filler);
    }
    e->held = 0;
}

uint32_t agilenn_range_encoder_finish(agilenn_range_encoder_t *e)
{
    uint64_t point;
    uint32_t word;
    if (e->range == ~(uint64_t)0) {
        return e->overflow ? 0 : e->length; /* no symbol: an empty stream */
    }
    /* The smallest point of the interval whose low word is zero: lower rounded up to 2^32. */
    point = e->lower + 0xFFFFFFFFu;
    if (e->held != 0) {
        agilenn_range_flush_held(e, point < e->lower);
    }
    word = (uint32_t)(point >> 32);
    agilenn_range_put_word(e, word);
    /* If the interval's end shares that word, a zero word pins the point inside the interval. */
    if ((uint32_t)((e->lower + e->range) >> 32) == word) {
        agilenn_range_put_word(e, 0);
    }
    return e->overflow ? 0 : e->length;
}
