/* Fuzz target of the Retry-After parser (fc_http_retry_after_parse in fc_http.c): any bytes as the header's
 * value. A parsed delay is within 0..FC_HTTP_RETRY_AFTER_MAX_S and agrees with a plain reference reading
 * (digits: the number, cut at the cap; otherwise libcurl's date parser, counted from now); later "now"s never
 * give a longer delay; a refused value gives 0. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "fc_error.h"
#include "fc_http.h"
#include "fuzz_check.h"

#define NOW 1767225600LL /* 2026-01-01T00:00:00Z */

/* reference returns what the header should give, or -1 for a value to refuse. */
static long reference(const char *s, size_t n) {
    while (n && (*s == ' ' || *s == '\t')) s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    if (!n || memchr(s, '\0', n)) return -1;
    if (*s >= '0' && *s <= '9') {
        size_t i = 0;
        unsigned long long v = 0;
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) v = v > 1000000 ? v : v * 10 + (unsigned)(s[i] - '0');
        if (i < n && s[i] == '.')
            for (i++; i < n && s[i] >= '0' && s[i] <= '9';) i++;
        if (i != n) return -1;
        return v > FC_HTTP_RETRY_AFTER_MAX_S ? FC_HTTP_RETRY_AFTER_MAX_S : (long)v;
    }
    if (n >= 64) return -1;
    char d[64];
    memcpy(d, s, n);
    d[n] = '\0';
    time_t t = curl_getdate(d, NULL);
    if (t == -1) return -1;
    long long a = (long long)t - NOW;
    return a <= 0 ? 0 : a > FC_HTTP_RETRY_AFTER_MAX_S ? FC_HTTP_RETRY_AFTER_MAX_S : (long)a;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *v = malloc(size ? size : 1);
    FUZZ_CHECK(v != NULL, "out of memory");
    memcpy(v, data, size);
    long s = -1, later = -1;
    int rc = fc_http_retry_after_parse(v, size, NOW, &s);
    long want = reference(v, size);
    if (rc == FC_OK) {
        FUZZ_CHECK(s >= 0 && s <= FC_HTTP_RETRY_AFTER_MAX_S, "delay %ld", s);
        FUZZ_CHECK(s == want, "delay %ld, reference %ld", s, want);
        FUZZ_CHECK(s * 1000 / 1000 == s, "delay in ms overflows");
        FUZZ_CHECK(fc_http_retry_after_parse(v, size, NOW + 10, &later) == FC_OK && later <= s && later >= s - 10,
                   "10 s later: %ld, now %ld", later, s);
    } else {
        FUZZ_CHECK(rc == FC_EPARSE && s == 0, "rc %d, delay %ld", rc, s);
        FUZZ_CHECK(want == -1, "refused, reference %ld", want);
    }
    free(v);
    return 0;
}
