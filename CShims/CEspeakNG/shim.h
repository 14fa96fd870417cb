#ifndef CESPEAKNG_SHIM_H
#define CESPEAKNG_SHIM_H
// espeak-ng (Debian libespeak-ng-dev 1.51), used only by ChamadeSpeech's Synthesizer. Its API has
// no variadic functions: no wrappers needed.
#include <espeak-ng/speak_lib.h>
#include <espeak-ng/espeak_ng.h>
#endif
