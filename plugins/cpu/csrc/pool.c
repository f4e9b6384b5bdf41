/* Aligned buffers with a size-class cache.
 *
 * Freshly mmap'd memory costs a page fault per 4 KiB on first touch, which
 * halves the throughput of a streaming kernel writing into a new output.
 * Freed buffers are therefore kept on free lists keyed by a rounded size (four
 * classes per power of two, so at most 25% slack) and handed out again, up to
 * a bounded total.  Only called with the GIL held (allocation and
 * deallocation of the Python Array objects), so no lock is needed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "needle_cpu.h"

#define ND_ALIGN 64
#define ND_NCLASS (64 * 4)
/* buffers kept per size class: an LSTM step frees dozens of same-size
 * temporaries (per time step and gate); 8 per class sent ~2,900 buffers a
 * step back to malloc.  The byte bound below still caps the total. */
#define ND_PER_CLASS 128

static void *g_slots[ND_NCLASS][ND_PER_CLASS];
static int g_count[ND_NCLASS];
static size_t g_cached = 0;
/* buffers the cache could not serve, and their bytes (pool_stats): each
 * fresh page costs a fault on first touch -- ~3.4 us per 4 KiB page on this
 * VM, so a step that keeps missing the cache spends milliseconds in them */
static size_t g_fresh_count = 0, g_fresh_bytes = 0;
/* The cache's total bound.  Cached buffers of sizes not asked for again
 * before a training step's peak add to that peak (512 MiB made a SmallCNN
 * step's peak RSS ~1.3x its live memory); 16 MiB keeps the reuse of the
 * many small and mid-size temporaries, while activation-sized buffers mostly
 * go back to the system (pool_set_limit changes it). */
static size_t g_limit = (size_t)16 << 20;

/* Buffers from ND_MMAP_MIN up are mapped and unmapped directly instead of
 * going through malloc: glibc raises its mmap threshold to the size of each
 * freed mapped block (up to 32 MiB), after which activation-sized buffers
 * land in its heap and fragment it -- RSS then kept growing by ~100 MB over
 * the first SmallCNN steps and never came back.  Mapped memory returns to
 * the system on unmap, so RSS follows what is live plus the cache above. */
#define ND_MMAP_MIN ((size_t)1 << 20)

/* From ND_HUGE_MIN up a mapping asks for transparent huge pages (where the
 * system leaves THP to madvise, the default): one fault and one TLB entry per
 * 2 MiB instead of 512.  MPI's shared-memory copies through a 4 MiB buffer
 * ran 15-20% slower without them (NumPy, which MPI benchmarks use, advises
 * the same from 4 MiB).  Only the huge pages the array fills are advised: a
 * huge page over the size class's slack would be populated whole by the
 * array's last bytes (advising all of cap raised a SmallCNN step's peak RSS
 * by 10%). */
#define ND_HUGE_MIN ((size_t)4 << 20)
#define ND_HUGE_PAGE ((size_t)2 << 20)

/* A mapped buffer starts ND_BIG_SKEW bytes past its mapping, which is page
 * (with THP: 2 MiB) aligned.  Arrays that all start on such a boundary
 * share their low address bits with each other and with the library buffers
 * they are copied through, and loads then collide with stores in the cache
 * sets and the 4 KiB store-forwarding check: an MPI allreduce of 64 MiB from
 * a 2 MiB-aligned buffer took 42 ms against 33 ms from the same buffer 64 or
 * 256 bytes further on (NumPy's buffers sit 16 bytes past a page).  A
 * multiple of 64 keeps the SIMD alignment; the extra page holds the tail. */
#define ND_BIG_SKEW ((size_t)256)
#define ND_BIG_PAD ((size_t)4096)

/* cap + ND_BIG_PAD bytes of fresh mapping; from ND_HUGE_MIN up it starts on a
 * 2 MiB boundary (over-map, trim both ends) so that huge pages can cover the
 * array from its start */
static char *map_region(size_t cap) {
  size_t len = cap + ND_BIG_PAD;
  if (cap < ND_HUGE_MIN) {
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : (char *)p;
  }
  void *raw = mmap(NULL, len + ND_HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return NULL;
  char *lo = (char *)raw, *hi = lo + len + ND_HUGE_PAGE;
  char *p = (char *)(((uintptr_t)lo + ND_HUGE_PAGE - 1) & ~(uintptr_t)(ND_HUGE_PAGE - 1));
  if (p > lo) munmap(lo, (size_t)(p - lo));
  if (hi > p + len) munmap(p + len, (size_t)(hi - (p + len)));
  return p;
}

static void *big_alloc(size_t cap, size_t nbytes) {
  /* no MAP_POPULATE: pages of the size class's slack past the array are
   * never touched, so they never count in RSS */
  char *p = map_region(cap);
  if (!p) return NULL;
#ifdef MADV_HUGEPAGE
  size_t whole = (ND_BIG_SKEW + nbytes) & ~(ND_HUGE_PAGE - 1); /* the huge pages the array fills */
  if (cap >= ND_HUGE_MIN && whole) madvise(p, whole, MADV_HUGEPAGE); /* advice: failure is harmless */
#endif
  return p + ND_BIG_SKEW;
}

/* a pool buffer of capacity cap back to the system */
static void release(void *p, size_t cap) {
  if (cap >= ND_MMAP_MIN) munmap((char *)p - ND_BIG_SKEW, cap + ND_BIG_PAD);
  else free(p);
}

/* Buffers from the whole bound up, which the cache never holds, are kept
 * aside instead: the ND_NBIG most recently freed.  A loop over one array
 * size past the bound (add on 2^24 elements) would otherwise map, populate
 * and unmap its output every call -- 4x slower than reusing it -- and an LSTM
 * language model's step cycles three 16 MiB logit-sized buffers (with one
 * slot they faulted ~80 MB of fresh pages a step).  They add at most ND_NBIG
 * arrays to a peak; smaller ones (a SmallCNN's activations) are not kept
 * this way: four of those raised its step's peak by 10%. */
#define ND_NBIG 4
static void *g_big[ND_NBIG];
static size_t g_big_cap[ND_NBIG];
static int g_nbig = 0;

static size_t big_cached(void) {
  size_t total = 0;
  for (int i = 0; i < g_nbig; i++) total += g_big_cap[i];
  return total;
}

/* remove slot i, keeping the others in the order they were freed */
static void big_remove(int i) {
  for (int j = i; j < g_nbig - 1; j++) {
    g_big[j] = g_big[j + 1];
    g_big_cap[j] = g_big_cap[j + 1];
  }
  g_nbig--;
}

/* a kept-aside buffer of capacity cap, or NULL */
static void *big_take(size_t cap) {
  for (int i = g_nbig - 1; i >= 0; i--) {
    if (g_big_cap[i] == cap) {
      void *p = g_big[i];
      big_remove(i);
      return p;
    }
  }
  return NULL;
}

/* keep p aside; the oldest kept buffer goes back to the system when full */
static void big_keep(void *p, size_t cap) {
  if (g_nbig == ND_NBIG) {
    release(g_big[0], g_big_cap[0]);
    big_remove(0);
  }
  g_big[g_nbig] = p;
  g_big_cap[g_nbig++] = cap;
}

void *nd_aligned_alloc(size_t nbytes) {
  void *p = NULL;
  if (nbytes < ND_ALIGN) nbytes = ND_ALIGN;
  if (posix_memalign(&p, ND_ALIGN, nbytes) != 0) return NULL;
  return p;
}

void nd_aligned_free(void *p) { free(p); }

/* round nbytes up to its class; returns the class index */
static int size_class(size_t nbytes, size_t *cap) {
  if (nbytes <= 256) { *cap = 256; return 0; }
  int k = 63 - __builtin_clzll((unsigned long long)(nbytes - 1)); /* 2^k < nbytes <= 2^(k+1) */
  size_t base = (size_t)1 << k, step = base / 4;
  size_t q = (nbytes - base + step - 1) / step;                    /* 1..4 */
  *cap = base + q * step;
  return k * 4 + (int)(q - 1);
}

void *nd_pool_alloc(size_t nbytes, size_t *cap_out) {
  size_t cap;
  int c = size_class(nbytes, &cap);
  *cap_out = cap;
  if (c < ND_NCLASS && g_count[c] > 0) {
    void *p = g_slots[c][--g_count[c]];
    g_cached -= cap;
    return p;
  }
  if (cap >= g_limit) {
    void *p = big_take(cap);
    if (p) return p;
  }
  g_fresh_count++;
  g_fresh_bytes += cap;
  return cap >= ND_MMAP_MIN ? big_alloc(cap, nbytes) : nd_aligned_alloc(cap);
}

void nd_pool_free(void *p, size_t cap) {
  if (!p) return;
  size_t cap2;
  int c = size_class(cap, &cap2);
  if (cap2 == cap && c < ND_NCLASS && g_count[c] < ND_PER_CLASS && g_cached + cap <= g_limit) {
    g_slots[c][g_count[c]++] = p;
    g_cached += cap;
    return;
  }
  if (cap2 == cap && cap >= g_limit) {
    big_keep(p, cap);
    return;
  }
  release(p, cap);
}

/* the capacity of size class c (inverse of size_class) */
static size_t class_cap(int c) {
  if (c == 0) return 256;
  size_t base = (size_t)1 << (c / 4);
  return base + (size_t)(c % 4 + 1) * (base / 4);
}

void nd_pool_clear(void) {
  for (int c = 0; c < ND_NCLASS; c++) {
    while (g_count[c] > 0) release(g_slots[c][--g_count[c]], class_cap(c));
  }
  g_cached = 0;
  while (g_nbig > 0) {
    g_nbig--;
    release(g_big[g_nbig], g_big_cap[g_nbig]);
  }
}

void nd_pool_set_limit(size_t bytes) {
  g_limit = bytes;
  if (g_cached > g_limit) nd_pool_clear();
}

size_t nd_pool_cached_bytes(void) { return g_cached + big_cached(); }

void nd_pool_fresh(size_t *count, size_t *bytes) {
  *count = g_fresh_count;
  *bytes = g_fresh_bytes;
}
