/*
 * ARM semihosting (bkpt 0xAB) for the harness: files on the host that runs QEMU, and the exit status.
 * QEMU needs -semihosting-config enable=on; without it a semihosting call is a HardFault.
 */
#ifndef SEMIHOSTING_M7_H
#define SEMIHOSTING_M7_H

#include <stdint.h>

#define SEMIHOSTING_OPEN 0x01
#define SEMIHOSTING_CLOSE 0x02
#define SEMIHOSTING_WRITE0 0x04
#define SEMIHOSTING_WRITE 0x05
#define SEMIHOSTING_READ 0x06
#define SEMIHOSTING_EXIT 0x18
#define SEMIHOSTING_EXIT_EXTENDED 0x20
#define SEMIHOSTING_APPLICATION_EXIT 0x20026u
#define SEMIHOSTING_MODE_READ_BINARY 1
#define SEMIHOSTING_MODE_WRITE_BINARY 5

static inline int32_t semihosting_call(int32_t operation, const void *argument)
{
    register int32_t r0 __asm__("r0") = operation;
    register const void *r1 __asm__("r1") = argument;
    __asm__ __volatile__("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static inline int32_t semihosting_open(const char *path, uint32_t length, int32_t mode)
{
    uint32_t block[3];
    block[0] = (uint32_t)(uintptr_t)path;
    block[1] = (uint32_t)mode;
    block[2] = length;
    return semihosting_call(SEMIHOSTING_OPEN, block);
}

/* Bytes moved; READ and WRITE answer with the count *not* moved. */
static inline uint32_t semihosting_transfer(int32_t operation, int32_t handle, const void *buffer, uint32_t length)
{
    uint32_t block[3];
    int32_t left;
    block[0] = (uint32_t)handle;
    block[1] = (uint32_t)(uintptr_t)buffer;
    block[2] = length;
    left = semihosting_call(operation, block);
    return left < 0 || (uint32_t)left > length ? 0 : length - (uint32_t)left;
}

static inline void semihosting_close(int32_t handle)
{
    uint32_t block[1];
    block[0] = (uint32_t)handle;
    semihosting_call(SEMIHOSTING_CLOSE, block);
}

static inline void semihosting_print(const char *text)
{
    semihosting_call(SEMIHOSTING_WRITE0, text);
}

static inline void semihosting_print_hex(uint32_t value)
{
    char digits[9];
    int i;
    for (i = 7; i >= 0; i--, value >>= 4) {
        digits[i] = "0123456789abcdef"[value & 15u];
    }
    digits[8] = 0;
    semihosting_print(digits);
}

/* EXIT_EXTENDED carries the status to QEMU's exit code; plain EXIT (0 or 1 only) is the fallback. */
__attribute__((noreturn)) static inline void semihosting_exit(int status)
{
    uint32_t block[2];
    block[0] = SEMIHOSTING_APPLICATION_EXIT;
    block[1] = (uint32_t)status;
    semihosting_call(SEMIHOSTING_EXIT_EXTENDED, block);
    semihosting_call(SEMIHOSTING_EXIT, (const void *)(uintptr_t)SEMIHOSTING_APPLICATION_EXIT);
    for (;;) {
    }
}

#endif /* SEMIHOSTING_M7_H */
