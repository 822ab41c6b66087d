/*
 * Frames on a byte stream: A5 5A | type (1) | body length (2, LE) | body | CRC-16 (2, LE), the CRC
 * (CCITT-FALSE, from 0xFFFF) over type, length and body. docs/serial.md describes the types and bodies;
 * agilenn/serial_frames.py is the same protocol in Python.
 *
 * The decoder takes one byte at a time into a caller's buffer. A bad CRC, a length over the buffer, or an
 * unfinished frame the caller expires (the line went quiet) is dropped and counted, and the search for a
 * sync starts again one byte after the dropped frame's own, over the bytes already held.
 */
#ifndef AGILENN_FRAMES_H
#define AGILENN_FRAMES_H

#include <stdint.h>

#define AGILENN_FRAME_HEADER 5u
#define AGILENN_FRAME_OVERHEAD 7u /* header and CRC */

enum {
    AGILENN_FRAME_INPUT = 1,
    AGILENN_FRAME_PAYLOAD = 2,
    AGILENN_FRAME_LOGITS = 3,
    AGILENN_FRAME_RESULT = 4
};

typedef struct {
    uint8_t *buffer;     /* holds a whole frame: header, body, CRC */
    uint32_t capacity;   /* bytes of buffer; a longer frame is dropped as oversize */
    uint32_t length;     /* bytes held */
    uint32_t frames, bad_crc, oversize, truncated;
} agilenn_frame_decoder_t;

uint16_t agilenn_crc16(uint16_t crc, const uint8_t *data, uint32_t length);

void agilenn_frame_decoder_init(agilenn_frame_decoder_t *d, uint8_t *buffer, uint32_t capacity);

/* One byte in; 1 when a checked frame is complete: its type is buffer[2], its body starts at
   buffer + AGILENN_FRAME_HEADER and is agilenn_frame_body_length() bytes. Call agilenn_frame_consumed()
   once it has been used. */
int agilenn_frame_feed(agilenn_frame_decoder_t *d, uint8_t byte);
uint32_t agilenn_frame_body_length(const agilenn_frame_decoder_t *d);
void agilenn_frame_consumed(agilenn_frame_decoder_t *d);

/* The line went quiet with a frame unfinished: drop it and rescan what followed its sync. */
void agilenn_frame_expire(agilenn_frame_decoder_t *d);

/* The 5 header bytes and the CRC of a frame whose body is `body`; the caller sends header, body, crc. */
void agilenn_frame_header(uint8_t type, uint32_t body_length, uint8_t header[AGILENN_FRAME_HEADER]);
uint16_t agilenn_frame_crc(const uint8_t header[AGILENN_FRAME_HEADER], const uint8_t *body, uint32_t body_length);

#endif /* AGILENN_FRAMES_H */
