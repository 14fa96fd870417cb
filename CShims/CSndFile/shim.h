// libsndfile (Debian libsndfile1-dev 1.2.0), used only by ChamadeAudioFile.
#include <sndfile.h>
