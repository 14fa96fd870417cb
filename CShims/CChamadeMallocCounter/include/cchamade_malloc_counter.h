#ifndef CCHAMADE_MALLOC_COUNTER_H
#define CCHAMADE_MALLOC_COUNTER_H
// Linking this module replaces malloc & co. with thin wrappers over glibc's own (__libc_malloc…) that
// count the calls a thread makes while its tick flag is raised (see cchamade_shims.h). It exists to
// prove, in `chamade bench` and the tests, that the 20 ms tick allocates nothing. Nothing to call.
int cchamade_malloc_counter_linked(void);
#endif
