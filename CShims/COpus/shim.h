// libopus (Debian libopus-dev 1.3.1), used only by ChamadeDSP.Opus.
#include <opus.h>
