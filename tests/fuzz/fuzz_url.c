/* Fuzz target of the URL parsers: fc_url_parse (fc_http.c), the AMQP URL check and redaction (fc_amqp.c,
 * amqp_parse_url underneath) and the Redis URL parser (fc_redis_new, fc_redis_url_redact) with the sentinel
 * list parser. Input: a selector byte, then text. Selector 0-3: the text is a URL for every parser. Selector
 * 4-7: the text is "user\npassword\nrest" and the URL is scheme://user:password@rest, so that every parser
 * meets a password: then no message and no redacted form may show it. What the parsers make of the rest of
 * the URL is checked first (the same URL with an empty password): a parser may re-encode a host or a path
 * ('%' becomes "%25"), and text derived from those is no leak even when it spells the password. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_amqp.h"
#include "fc_error.h"
#include "fc_http.h"
#include "fc_redis.h"
#include "fuzz_check.h"

/* pct_decode writes s with %XX sequences decoded into out (as long as s, NUL-terminated). */
static void pct_decode(const char *s, char *out) {
    static const char hex[] = "0123456789abcdef0123456789ABCDEF";
    for (; *s; s++) {
        const char *h = s[0] == '%' && s[1] && s[2] ? strchr(hex, s[1]) : NULL, *l = h ? strchr(hex, s[2]) : NULL;
        if (h && l) {
            *out++ = (char)(((h - hex) % 16) << 4 | ((l - hex) % 16));
            s += 2;
        } else {
            *out++ = *s;
        }
    }
    *out = '\0';
}

/* Whether a message may be checked for the password: one long enough to be told apart, found nowhere
 * else in the URL, raw or decoded, nor in anything the parsers print of the URL without it. */
typedef struct secret {
    const char *pw; /* NULL: nothing to check */
    char *decoded;
    int control; /* the parsers run on the URL without the password: note, do not check */
    int elsewhere; /* a control run printed the password's text: it comes from the rest of the URL */
} secret;

static void no_secret(secret *s, const char *text, const char *where) {
    if (!s->pw) return;
    int shown = strstr(text, s->pw) || strstr(text, s->decoded);
    if (s->control) {
        s->elsewhere |= shown;
        return;
    }
    if (s->elsewhere) return;
    FUZZ_CHECK(!shown, "%s shows the password '%s': %s", where, s->pw, text);
}

static void url_parse(const char *url, secret *sec) {
    fc_url u;
    int rc = fc_url_parse(url, &u);
    if (rc != FC_OK) {
        FUZZ_CHECK(rc == FC_EINVAL || rc == FC_ENOMEM, "fc_url_parse rc %d", rc);
        FUZZ_CHECK(!u.host && !u.base && !u.password, "fields left after a failure");
        return;
    }
    FUZZ_CHECK(u.host && u.base && u.path, "host/base/path missing");
    const char *auth = strstr(u.base, "://");
    auth = auth ? auth + 3 : u.base;
    size_t alen = strcspn(auth, "/?#");
    FUZZ_CHECK(!memchr(auth, '@', alen), "base keeps credentials: %s", u.base);
    no_secret(sec, u.base, "fc_url base");
    fc_url_free(&u);
}

static void amqp(const char *url, secret *sec, size_t outlen) {
    char why[256] = "", out[600];
    int rc = fc_amqp_url_check(url, why, sizeof(why));
    FUZZ_CHECK(rc == FC_OK || (rc == FC_EINVAL && *why), "amqp check rc %d", rc);
    no_secret(sec, why, "fc_amqp_url_check");
    memset(out, 'x', sizeof(out));
    rc = fc_amqp_url_redact(url, out, outlen);
    FUZZ_CHECK(rc == FC_OK || rc == FC_EINVAL || rc == FC_ENOMEM, "amqp redact rc %d", rc);
    FUZZ_CHECK(memchr(out, '\0', outlen) && out[outlen] == 'x', "redact wrote outside %zu bytes", outlen);
    no_secret(sec, out, "fc_amqp_url_redact");
    /* a URL of a list that does not parse is a placeholder beside the others, redacted: the password check
     * above is what matters */
}

static void redis(const char *url, secret *sec, const char *sentinels, size_t outlen) {
    char why[256] = "", out[600];
    fc_redis *r = fc_redis_new(url, 1000, why, sizeof(why));
    no_secret(sec, why, "fc_redis_new");
    memset(out, 'x', sizeof(out));
    int rc = fc_redis_url_redact(url, out, outlen);
    FUZZ_CHECK(memchr(out, '\0', outlen) && out[outlen] == 'x', "redact wrote outside %zu bytes", outlen);
    FUZZ_CHECK((rc == FC_OK) == (r != NULL), "redact rc %d but fc_redis_new %s", rc, r ? "took it" : "refused it");
    if (rc != FC_OK)
        FUZZ_CHECK(rc == FC_EINVAL && strncmp(out, FC_REDIS_URL_UNPARSABLE, outlen - 1) == 0, "placeholder %s", out);
    no_secret(sec, out, "fc_redis_url_redact");
    if (r) {
        rc = fc_redis_set_sentinels(r, sentinels, "mymaster", why, sizeof(why));
        FUZZ_CHECK(rc == FC_OK || (rc == FC_EINVAL && *why), "sentinels rc %d", rc);
        no_secret(sec, why, "fc_redis_set_sentinels");
        fc_redis_free(r);
    }
}

/* marked says whether s holds a byte that no fixed text of the parsers' messages holds (they are ASCII
 * without these): a password without one may be a word of such a text ("user" in "amqp://user:password@...")
 * and is not checked. */
static int marked(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80 || strchr("!$&~^|`{}<>", *s)) return 1;
    return 0;
}

/* build_url makes scheme://user:password@rest from "user\npassword\nrest" and, in *others, the same URL with an
 * empty password; sets sec when the password can be checked. Returns the URL (caller frees both) or NULL for an
 * input of another shape. */
static char *build_url(const char *scheme, char *text, secret *sec, char **others_out) {
    char *user = text, *pw = strchr(user, '\n'), *rest = pw ? strchr(pw + 1, '\n') : NULL;
    if (!rest) return NULL;
    *pw++ = '\0';
    *rest++ = '\0';
    size_t n = strlen(scheme) + strlen(user) + strlen(pw) + strlen(rest) + 8;
    char *url = malloc(n), *others = malloc(n), *dec = malloc(n);
    FUZZ_CHECK(url && others && dec, "out of memory");
    snprintf(url, n, "%s://%s:%s@%s", scheme, user, pw, rest);
    snprintf(others, n, "%s://%s:@%s", scheme, user, rest);
    sec->decoded = malloc(strlen(pw) + 1);
    FUZZ_CHECK(sec->decoded != NULL, "out of memory");
    pct_decode(pw, sec->decoded);
    pct_decode(others, dec);
    /* the password must stand out and stay one: a user with '@' '/' '?' '#' would move it into the host or the
     * path, and so would a password with '/' '?' '#' (the authority ends there: it is the path's text then); a
     * ',' splits an AMQP list (a URL of it may then show the defaults, guest:***@localhost) */
    int checkable = strlen(pw) >= 4 && strlen(sec->decoded) >= 4 && marked(pw) && marked(sec->decoded) &&
                    !strpbrk(user, "@/?#,") && !strpbrk(pw, "/?#,") && !strstr(others, pw) && !strstr(dec, pw) &&
                    !strstr(others, sec->decoded) && !strstr(dec, sec->decoded);
    sec->pw = checkable ? pw : NULL;
    *others_out = others;
    free(dec);
    return url;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    char *text = strndup((const char *)data + 1, size - 1);
    FUZZ_CHECK(text != NULL, "out of memory");
    size_t outlen = 1 + (size_t)(data[0] >> 3) * 18; /* 1..559: truncation at every length */
    secret sec = {NULL, NULL, 0, 0};
    if ((data[0] & 7) < 4) {
        url_parse(text, &sec);
        amqp(text, &sec, outlen);
        redis(text, &sec, text, outlen);
    } else {
        static const char *const schemes[4] = {"amqp", "amqps", "redis", "http"};
        char *copy = strdup(text);
        FUZZ_CHECK(copy != NULL, "out of memory");
        char *others = NULL, *url = build_url(schemes[data[0] & 3], copy, &sec, &others);
        if (url) {
            size_t whole = 1 + 31 * 18; /* the largest buffer: no text cut off */
            sec.control = 1;
            url_parse(others, &sec);
            amqp(others, &sec, whole);
            redis(others, &sec, NULL, whole);
            sec.control = 0;
            url_parse(url, &sec);
            amqp(url, &sec, outlen);
            redis(url, &sec, NULL, outlen);
        }
        free(url);
        free(others);
        free(copy);
        free(sec.decoded);
    }
    free(text);
    return 0;
}
