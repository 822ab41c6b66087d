/* The harness's platform on the host: stdin and stdout, no instruction counter. */
#include <stdio.h>

#include "agilenn_platform.h"

int platform_open(void)
{
    return 0;
}

uint32_t platform_read(uint8_t *buffer, uint32_t length)
{
    return (uint32_t)fread(buffer, 1, length, stdin);
}

void platform_write(const uint8_t *buffer, uint32_t length)
{
    fwrite(buffer, 1, length, stdout);
}

void platform_close(void)
{
    fflush(stdout);
}

uint32_t platform_instructions(void)
{
    return 0;
}

uint32_t platform_stack_peak(void)
{
    return 0;
}

int platform_exit(int status)
{
    return status;
}
