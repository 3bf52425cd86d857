/* libFuzzer target for core/smtp_data: the differential check of
 * tests/fuzz/data_diff.h on arbitrary input. Every implementation the CPU
 * has (AVX-512, AVX2, SSE2, scalar) must agree with the byte-at-a-time
 * reference call by call, and the reference with the declarative oracle.
 *
 * Input: 4 header bytes, then the DATA bytes.
 *   [0] bit 0: normalize bare CR/LF; bits 1-3: maxv - 3 (7: many views)
 *   [1] max_line: 0, 1, 3, 10, 64, 65, 127, 128, 129, 200, 1000 (mod 11)
 *   [2] max_size: 0 (none) or that many octets
 *   [3] seed of the cut points (0: one piece)
 * Build and run: tests/fuzz/run.sh [SECONDS]. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/smtp_data.h"
#include "tests/fuzz/data_diff.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint32_t mls[] = {0, 1, 3, 10, 64, 65, 127, 128, 129, 200, 1000};
	struct data_diff_cfg c;
	struct data_diff_out got, want;
	size_t cuts[64], ncut = 0, n;
	const char *p;
	uint32_t x;
	char err[512];

	if (size < 4)
		return 0;
	c.bare = data[0] & 1 ? SMTP_DATA_BARE_NORMALIZE : SMTP_DATA_BARE_REJECT;
	c.maxv = ((data[0] >> 1) & 7) == 7 ? DATA_DIFF_MAXV : 3 + ((data[0] >> 1) & 7);
	c.max_line = mls[data[1] % (sizeof(mls) / sizeof(mls[0]))];
	c.max_size = data[2];
	x = data[3];
	p = (const char *)data + 4;
	n = size - 4;
	/* Cut points from a small PRNG: often tiny pieces, sometimes large. */
	if (x) {
		size_t off = 0;

		x *= 2654435761u;
		while (ncut < 64) {
			x ^= x << 13;
			x ^= x >> 17;
			x ^= x << 5;
			off += x % 8 == 0 ? x % 300 : x % 9;
			if (off >= n)
				break;
			cuts[ncut++] = off;
		}
	}
	data_diff_out_init(&got, n);
	data_diff_out_init(&want, n);
	data_diff_oracle(&c, p, n, &want);
	if (data_diff_run(&c, SMTP_DATA_IMPL_AUTO, p, n, cuts, ncut, &got, err, sizeof(err)) ||
	    data_diff_check(&c, &got, &want, err, sizeof(err))) {
		fprintf(stderr,
		        "data_fuzz: %s (bare %d maxv %u max_line %u max_size %llu, %zu cuts)\n",
		        err, c.bare, c.maxv, c.max_line, (unsigned long long)c.max_size, ncut);
		abort();
	}
	data_diff_out_fini(&got);
	data_diff_out_fini(&want);
	return 0;
}
