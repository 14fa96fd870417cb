#ifndef CPOCKETSPHINX_SHIM_H
#define CPOCKETSPHINX_SHIM_H
// PocketSphinx 5prealpha (Debian libpocketsphinx-dev), used only by ChamadeSpeech's Recognizer.
// Its one variadic function (sphinxbase's cmd_ln_init) is not used: cmd_ln_parse_r takes an argv.
#include <pocketsphinx.h>
#endif
