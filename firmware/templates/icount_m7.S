/* icount.S - exact instruction timestamp under qemu -icount shift=0,sleep=off.
 *
 * With shift=0 QEMU's virtual clock advances exactly 1 ns per executed guest
 * instruction, but every mps2 counter runs at 25 MHz, i.e. ticks once per 40
 * instructions. icount_stamp() recovers the sub-tick phase with a vernier:
 *   1. coarse: spin (4-insn loop, counted) until FPGAIO COUNTER ticks;
 *      the detecting load lands d = 0..3 instructions after the edge;
 *   2. fine: exactly 36 instructions after the detecting load, take 5
 *      back-to-back single-instruction samples; the edge 40 instructions
 *      later falls among them and its position gives d exactly.
 * Returns (uint64_t) {lo = entry time, hi = exit time}, both = virtual time
 * (= instructions retired) plus one run-constant offset:
 *   exit  = 40*(c0+1) + d        (detecting load at edge + d, fixed tail after)
 *   entry = exit - 4*i           (i = coarse iterations; fixed head before)
 * A region between two calls executed exactly  b.entry - a.exit - K
 * instructions, K = value for an empty region (icount_calibrate()).
 * Cost: 50-90 instructions per call. Clobbers r0-r3, r12 only (AAPCS-safe). */
    .syntax unified
    .thumb
    .text
    .global icount_stamp
    .type   icount_stamp, %function
    .thumb_func
    .balign 4
icount_stamp:
    push  {r4-r6}
    ldr   r1, =0x40028018        /* FPGAIO COUNTER (25 MHz) */
    movs  r3, #0
    ldr   r0, [r1]               /* c0 */
1:  ldr   r2, [r1]               /* coarse check load k at T + a + 4k */
    adds  r3, r3, #1
    cmp   r2, r0
    beq   1b
    /* detecting load was at t_det = E + d; 35 instructions follow before the
     * first fine sample (adds, cmp, beq above + 32 nops) => sample0 at t_det+36 */
    .rept 32
    nop
    .endr
    ldr   r2, [r1]               /* s0 .. s4 at t_det+36 .. t_det+40 */
    ldr   r12, [r1]
    ldr   r4, [r1]
    ldr   r5, [r1]
    ldr   r6, [r1]
    /* n_new = number of samples that saw the next tick (c0 + 2); d = n_new - 1 */
    adds  r0, r0, #2
    subs  r2, r2, r0
    subs  r12, r12, r0
    adds  r2, r2, r12
    subs  r4, r4, r0
    adds  r2, r2, r4
    subs  r5, r5, r0
    adds  r2, r2, r5
    subs  r6, r6, r0
    adds  r2, r2, r6             /* r2 = -(5 - n_new) = n_new - 5 = d - 4 */
    adds  r2, r2, #4             /* d */
    subs  r0, r0, #1             /* c0 + 1 */
    movs  r12, #40
    mul   r0, r0, r12            /* 40*(c0+1) */
    adds  r1, r0, r2             /* hi = exit  = 40*(c0+1) + d */
    sub   r0, r1, r3, lsl #2     /* lo = entry = exit - 4*i    */
    pop   {r4-r6}
    bx    lr
    .size icount_stamp, . - icount_stamp
    .ltorg
