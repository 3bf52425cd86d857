/* proxy_fuzz: libFuzzer target for the PROXY protocol header parser
 * (core/proxy.c). Besides memory safety, it checks the parser's contract:
 * a header of length n is never longer than the input, every strict prefix
 * of it is PROXY_AGAIN (a header split across reads is never refused), and
 * parsing just the header gives the same length and the same result. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_hdr h, h2;
	int n = proxy_parse((const char *)data, size, &h);

	if (n == PROXY_AGAIN || n == PROXY_BAD)
		return 0;
	if (n <= 0 || (size_t)n > size || (size_t)n > PROXY_MAX)
		abort();
	if (proxy_parse((const char *)data, (size_t)n, &h2) != n || memcmp(&h, &h2, sizeof(h)))
		abort();
	for (size_t k = 0; k < (size_t)n; k++)
		if (proxy_parse((const char *)data, k, &h2) != PROXY_AGAIN)
			abort();
	return 0;
}
