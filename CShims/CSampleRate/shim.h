// libsamplerate (Debian libsamplerate0-dev 0.2.2), used only by ChamadeDSP.SampleRateConverter.
#include <samplerate.h>
