#include "fuzz_support.h"

int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));
size_t __sanitizer_get_allocated_size(const volatile void *p);

// The fuzzers run single-threaded: plain globals are enough.
static int tracking;
static long long live, peak;
static size_t largest;

static void on_malloc(const volatile void *p, size_t size) {
    (void)p;
    if (!tracking) return;
    live += (long long)size;
    if (live > peak) peak = live;
    if (size > largest) largest = size;
}

static void on_free(const volatile void *p) {
    if (!tracking || !p) return;
    live -= (long long)__sanitizer_get_allocated_size(p);
}

void rf_track_begin(void) {
    live = 0;
    peak = 0;
    largest = 0;
    tracking = 1;
}

void rf_track_end(size_t *peak_growth, size_t *largest_out) {
    tracking = 0;
    *peak_growth = peak > 0 ? (size_t)peak : 0;
    *largest_out = largest;
}

void rf_install_hooks(void) {
    static int hooked;
    if (!hooked) hooked = __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
}
