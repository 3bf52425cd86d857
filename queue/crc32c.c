/* crc32c: CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the
 * checksum of every spool record. Two paths side by side, picohttpparser
 * style: the SSE4.2 crc32 instruction eight bytes at a time where the CPU has
 * it, and a portable slicing-by-8 table walk everywhere else. The choice is
 * made once, before main(), so crc32c() itself takes no lock and may be
 * called from any thread. libc only. See crc32c.h. */
#include "queue/crc32c.h"

#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define CRC32C_X86 1
#include <nmmintrin.h>
#else
#define CRC32C_X86 0
#endif

#define CRC32C_POLY 0x82F63B78u /* reflected Castagnoli polynomial */

/* crc32c_tab[k][b]: the CRC of byte <b> followed by <k> zero bytes. Filled
 * by the constructor below, read-only afterwards. */
static uint32_t crc32c_tab[8][256];
static bool crc32c_have_hw;

__attribute__((constructor)) static void crc32c_init(void)
{
	for (unsigned b = 0; b < 256; b++) {
		uint32_t c = b;

		for (int i = 0; i < 8; i++)
			c = (c >> 1) ^ (CRC32C_POLY & (0u - (c & 1)));
		crc32c_tab[0][b] = c;
	}
	for (unsigned b = 0; b < 256; b++)
		for (unsigned k = 1; k < 8; k++)
			crc32c_tab[k][b] = (crc32c_tab[k - 1][b] >> 8) ^
			                   crc32c_tab[0][crc32c_tab[k - 1][b] & 0xff];
#if CRC32C_X86
	/* GCC: a constructor runs before the cpu model is set up. */
	__builtin_cpu_init();
	crc32c_have_hw = __builtin_cpu_supports("sse4.2");
#endif
}

static inline uint64_t load_le64(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	return v;
}

uint32_t crc32c_sw(uint32_t crc, const void *p, size_t len)
{
	const unsigned char *s = p;
	uint32_t c = ~crc;

	while (len && ((uintptr_t)s & 7)) {
		c = crc32c_tab[0][(c ^ *s++) & 0xff] ^ (c >> 8);
		len--;
	}
	while (len >= 8) {
		uint64_t w = load_le64(s) ^ c;
		uint32_t lo = (uint32_t)w, hi = (uint32_t)(w >> 32);

		c = crc32c_tab[7][lo & 0xff] ^ crc32c_tab[6][(lo >> 8) & 0xff] ^
		    crc32c_tab[5][(lo >> 16) & 0xff] ^ crc32c_tab[4][lo >> 24] ^
		    crc32c_tab[3][hi & 0xff] ^ crc32c_tab[2][(hi >> 8) & 0xff] ^
		    crc32c_tab[1][(hi >> 16) & 0xff] ^ crc32c_tab[0][hi >> 24];
		s += 8;
		len -= 8;
	}
	while (len--)
		c = crc32c_tab[0][(c ^ *s++) & 0xff] ^ (c >> 8);
	return ~c;
}

#if CRC32C_X86
__attribute__((target("sse4.2"))) uint32_t crc32c_hw(uint32_t crc, const void *p, size_t len)
{
	const unsigned char *s = p;
	uint32_t c = ~crc;

	while (len && ((uintptr_t)s & 7)) {
		c = _mm_crc32_u8(c, *s++);
		len--;
	}
#if defined(__x86_64__)
	{
		uint64_t c64 = c;

		/* One chain: each crc32 waits for the last (3 cycles), about
		 * 8 bytes per 3 cycles; enough next to the disk. Three
		 * interleaved streams merged with pclmul would triple it. */
		while (len >= 8) {
			uint64_t w;

			memcpy(&w, s, sizeof(w));
			c64 = _mm_crc32_u64(c64, w);
			s += 8;
			len -= 8;
		}
		c = (uint32_t)c64;
	}
#else
	while (len >= 4) {
		uint32_t w;

		memcpy(&w, s, sizeof(w));
		c = _mm_crc32_u32(c, w);
		s += 4;
		len -= 4;
	}
#endif
	while (len--)
		c = _mm_crc32_u8(c, *s++);
	return ~c;
}
#else
uint32_t crc32c_hw(uint32_t crc, const void *p, size_t len)
{
	return crc32c_sw(crc, p, len);
}
#endif

bool crc32c_hw_available(void)
{
	return crc32c_have_hw;
}

uint32_t crc32c(uint32_t crc, const void *p, size_t len)
{
	if (crc32c_have_hw)
		return crc32c_hw(crc, p, len);
	return crc32c_sw(crc, p, len);
}

/* ---- combining two crcs ----
 *
 * A CRC is a remainder modulo the polynomial P over GF(2), so the crc of
 * A followed by B is crc(A) carried over len(B) zero octets, plus crc(B)
 * (the pre- and post-inversion cancel out in that sum). Carrying over n
 * octets multiplies by x^(8n) mod P, computed from the powers x^(2^k) by
 * square-and-multiply: O(log n) small products instead of n table steps.
 * Polynomials are bit-reflected, as the crc itself: bit 31 is x^0. */

/* a * b mod P. */
static uint32_t gf2_mulmod(uint32_t a, uint32_t b)
{
	uint32_t prod = 0;

	for (uint32_t bit = 1u << 31; bit; bit >>= 1) {
		if (a & bit)
			prod ^= b;
		b = (b >> 1) ^ (CRC32C_POLY & (0u - (b & 1))); /* b *= x */
	}
	return prod;
}

uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b)
{
	uint32_t pow = 1u << 30;   /* x^1, squared up to x^(2^k) as k grows */
	uint32_t shift = 1u << 31; /* x^0 */
	uint64_t bits = len_b * 8;

	for (; bits; bits >>= 1) {
		if (bits & 1)
			shift = gf2_mulmod(shift, pow);
		pow = gf2_mulmod(pow, pow);
	}
	return gf2_mulmod(shift, crc_a) ^ crc_b;
}
