/* The mps2-an500 board under QEMU: see board_mps2.h. */
#include "board_mps2.h"

#define REG32(address) (*(volatile uint32_t *)(uintptr_t)(address))

/* CMSDK APB UART: DATA, STATE (bit 0 TX full, bit 1 RX full), CTRL (bit 0 TX enable, bit 1 RX enable), BAUDDIV */
#define UART_BASE(n) ((n) == 0u ? 0x40004000u : 0x40005000u)
#define UART_DATA(n) REG32(UART_BASE(n) + 0x00u)
#define UART_STATE(n) REG32(UART_BASE(n) + 0x04u)
#define UART_CTRL(n) REG32(UART_BASE(n) + 0x08u)
#define UART_BAUDDIV(n) REG32(UART_BASE(n) + 0x10u)

/* SysTick on the 25 MHz processor clock of mps2 */
#define SYST_CSR REG32(0xE000E010u)
#define SYST_RVR REG32(0xE000E014u)
#define SYST_CVR REG32(0xE000E018u)
#define SYSTICK_PER_MS 25000u

uint64_t icount_stamp(void); /* icount_m7.S */

static volatile uint32_t milliseconds;
static uint32_t last_exit;

void SysTick_Handler(void)
{
    milliseconds++;
}

void board_init(void)
{
    uint32_t uart;
    for (uart = 0; uart < 2u; uart++) {
        UART_BAUDDIV(uart) = 217u; /* 115200 baud at 25 MHz; QEMU receives nothing below 16 */
        UART_CTRL(uart) = 3u;
    }
    SYST_RVR = SYSTICK_PER_MS - 1u;
    SYST_CVR = 0u;
    SYST_CSR = 7u; /* enable, interrupt, processor clock */
    last_exit = (uint32_t)(icount_stamp() >> 32);
}

int board_uart_get(uint32_t uart, uint8_t *byte)
{
    if ((UART_STATE(uart) & 2u) == 0u) {
        return 0;
    }
    *byte = (uint8_t)UART_DATA(uart);
    return 1;
}

void board_uart_write(uint32_t uart, const uint8_t *data, uint32_t length)
{
    uint32_t i;
    for (i = 0; i < length; i++) {
        while (UART_STATE(uart) & 1u) {
        }
        UART_DATA(uart) = data[i];
    }
}

uint32_t board_millis(void)
{
    return milliseconds;
}

uint32_t board_micros(void)
{
    uint32_t ms, ticks;
    do {
        ms = milliseconds;
        ticks = SYST_CVR;
    } while (ms != milliseconds);
    return ms * 1000u + (SYSTICK_PER_MS - 1u - ticks) / 25u;
}

uint32_t board_instructions(void)
{
    uint64_t stamp = icount_stamp();
    uint32_t count = (uint32_t)stamp - last_exit;
    last_exit = (uint32_t)(stamp >> 32);
    return count;
}
