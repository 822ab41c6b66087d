/*
 * agilenn offload app: the microcontroller's main loop (agilenn firmware generate --app offload).
 *
 * For each INPUT frame from the feeder (UART0, in place of a camera): run the front, send the payload in a
 * PAYLOAD frame on the radio line (UART1) to the gateway, wait for its LOGITS frame until the deadline
 * counted by the board's own timer, mix alpha * local + (1 - alpha) * remote, and answer with a RESULT
 * frame: `mixed`, or `local_fallback` with the reason (deadline, the cloud's error, an answer it could
 * not use). The gateway never answers for the board: without an answer the deadline decides. Bad frames
 * on either line are dropped and counted; the loop never blocks past a deadline.
 */
#include <string.h>

#include "agilenn_app_config.h"
#include "agilenn_frames.h"
#include "agilenn_front.h"
#include "board_mps2.h"

#define INPUT_BODY (4u + AGILENN_INPUT_BYTES)
#define PAYLOAD_HEAD (4u + 32u)
#define MESSAGE_MAX 160u
#define LOGITS_MAX_BODY (6u + 4u + 4u * AGILENN_CLASSES + MESSAGE_MAX)
#define GAP_MS 20u /* a frame unfinished this long after its last byte is dropped */

enum { SOURCE_MIXED = 0, SOURCE_LOCAL_FALLBACK = 1 };
enum { REASON_NONE = 0, REASON_DEADLINE = 1, REASON_CLOUD = 2, REASON_BAD_ANSWER = 3 };

static uint8_t feeder_buffer[INPUT_BODY + AGILENN_FRAME_OVERHEAD];
static uint8_t radio_buffer[LOGITS_MAX_BODY + AGILENN_FRAME_OVERHEAD];
static uint8_t payload_body[PAYLOAD_HEAD + AGILENN_PAYLOAD_CAPACITY];
static uint8_t result_body[28u + MESSAGE_MAX];
static agilenn_frame_decoder_t feeder, radio;

typedef struct {
    uint8_t source, reason, status;
    uint32_t message_length;
    const uint8_t *message;
    float remote[AGILENN_CLASSES];
} answer_t;

static void put_u32(uint8_t *at, uint32_t value)
{
    at[0] = (uint8_t)value;
    at[1] = (uint8_t)(value >> 8);
    at[2] = (uint8_t)(value >> 16);
    at[3] = (uint8_t)(value >> 24);
}

static uint32_t get_u32(const uint8_t *at)
{
    return (uint32_t)at[0] | ((uint32_t)at[1] << 8) | ((uint32_t)at[2] << 16) | ((uint32_t)at[3] << 24);
}

static void send_frame(uint32_t uart, uint8_t type, const uint8_t *body, uint32_t length)
{
    uint8_t header[AGILENN_FRAME_HEADER], crc[2];
    uint16_t value;
    agilenn_frame_header(type, length, header);
    value = agilenn_frame_crc(header, body, length);
    crc[0] = (uint8_t)value;
    crc[1] = (uint8_t)(value >> 8);
    board_uart_write(uart, header, sizeof header);
    board_uart_write(uart, body, length);
    board_uart_write(uart, crc, sizeof crc);
}

/* Feed what the line holds; 1 when a frame is complete. A frame left unfinished for GAP_MS is dropped. */
static int poll_line(uint32_t uart, agilenn_frame_decoder_t *d, uint32_t *last_byte_ms)
{
    uint8_t byte;
    while (board_uart_get(uart, &byte)) {
        *last_byte_ms = board_millis();
        if (agilenn_frame_feed(d, byte)) {
            return 1;
        }
    }
    if (d->length != 0 && (uint32_t)(board_millis() - *last_byte_ms) > GAP_MS) {
        agilenn_frame_expire(d);
    }
    return 0;
}

/* The next INPUT frame of the right size; others are dropped (and counted as frames). */
static const uint8_t *next_input(uint32_t *index)
{
    static uint32_t last_byte_ms;
    for (;;) {
        if (!poll_line(BOARD_FEEDER, &feeder, &last_byte_ms)) {
            continue;
        }
        if (feeder.buffer[2] == AGILENN_FRAME_INPUT && agilenn_frame_body_length(&feeder) == INPUT_BODY) {
            *index = get_u32(feeder.buffer + AGILENN_FRAME_HEADER);
            return feeder.buffer + AGILENN_FRAME_HEADER + 4u;
        }
        agilenn_frame_consumed(&feeder);
    }
}

/* A LOGITS body for `request`: 1 when it settles the answer, 0 for another request's (a late answer). */
static int read_logits(const uint8_t *body, uint32_t length, uint32_t request, answer_t *answer)
{
    uint32_t i;
    if (length < 5u || get_u32(body) != request) {
        return 0;
    }
    answer->status = body[4];
    if (body[4] != 0u) {
        answer->source = SOURCE_LOCAL_FALLBACK;
        answer->reason = REASON_CLOUD;
        answer->message = body + 5;
        answer->message_length = length - 5u < MESSAGE_MAX ? length - 5u : MESSAGE_MAX;
        return 1;
    }
    answer->source = SOURCE_LOCAL_FALLBACK;
    answer->reason = REASON_BAD_ANSWER;
    if (length == 6u + 4u * AGILENN_CLASSES && body[5] == 0u) { /* float32 logits */
        memcpy(answer->remote, body + 6, 4u * AGILENN_CLASSES);
    } else if (length == 6u + 4u + AGILENN_CLASSES && body[5] == 1u) { /* scale, then int8 logits */
        float scale;
        memcpy(&scale, body + 6, 4);
        for (i = 0; i < AGILENN_CLASSES; i++) {
            answer->remote[i] = (float)(int8_t)body[10u + i] * scale;
        }
    } else {
        return 1;
    }
    answer->source = SOURCE_MIXED;
    answer->reason = REASON_NONE;
    return 1;
}

/* Wait for the answer to `request` until the deadline; the result says what came. */
static void await_answer(uint32_t request, answer_t *answer)
{
    static uint32_t last_byte_ms;
    uint32_t start = board_millis();
    answer->source = SOURCE_LOCAL_FALLBACK;
    answer->reason = REASON_DEADLINE;
    answer->status = 0;
    answer->message_length = 0;
    while ((uint32_t)(board_millis() - start) < AGILENN_APP_DEADLINE_MS) {
        if (!poll_line(BOARD_RADIO, &radio, &last_byte_ms)) {
            continue;
        }
        if (radio.buffer[2] == AGILENN_FRAME_LOGITS
            && read_logits(radio.buffer + AGILENN_FRAME_HEADER, agilenn_frame_body_length(&radio), request, answer)) {
            if (answer->message_length != 0u) { /* the message lives in the frame: keep it past consumed() */
                memcpy(result_body + 28u, answer->message, answer->message_length);
                answer->message = result_body + 28u;
            }
            agilenn_frame_consumed(&radio);
            return;
        }
        agilenn_frame_consumed(&radio);
    }
}

static uint8_t argmax_u8(const uint8_t *values)
{
    uint32_t i, best = 0;
    for (i = 1; i < AGILENN_CLASSES; i++) {
        if (values[i] > values[best]) {
            best = i;
        }
    }
    return (uint8_t)best;
}

/* The mix of the Python device agent, in float32: alpha * local + (1 - alpha) * remote. */
static uint8_t mixed_label(const uint8_t *local, const float *remote)
{
    uint32_t i, best = 0;
    float best_value = 0.0f;
    for (i = 0; i < AGILENN_CLASSES; i++) {
        float dequantized = (float)((int32_t)local[i] - AGILENN_LOGITS_ZERO_POINT) * AGILENN_APP_LOGITS_SCALE;
        float value = AGILENN_APP_ALPHA_LOCAL * dequantized + AGILENN_APP_ALPHA_REMOTE * remote[i];
        if (i == 0u || value > best_value) {
            best = i;
            best_value = value;
        }
    }
    return (uint8_t)best;
}

int main(void)
{
    static uint8_t logits[AGILENN_CLASSES];
    uint32_t request = 0;
    board_init();
    agilenn_frame_decoder_init(&feeder, feeder_buffer, sizeof feeder_buffer);
    agilenn_frame_decoder_init(&radio, radio_buffer, sizeof radio_buffer);
    memcpy(payload_body + 4, agilenn_app_bundle_digest, 32);
    for (;;) {
        uint32_t index, length, instructions, sent_us;
        answer_t answer;
        const uint8_t *image = next_input(&index);
        uint8_t local_label, label;
        (void)board_instructions();
        agilenn_front_run(image, payload_body + PAYLOAD_HEAD, &length, logits);
        instructions = board_instructions();
        local_label = argmax_u8(logits);
        put_u32(payload_body, ++request);
        sent_us = board_micros();
        send_frame(BOARD_RADIO, AGILENN_FRAME_PAYLOAD, payload_body, PAYLOAD_HEAD + length);
        await_answer(request, &answer);
        label = answer.source == SOURCE_MIXED ? mixed_label(logits, answer.remote) : local_label;

        put_u32(result_body, index);
        result_body[4] = label;
        result_body[5] = local_label;
        result_body[6] = answer.source;
        result_body[7] = answer.reason;
        put_u32(result_body + 8, instructions);
        put_u32(result_body + 12, board_micros() - sent_us);
        /* what each line dropped so far: bad CRC, oversize, truncated (feeder), then the same (radio) */
        result_body[16] = (uint8_t)feeder.bad_crc;
        result_body[17] = (uint8_t)feeder.oversize;
        result_body[18] = (uint8_t)feeder.truncated;
        result_body[19] = (uint8_t)radio.bad_crc;
        result_body[20] = (uint8_t)radio.oversize;
        result_body[21] = (uint8_t)radio.truncated;
        result_body[22] = answer.status;
        result_body[23] = 0;
        put_u32(result_body + 24, length);
        send_frame(BOARD_FEEDER, AGILENN_FRAME_RESULT, result_body, 28u + answer.message_length);
        agilenn_frame_consumed(&feeder);
    }
}
