// hiredis (Debian libhiredis-dev 0.14): the Redis client of ChamadeCluster. Its commands are called
// through redisCommandArgv / redisAppendCommandArgv, so no variadic function needs a wrapper.
#include <hiredis/hiredis.h>
