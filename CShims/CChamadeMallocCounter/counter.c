// Counting wrappers over glibc's allocator. They forward to the __libc_* entry points (exported by
// glibc for exactly this use), so no dlsym bootstrap is needed, and count only while the calling
// thread's tick flag is up: one TLS load per allocation otherwise.
#include "cchamade_malloc_counter.h"
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>

#if defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define CCHAMADE_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define CCHAMADE_SANITIZED 1
#endif

// Sanitizers interpose malloc themselves; under them we count nothing and leave malloc alone
// (Engine.isCountingTickAllocations is then false; the allocation test runs in the plain build).
#ifndef CCHAMADE_SANITIZED

extern _Thread_local int cchamade_tick_active;
extern _Atomic uint64_t cchamade_tick_allocations;
extern _Thread_local uint64_t cchamade_tick_allocations_here;
int cchamade_malloc_counter_present = 1;

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static inline void count(void) {
    if (cchamade_tick_active) {
        atomic_fetch_add_explicit(&cchamade_tick_allocations, 1, memory_order_relaxed);
        cchamade_tick_allocations_here += 1;
    }
}

void *malloc(size_t n) { count(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { count(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { count(); return __libc_realloc(p, n); }
void *memalign(size_t align, size_t n) { count(); return __libc_memalign(align, n); }
void *aligned_alloc(size_t align, size_t n) { count(); return __libc_memalign(align, n); }
int posix_memalign(void **out, size_t align, size_t n) {
    count();
    if (align < sizeof(void *) || (align & (align - 1)) != 0) return EINVAL;
    void *p = __libc_memalign(align, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
int cchamade_malloc_counter_linked(void) { return cchamade_malloc_counter_present; }

#else
int cchamade_malloc_counter_linked(void) { return 0; }
#endif
