/* hash: FNV-1a over bytes, for the in-memory tables of core/. Callers mix
 * the result as their tables need. libc only. */
#ifndef RINGMX_CORE_HASH_H
#define RINGMX_CORE_HASH_H

#include <stddef.h>
#include <stdint.h>

#define FNV64_OFFSET 1469598103934665603ull
#define FNV64_PRIME  1099511628211ull
#define FNV32_OFFSET 2166136261u
#define FNV32_PRIME  16777619u

static inline uint64_t fnv1a64(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = FNV64_OFFSET;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * FNV64_PRIME;
	return h;
}

static inline uint32_t fnv1a32(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint32_t h = FNV32_OFFSET;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * FNV32_PRIME;
	return h;
}

#endif
