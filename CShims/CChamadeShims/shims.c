// Most of the shims are static inline in include/cchamade_shims.h. This file holds the state of the
// tick allocation probe, which must exist once per process.
#include "cchamade_shims.h"
#include <stdatomic.h>

_Thread_local int cchamade_tick_active = 0;
_Atomic uint64_t cchamade_tick_allocations = 0;
_Thread_local uint64_t cchamade_tick_allocations_here = 0;

// Defined (strong) by CChamadeMallocCounter when it is linked in.
extern int cchamade_malloc_counter_present __attribute__((weak));

uint64_t cchamade_tick_allocation_count(void) { return atomic_load_explicit(&cchamade_tick_allocations, memory_order_relaxed); }
uint64_t cchamade_tick_allocation_count_on_this_thread(void) { return cchamade_tick_allocations_here; }
int cchamade_allocation_counting_available(void) { return &cchamade_malloc_counter_present != 0; }
