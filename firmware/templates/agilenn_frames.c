/* Frames on a byte stream: see agilenn_frames.h. */
#include "agilenn_frames.h"

#include <string.h>

uint16_t agilenn_crc16(uint16_t crc, const uint8_t *data, uint32_t length)
{
    uint32_t i;
    int bit;
    for (i = 0; i < length; i++) {
        crc ^= (uint16_t)((uint16_t)data[i] << 8);
        for (bit = 0; bit < 8; bit++) {
            crc = (uint16_t)((crc & 0x8000u) ? (uint16_t)(crc << 1) ^ 0x1021u : (uint16_t)(crc << 1));
        }
    }
    return crc;
}

void agilenn_frame_decoder_init(agilenn_frame_decoder_t *d, uint8_t *buffer, uint32_t capacity)
{
    d->buffer = buffer;
    d->capacity = capacity;
    d->length = 0;
    d->frames = d->bad_crc = d->oversize = d->truncated = 0;
}

uint32_t agilenn_frame_body_length(const agilenn_frame_decoder_t *d)
{
    return (uint32_t)d->buffer[3] | ((uint32_t)d->buffer[4] << 8);
}

/* Where the held bytes stand: -1 broken (drop), 0 need more, 1 a checked frame. */
static int check_held(agilenn_frame_decoder_t *d)
{
    uint32_t body, crc;
    if (d->length >= 1 && d->buffer[0] != 0xA5u) {
        return -1;
    }
    if (d->length >= 2 && d->buffer[1] != 0x5Au) {
        return -1;
    }
    if (d->length < AGILENN_FRAME_HEADER) {
        return 0;
    }
    body = agilenn_frame_body_length(d);
    if (body + AGILENN_FRAME_OVERHEAD > d->capacity) {
        d->oversize++;
        return -1;
    }
    if (d->length < body + AGILENN_FRAME_OVERHEAD) {
        return 0;
    }
    crc = (uint32_t)d->buffer[AGILENN_FRAME_HEADER + body] | ((uint32_t)d->buffer[AGILENN_FRAME_HEADER + body + 1] << 8);
    if (crc != agilenn_crc16(0xFFFFu, d->buffer + 2, 3 + body)) {
        d->bad_crc++;
        return -1;
    }
    return 1;
}

/* Drop the held frame's first byte and look for the next sync among the bytes still held. */
static int resync(agilenn_frame_decoder_t *d)
{
    for (;;) {
        uint32_t next = 1;
        int state;
        while (next < d->length && d->buffer[next] != 0xA5u) {
            next++;
        }
        memmove(d->buffer, d->buffer + next, d->length - next);
        d->length -= next;
        state = check_held(d);
        if (state >= 0) {
            return state;
        }
        if (d->length == 0) {
            return 0;
        }
    }
}

int agilenn_frame_feed(agilenn_frame_decoder_t *d, uint8_t byte)
{
    int state;
    if (d->length == 0 && byte != 0xA5u) {
        return 0; /* noise between frames */
    }
    d->buffer[d->length++] = byte;
    state = check_held(d);
    if (state < 0) {
        state = resync(d);
    }
    if (state > 0) {
        d->frames++;
    }
    return state > 0;
}

void agilenn_frame_consumed(agilenn_frame_decoder_t *d)
{
    uint32_t used = agilenn_frame_body_length(d) + AGILENN_FRAME_OVERHEAD;
    memmove(d->buffer, d->buffer + used, d->length - used);
    d->length -= used;
}

void agilenn_frame_expire(agilenn_frame_decoder_t *d)
{
    if (d->length == 0) {
        return;
    }
    d->truncated++;
    (void)resync(d);
}

void agilenn_frame_header(uint8_t type, uint32_t body_length, uint8_t header[AGILENN_FRAME_HEADER])
{
    header[0] = 0xA5u;
    header[1] = 0x5Au;
    header[2] = type;
    header[3] = (uint8_t)body_length;
    header[4] = (uint8_t)(body_length >> 8);
}

uint16_t agilenn_frame_crc(const uint8_t header[AGILENN_FRAME_HEADER], const uint8_t *body, uint32_t body_length)
{
    return agilenn_crc16(agilenn_crc16(0xFFFFu, header + 2, 3), body, body_length);
}
