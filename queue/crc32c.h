/* crc32c: CRC-32C (Castagnoli), the checksum of every spool record and
 * done record, and the hash of the spool's done and defer sets. Its own
 * module, libc only (queue/crc32c.c), so that it depends on nothing of the
 * spool and could move to core/. */
#ifndef RINGMX_QUEUE_CRC32C_H
#define RINGMX_QUEUE_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* CRC32C (Castagnoli), hardware (SSE4.2) when the CPU has it. <crc> is the
 * running value, 0 to start. Any thread. */
uint32_t crc32c(uint32_t crc, const void *p, size_t len);
/* The crc of A followed by B from <crc_a> = crc32c(0, A, ...), <crc_b> =
 * crc32c(0, B, ...) and B's length, without B's bytes: for a writer that
 * learns a record's header only after its body went to the disk
 * (io/spill.c). O(log len_b). Any thread. */
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);
/* The two paths behind crc32c(), for tests and benchmarks: the portable
 * slicing-by-8 one, and the SSE4.2 one (callable only when
 * crc32c_hw_available(); the portable one on other CPUs). */
uint32_t crc32c_sw(uint32_t crc, const void *p, size_t len);
uint32_t crc32c_hw(uint32_t crc, const void *p, size_t len);
bool crc32c_hw_available(void);

#endif
