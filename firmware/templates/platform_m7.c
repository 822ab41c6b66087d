/*
 * The harness's platform on the emulated Cortex-M7: inputs.bin and records.bin through semihosting, and
 * exact instruction counts from QEMU's virtual clock (icount_m7.S; QEMU runs with -icount shift=0,sleep=off).
 */
#include "agilenn_platform.h"
#include "semihosting_m7.h"

/* icount_m7.S: virtual time at the stamp's entry (low word) and exit (high word), one instruction a tick. */
uint64_t icount_stamp(void);
uint32_t stack_peak_bytes(void);

static int32_t input_handle = -1, output_handle = -1;
static uint32_t last_exit;

/* Instructions between the previous call's return and this call, the stamps themselves left out. */
uint32_t platform_instructions(void)
{
    uint64_t stamp = icount_stamp();
    uint32_t entry = (uint32_t)stamp, exit = (uint32_t)(stamp >> 32);
    uint32_t count = entry - last_exit;
    last_exit = exit;
    return count;
}

int platform_open(void)
{
    static const char inputs[] = "inputs.bin", records[] = "records.bin";
    input_handle = semihosting_open(inputs, sizeof inputs - 1, SEMIHOSTING_MODE_READ_BINARY);
    output_handle = semihosting_open(records, sizeof records - 1, SEMIHOSTING_MODE_WRITE_BINARY);
    return input_handle < 0 || output_handle < 0 ? -1 : 0;
}

uint32_t platform_read(uint8_t *buffer, uint32_t length)
{
    return semihosting_transfer(SEMIHOSTING_READ, input_handle, buffer, length);
}

void platform_write(const uint8_t *buffer, uint32_t length)
{
    (void)semihosting_transfer(SEMIHOSTING_WRITE, output_handle, buffer, length);
}

void platform_close(void)
{
    semihosting_close(input_handle);
    semihosting_close(output_handle);
}

uint32_t platform_stack_peak(void)
{
    return stack_peak_bytes();
}

int platform_exit(int status)
{
    return status;
}
