/*
 * Reset and faults for the Cortex-M7 harness on QEMU's mps2-an500: paint the stack, copy .data, zero
 * .bss, run main, exit through semihosting with main's status. A fault reports its registers and exits
 * with 131, so a broken build never hangs a test.
 */
#include <stdint.h>

#include "semihosting_m7.h"

extern uint32_t __data_start[], __data_end[], __data_load[], __bss_start[], __bss_end[];
extern uint32_t __stack_limit[], __stack_top[];
int main(void);
void Reset_Handler(void);
void HardFault_Handler(void);
void Default_Handler(void);
/* A board file may count time here; without one, a SysTick interrupt is unexpected. */
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));

/* A vector holds the initial stack pointer or a handler: a union keeps both types exact. */
typedef union {
    uint32_t *stack;
    void (*handler)(void);
} vector_t;

#define HANDLER(function) { .handler = function }
#define DEFAULT HANDLER(Default_Handler)
#define NONE { .stack = 0 }

/* 16 system exceptions, then the 32 interrupts of mps2-an500. */
__attribute__((section(".vectors"), used)) const vector_t vector_table[48] = {
    { .stack = __stack_top }, HANDLER(Reset_Handler), DEFAULT, HANDLER(HardFault_Handler),
    DEFAULT, DEFAULT, DEFAULT, NONE, NONE, NONE, NONE, DEFAULT, DEFAULT, NONE, DEFAULT, HANDLER(SysTick_Handler),
    DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT,
    DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT,
    DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT,
    DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT,
};

__attribute__((noreturn)) void Reset_Handler(void)
{
    uint32_t *source, *target;
    /* Paint [__stack_limit, sp) without touching the stack: the harness reads the peak back. */
    __asm__ __volatile__(
        "   ldr   r0, =__stack_limit \n"
        "   ldr   r1, =0xDEADBEEF    \n"
        "   mov   r2, sp             \n"
        "1: cmp   r0, r2             \n"
        "   it    lo                 \n"
        "   strlo r1, [r0], #4       \n"
        "   blo   1b                 \n"
        ::: "r0", "r1", "r2", "cc", "memory");
    for (source = __data_load, target = __data_start; target < __data_end;) {
        *target++ = *source++;
    }
    for (target = __bss_start; target < __bss_end;) {
        *target++ = 0;
    }
    semihosting_exit(main());
}

uint32_t stack_peak_bytes(void)
{
    const uint32_t *word = __stack_limit;
    while (word < __stack_top && *word == 0xDEADBEEFu) {
        word++;
    }
    return (uint32_t)((uintptr_t)__stack_top - (uintptr_t)word);
}

__attribute__((used)) void hardfault_report(const uint32_t *frame)
{
    semihosting_print("agilenn harness: HardFault at pc 0x");
    semihosting_print_hex(frame[6]);
    semihosting_print(", lr 0x");
    semihosting_print_hex(frame[5]);
    semihosting_print("\n");
    semihosting_exit(131);
}

__attribute__((naked)) void HardFault_Handler(void)
{
    __asm__ __volatile__(
        "tst   lr, #4 \n"
        "ite   eq     \n"
        "mrseq r0, msp\n"
        "mrsne r0, psp\n"
        "b     hardfault_report\n");
}

void Default_Handler(void)
{
    semihosting_print("agilenn harness: unexpected exception\n");
    semihosting_exit(130);
}
