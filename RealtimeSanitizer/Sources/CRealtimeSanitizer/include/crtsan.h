#pragma once
// clang's RealtimeSanitizer interface (sanitizer/rtsan_interface.h), the part the tests use.
void __rtsan_disable(void);
void __rtsan_enable(void);
void __rtsan_realtime_enter(void);
void __rtsan_realtime_exit(void);
