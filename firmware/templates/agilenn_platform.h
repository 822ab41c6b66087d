/* What the test harness needs from a platform: byte streams in and out, and an instruction counter. */
#ifndef AGILENN_PLATFORM_H
#define AGILENN_PLATFORM_H

#include <stdint.h>

#ifndef PLATFORM_COUNTS_INSTRUCTIONS
#define PLATFORM_COUNTS_INSTRUCTIONS 0
#endif

int platform_open(void);
uint32_t platform_read(uint8_t *buffer, uint32_t length); /* bytes read; fewer at the end of the stream */
void platform_write(const uint8_t *buffer, uint32_t length);
void platform_close(void);
uint32_t platform_instructions(void); /* instructions since the previous call; 0 where not counted */
uint32_t platform_stack_peak(void);       /* bytes of stack used at the peak; 0 where not measured */
int platform_exit(int status);

/* The front reports each finished step here when built with -DAGILENN_LAYER_DONE=agilenn_harness_layer_done. */
void agilenn_harness_layer_done(uint32_t index);

#endif /* AGILENN_PLATFORM_H */
