/* The replay loop of recorded kernel calls (replay.h). */
#include "replay.h"

_Static_assert(sizeof(void *) == sizeof(nd_i64), "record tables hold 8-byte entries");

nd_i64 nd_replay_run(const nd_rec *recs, nd_i64 n, nd_i64 *status) {
  for (nd_i64 k = 0; k < n; k++) {
    nd_i64 st = recs[k].fn(&recs[k]);
    if (st != 0) {
      *status = st;
      return k;
    }
  }
  return -1;
}
