/*
 * agilenn test harness: runs the generated front over a stream of inputs and writes one record per input.
 *
 * Input stream:  raw images, AGILENN_INPUT_BYTES each, back to back.
 * Output record: uint32 payload length, AGILENN_CLASSES uint8 logits, the payload, then, when the
 *                platform counts instructions, uint32 instructions of each of the AGILENN_LAYERS steps.
 * After the last record: uint32 bytes of stack used at the peak (0 where the platform does not paint it).
 * All integers little-endian. The platform (agilenn_platform.h) provides the byte streams and the counter.
 */
#include "agilenn_front.h"
#include "agilenn_platform.h"

static uint8_t image[AGILENN_INPUT_BYTES];
static uint8_t payload[AGILENN_PAYLOAD_CAPACITY];
static uint8_t logits[AGILENN_CLASSES];
static uint32_t layer_instructions[AGILENN_LAYERS];
static uint32_t hook_overhead;

/* Called by the front after each step: the step's instructions, less what this hook itself costs. */
void agilenn_harness_layer_done(uint32_t index)
{
    layer_instructions[index] = platform_instructions() - hook_overhead;
}

static void put_u32(uint32_t value)
{
    uint8_t bytes[4];
    bytes[0] = (uint8_t)value;
    bytes[1] = (uint8_t)(value >> 8);
    bytes[2] = (uint8_t)(value >> 16);
    bytes[3] = (uint8_t)(value >> 24);
    platform_write(bytes, 4);
}

int main(void)
{
    uint32_t length, i;
    int status = 0;
    if (platform_open() != 0) {
        return platform_exit(2);
    }
    /* Two hooks back to back: an empty step, which is the counting's own cost. */
    (void)platform_instructions();
    agilenn_harness_layer_done(0);
    agilenn_harness_layer_done(0);
    hook_overhead = layer_instructions[0];
    while (platform_read(image, AGILENN_INPUT_BYTES) == AGILENN_INPUT_BYTES) {
        (void)platform_instructions();
        if (agilenn_front_run(image, payload, &length, logits) != AGILENN_OK) {
            status = 1;
        }
        put_u32(length);
        platform_write(logits, AGILENN_CLASSES);
        platform_write(payload, length);
        if (PLATFORM_COUNTS_INSTRUCTIONS) {
            for (i = 0; i < AGILENN_LAYERS; i++) {
                put_u32(layer_instructions[i]);
            }
        }
    }
    put_u32(platform_stack_peak());
    platform_close();
    return platform_exit(status);
}
