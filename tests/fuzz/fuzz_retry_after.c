/* Fuzz target of the response-header parsers of fc_http.c; every input is handed to both, as a header's value.
 * Retry-After (fc_http_retry_after_parse): a parsed delay is within 0..FC_HTTP_RETRY_AFTER_MAX_S and agrees
 * with a plain reference reading (digits: the number, cut at the cap; otherwise libcurl's date parser, counted
 * from now); later "now"s never give a longer delay; a refused value gives 0.
 * x-ratelimit-reset-* (fc_http_duration_parse): an accepted duration is finite and within
 * 0..FC_HTTP_DURATION_MAX_MS; it survives spaces around it, never a stray byte after it; written again as OpenAI
 * writes durations ("1h2m3.5s", whole ms) or as "<ms>.<6 decimals>ms", it parses back to the same ms; a plain
 * number is that many seconds; a refused value gives -1. */
#include <math.h>
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

/* go_style writes a whole number of ms as OpenAI (Go's time.Duration) does: "0s", "250ms", "1h2m3.5s". */
static void go_style(long long t, char *out, size_t len) {
    long long h = t / 3600000, m = t / 60000 % 60, s = t / 1000 % 60, frac = t % 1000;
    int n = 0, digits = 3;
    if (t < 1000) {
        snprintf(out, len, t ? "%lldms" : "0s", t);
        return;
    }
    for (; frac && frac % 10 == 0; digits--) frac /= 10;
    if (h) n = snprintf(out, len, "%lldh", h);
    if (h || m) n += snprintf(out + n, len - (size_t)n, "%lldm", m);
    snprintf(out + n, len - (size_t)n, frac ? "%lld.%0*llds" : "%llds", s, digits, frac);
}

/* parse_text runs fc_http_duration_parse over a NUL-terminated text; returns its ms, or -1 if refused. */
static double parse_text(const char *text) {
    double ms = -2;
    int rc = fc_http_duration_parse(text, strlen(text), &ms);
    FUZZ_CHECK(rc == FC_OK || (rc == FC_EPARSE && ms == -1), "'%s': rc %d, %g ms", text, rc, ms);
    return rc == FC_OK ? ms : -1;
}

/* check_duration checks the invariants of fc_http_duration_parse on v[0..size). */
static void check_duration(const char *v, size_t size) {
    double ms = -2;
    int rc = fc_http_duration_parse(v, size, &ms);
    char text[96];
    if (rc != FC_OK) {
        FUZZ_CHECK(rc == FC_EPARSE && ms == -1, "refused: rc %d, %g ms", rc, ms);
        return;
    }
    FUZZ_CHECK(isfinite(ms) && ms >= 0 && ms <= FC_HTTP_DURATION_MAX_MS, "%g ms", ms);
    char *w = malloc(size + 4);
    FUZZ_CHECK(w != NULL, "out of memory");
    memcpy(w + 2, v, size);
    w[0] = ' ', w[1] = '\t', w[size + 2] = ' ';
    double again = -2;
    FUZZ_CHECK(fc_http_duration_parse(w, size + 3, &again) == FC_OK && again == ms, "spaced: %g, bare %g", again, ms);
    memcpy(w, v, size);
    w[size] = 'x';
    FUZZ_CHECK(fc_http_duration_parse(w, size + 1, &again) == FC_EPARSE, "a stray byte after it was taken");
    free(w);
    if (ms == floor(ms)) {
        go_style((long long)ms, text, sizeof text);
        FUZZ_CHECK(parse_text(text) == ms, "'%s' gives %g, was %g ms", text, parse_text(text), ms);
    }
    snprintf(text, sizeof text, "%.6fms", ms);
    FUZZ_CHECK(fabs(parse_text(text) - ms) <= 1e-6, "'%s' gives %.9f, was %.9f ms", text, parse_text(text), ms);
    size_t i = 0;
    while (i < size && strchr(" \t0123456789.", v[i])) i++;
    if (i == size) { /* no unit: seconds, less the fraction digits past the ninth (under 1e-6 ms) */
        char *z = strndup(v, size);
        FUZZ_CHECK(z != NULL, "out of memory");
        double want = fmin(strtod(z, NULL) * 1000.0, FC_HTTP_DURATION_MAX_MS);
        FUZZ_CHECK(fabs(ms - want) <= 2e-6 * (want > 1 ? want : 1), "'%s': %.9f ms, strtod %.9f ms", z, ms, want);
        free(z);
    }
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
    check_duration(v, size);
    free(v);
    return 0;
}
