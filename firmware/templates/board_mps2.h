/*
 * The board under the offload app: QEMU's mps2-an500 (Cortex-M7). Two CMSDK UARTs (UART0: the host feeder,
 * in place of a camera; UART1: the radio line to the gateway) and SysTick counting milliseconds. Under
 * QEMU -icount shift=0 the clock is one instruction a nanosecond, so time here is deterministic.
 * A port to a real board replaces this file (its UART driver, and SysTick at its core clock).
 */
#ifndef BOARD_MPS2_H
#define BOARD_MPS2_H

#include <stdint.h>

#define BOARD_FEEDER 0u
#define BOARD_RADIO 1u

void board_init(void);
int board_uart_get(uint32_t uart, uint8_t *byte); /* 1 with a byte, 0 when none is waiting */
void board_uart_write(uint32_t uart, const uint8_t *data, uint32_t length);
uint32_t board_millis(void);
uint32_t board_micros(void);       /* wraps every 71 minutes */
uint32_t board_instructions(void); /* instructions since the previous call (QEMU's icount clock) */

#endif /* BOARD_MPS2_H */
