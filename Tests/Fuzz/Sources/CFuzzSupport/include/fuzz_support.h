#ifndef RATHOLE_FUZZ_SUPPORT_H
#define RATHOLE_FUZZ_SUPPORT_H
#include <stddef.h>
#include <stdint.h>

/// Installs the allocation hooks below (once).
void rf_install_hooks(void);

/// Heap accounting through AddressSanitizer's allocation hooks: between rf_track_begin() and
/// rf_track_end(), the peak of live heap bytes above the level at rf_track_begin(), and the
/// largest single allocation.
void rf_track_begin(void);
void rf_track_end(size_t *peak_growth, size_t *largest);

#endif
