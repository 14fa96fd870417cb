// Everything lives in include/cchamade_shims.h as static inline functions; SwiftPM needs one source file.
#include "cchamade_shims.h"
