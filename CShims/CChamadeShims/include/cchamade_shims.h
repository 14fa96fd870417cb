#ifndef CCHAMADE_SHIMS_H
#define CCHAMADE_SHIMS_H
// Our own C, kept to what Swift cannot call directly. Every function is one line and prefixed cchamade_.
#include <opus.h>
#include <stdint.h>
#include <sys/socket.h>
#if defined(__linux__)
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <malloc.h>
#endif

// opus_encoder_ctl / opus_decoder_ctl are variadic C macros-over-functions: Swift cannot call them,
// so each request we use gets a typed wrapper. Returns an OPUS_* code.
static inline int cchamade_opus_set_bitrate(OpusEncoder *e, int32_t v) { return opus_encoder_ctl(e, OPUS_SET_BITRATE(v)); }
static inline int cchamade_opus_set_complexity(OpusEncoder *e, int32_t v) { return opus_encoder_ctl(e, OPUS_SET_COMPLEXITY(v)); }
static inline int cchamade_opus_set_inband_fec(OpusEncoder *e, int32_t v) { return opus_encoder_ctl(e, OPUS_SET_INBAND_FEC(v)); }
static inline int cchamade_opus_set_packet_loss_perc(OpusEncoder *e, int32_t v) { return opus_encoder_ctl(e, OPUS_SET_PACKET_LOSS_PERC(v)); }
static inline int cchamade_opus_set_dtx(OpusEncoder *e, int32_t v) { return opus_encoder_ctl(e, OPUS_SET_DTX(v)); }
static inline int cchamade_opus_get_bitrate(OpusEncoder *e, int32_t *v) { return opus_encoder_ctl(e, OPUS_GET_BITRATE(v)); }
static inline int cchamade_opus_get_lookahead(OpusEncoder *e, int32_t *v) { return opus_encoder_ctl(e, OPUS_GET_LOOKAHEAD(v)); }
static inline int cchamade_opus_encoder_reset(OpusEncoder *e) { return opus_encoder_ctl(e, OPUS_RESET_STATE); }
static inline int cchamade_opus_decoder_reset(OpusDecoder *d) { return opus_decoder_ctl(d, OPUS_RESET_STATE); }

// Names the calling thread (15 characters at most) for ps, top and perf. prctl is variadic, so
// Swift cannot call it; pthread_setname_np is missing from Swift's Glibc module.
static inline void cchamade_set_thread_name(const char *name) {
#if defined(__linux__)
    prctl(PR_SET_NAME, name, 0, 0, 0);
#endif
}

// Lowers the calling thread's priority (Linux: nice is per thread) for background work that must
// never compete with the clock: speech recognition. setpriority on a thread id, one line.
static inline void cchamade_lower_thread_priority(int nice) {
#if defined(__linux__)
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice);
#endif
}

// glibc's allocator controls, missing from Swift's Glibc module (malloc.h is not in it).
// A fixed mmap threshold: every block at least this large gets its own mapping and goes back to the
// system when freed. Setting it also turns off glibc's dynamic threshold, which otherwise rises to the
// size of each large block freed, so later rings (5.8 MB playout queues) land on the heap and stay.
static inline void cchamade_set_mmap_threshold(int bytes) {
#if defined(__linux__)
    mallopt(M_MMAP_THRESHOLD, bytes);
#endif
}
// Returns free heap memory of every arena to the system (glibc's malloc_trim).
static inline void cchamade_malloc_trim(void) {
#if defined(__linux__)
    malloc_trim(0);
#endif
}

// The control-message walkers of recvmsg are macros: Swift cannot call them. Used to read the
// kernel's receive timestamp (SO_TIMESTAMPNS) of each RTP datagram.
static inline struct cmsghdr *cchamade_cmsg_firsthdr(struct msghdr *m) { return CMSG_FIRSTHDR(m); }
static inline struct cmsghdr *cchamade_cmsg_nxthdr(struct msghdr *m, struct cmsghdr *c) { return CMSG_NXTHDR(m, c); }
static inline unsigned char *cchamade_cmsg_data(struct cmsghdr *c) { return CMSG_DATA(c); }

// RealtimeSanitizer entry points (clang's rtsan runtime). Declared here so Swift can call them; they are
// resolved only when a binary links libclang_rt.rtsan (`make test-rtsan`, RealtimeSanitizer/); the weak
// declarations make them null otherwise, so each call is one branch on a null symbol.
void __rtsan_realtime_enter(void) __attribute__((weak));
void __rtsan_realtime_exit(void) __attribute__((weak));
void __rtsan_disable(void) __attribute__((weak));
void __rtsan_enable(void) __attribute__((weak));
static inline int cchamade_rtsan_available(void) { return __rtsan_realtime_enter != 0; }
static inline void cchamade_rtsan_enter(void) { if (__rtsan_realtime_enter) __rtsan_realtime_enter(); }
static inline void cchamade_rtsan_exit(void) { if (__rtsan_realtime_exit) __rtsan_realtime_exit(); }
static inline void cchamade_rtsan_disable(void) { if (__rtsan_disable) __rtsan_disable(); }
static inline void cchamade_rtsan_enable(void) { if (__rtsan_enable) __rtsan_enable(); }

// Allocation counting on the tick. The clock thread raises this flag around each tick; the malloc
// interposer (target CChamadeMallocCounter, linked only into `chamade` and the tests) counts every
// allocation made by a thread while its flag is up. Without the interposer the flag is one TLS store.
extern _Thread_local int cchamade_tick_active;
static inline void cchamade_tick_enter(void) { cchamade_tick_active = 1; }
static inline void cchamade_tick_exit(void) { cchamade_tick_active = 0; }
// Allocations counted so far (all threads), and on the calling thread only (for tests that tick on
// their own thread while other engines tick elsewhere in the process), and whether an interposer is
// counting at all.
uint64_t cchamade_tick_allocation_count(void);
uint64_t cchamade_tick_allocation_count_on_this_thread(void);
int cchamade_allocation_counting_available(void);

#endif
