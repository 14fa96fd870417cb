// Nothing to define: the runtime (libclang_rt.rtsan) provides the functions crtsan.h declares.
