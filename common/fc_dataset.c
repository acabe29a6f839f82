/* A streaming dataset reader: physical lines come from a fixed input buffer, records are decoded into one
 * reusable field buffer, so memory depends on the longest record (capped), never on the file size. */
#include "fc_dataset.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "fc_buf.h"
#include "fc_error.h"

#define DS_INBUF 65536
#define DS_JSON_DEPTH 32
#define DS_QUOTE_MAX 40 /* bytes of a longer bad value quoted in a reason, then "..." */
#define DS_SEEN_MAX ((size_t)(FC_DATASET_POSITION_MAX / 8 + 1))

/* CSV scanner states; CSV_QUOTE means a '"' was seen inside a quoted field (end of field or first of a pair). */
enum { CSV_START, CSV_PLAIN, CSV_QUOTED, CSV_QUOTE };

typedef struct ds_span {
    size_t off; /* into fbuf.data; the field is NUL-terminated there */
    size_t len; /* bytes, excluding the NUL; the field may itself hold NULs (then it is rejected) */
} ds_span;

struct fc_dataset {
    FILE *fp;
    int format;
    fc_columns cols;
    int err;        /* sticky FC_EIO / FC_ENOMEM */
    long line;      /* physical lines consumed so far */
    long rows;      /* data records seen (good and bad) */
    long rec_line;  /* first physical line of the current record */
    int bad;        /* the current record is bad; why holds the reason */
    char why[200];
    fc_buf raw;     /* the current physical line, without LF/CRLF */
    int overflow;   /* raw was cut at FC_DATASET_MAX_RECORD bytes */
    fc_buf fbuf;    /* the current record's decoded fields, each NUL-terminated; fbuf.len = bytes used */
    ds_span *span;
    size_t nspan, capspan;
    int cstate;     /* CSV scanner state, kept across the physical lines of one record */
    size_t fstart;  /* offset in fbuf of the field being decoded */
    char **hdr;     /* CSV/TSV column names, owned */
    size_t nhdr;
    long ipos, iterm, itype; /* header indexes of the mapped columns; itype -1 if absent */
    unsigned char *seen;     /* bitmap of positions of good rows */
    size_t nseen;            /* bytes in seen */
    struct json_tokener *tok;
    size_t in_pos, in_len;
    int in_eof;
    int (*wait)(void *ud, int fd); /* called before each read(2) of the descriptor; NULL = none */
    void *wait_ud;
    char in[DS_INBUF];
};

/* ---- small helpers ---- */

/* utf8_unit returns the length (1..4) of the well-formed UTF-8 character at s[0..n), n > 0, or 0 if it is
 * ill-formed (overlong, surrogate, above U+10FFFF, truncated or a stray byte). NUL counts as a character. */
static size_t utf8_unit(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t need = 2;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) lo = 0xA0;
    else if (c == 0xED) hi = 0x9F;
    else if (c == 0xF0) need = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else if (c == 0xF4) need = 3, hi = 0x8F;
    else if (c < 0xE1 || c > 0xEF) return 0;
    if (n - 1 < need || s[1] < lo || s[1] > hi) return 0;
    for (size_t k = 2; k <= need; k++)
        if ((s[k] & 0xC0) != 0x80) return 0;
    return need + 1;
}

/* utf8_check returns 0 if s[0..n) is well-formed UTF-8 without NUL bytes, 1 if it holds a NUL, -1 if it is
 * ill-formed. */
static int utf8_check(const unsigned char *s, size_t n) {
    for (size_t i = 0, k; i < n; i += k) {
        /* Most bytes are ASCII: step over 8 at a time when none has its high bit set and none is 0 (the
         * classic test: v - 0x01..01 borrows into a byte's high bit only where that byte was 0), then one at
         * a time, without a call to utf8_unit each. */
        uint64_t v;
        if (n - i >= 8 && (memcpy(&v, s + i, 8), ((v | (v - 0x0101010101010101u)) & 0x8080808080808080u) == 0)) {
            k = 8;
            continue;
        }
        if (s[i] - 1u < 0x7Fu) {
            k = 1;
            continue;
        }
        if (s[i] == 0) return 1;
        if (!(k = utf8_unit(s + i, n - i))) return -1;
    }
    return 0;
}

#define UTF8_REPLACEMENT "\xEF\xBF\xBD" /* U+FFFD, written for each ill-formed byte */

/* utf8_fit copies s[0..n) into dst (dstlen bytes, always NUL-terminated if dstlen > 0) as well-formed UTF-8:
 * each ill-formed byte becomes U+FFFD, and a text that does not fit is cut between two characters and ends
 * with "...". Reasons go into JSON reports and logs, which must stay valid UTF-8 whatever the input held. */
static void utf8_fit(char *dst, size_t dstlen, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t need = 0, o = 0, k, w;
    for (size_t i = 0; i < n; i += k ? k : 1) need += (k = utf8_unit(u + i, n - i)) ? k : 3;
    int cut = need >= dstlen;
    size_t room = !cut ? need : dstlen > 4 ? dstlen - 4 : 0; /* 4: "..." and the NUL */
    for (size_t i = 0; i < n; i += k ? k : 1) {
        k = utf8_unit(u + i, n - i);
        w = k ? k : 3;
        if (o + w > room) break;
        memcpy(dst + o, k ? s + i : UTF8_REPLACEMENT, w);
        o += w;
    }
    if (cut && dstlen > 4) memcpy(dst + o, "...", 3), o += 3;
    if (dstlen) dst[o] = '\0';
}

/* vformat formats a message into dst through utf8_fit, so that no cut falls inside a character. */
static void vformat(char *dst, size_t dstlen, const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    char *tmp = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!tmp) {
        utf8_fit(dst, dstlen, "(message lost: out of memory)", 29);
        return;
    }
    vsnprintf(tmp, (size_t)n + 1, fmt, ap);
    utf8_fit(dst, dstlen, tmp, (size_t)n);
    free(tmp);
}

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vformat(err, errlen, fmt, ap);
    va_end(ap);
}

/* ds_bad records the reason the current record is bad (the first one wins); returns FC_EPARSE. */
static int ds_bad(fc_dataset *ds, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int ds_bad(fc_dataset *ds, const char *fmt, ...) {
    if (ds->bad) return FC_EPARSE;
    va_list ap;
    va_start(ap, fmt);
    vformat(ds->why, sizeof(ds->why), fmt, ap);
    va_end(ap);
    ds->bad = 1;
    return FC_EPARSE;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!is_space(s[i])) return 0;
    return 1;
}

/* trim narrows [*s, *s + *n) to exclude leading and trailing ASCII white space. */
static void trim(const char **s, size_t *n) {
    while (*n && is_space(**s)) (*s)++, (*n)--;
    while (*n && is_space((*s)[*n - 1])) (*n)--;
}

/* check_field validates a field's bytes; returns 0 or FC_EPARSE with the reason naming the field. */
static int check_field(fc_dataset *ds, const char *s, size_t n, const char *name) {
    int rc = utf8_check((const unsigned char *)s, n);
    if (rc < 0) return ds_bad(ds, "invalid UTF-8 in field '%s'", name);
    if (rc > 0) return ds_bad(ds, "NUL byte in field '%s'", name);
    return FC_OK;
}

/* ---- format names ---- */

int fc_format_from_name(const char *name) {
    if (!name) return FC_EINVAL;
    if (strcasecmp(name, "csv") == 0) return FC_FORMAT_CSV;
    if (strcasecmp(name, "tsv") == 0 || strcasecmp(name, "tab") == 0) return FC_FORMAT_TSV;
    if (strcasecmp(name, "jsonl") == 0 || strcasecmp(name, "ndjson") == 0) return FC_FORMAT_JSONL;
    return FC_EINVAL;
}

int fc_format_from_path(const char *path) {
    if (!path) return FC_EINVAL;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    if (!dot || dot == base) return FC_EINVAL;
    return fc_format_from_name(dot + 1);
}

/* ---- column mapping ---- */

void fc_columns_default(fc_columns *c) {
    memset(c, 0, sizeof(*c));
    strcpy(c->position, "position");
    strcpy(c->term, "term");
    strcpy(c->type, "type");
}

static const char *const column_keys[3] = {"position", "term", "type"};

static char *column_slot(fc_columns *c, int k) { return k == 0 ? c->position : k == 1 ? c->term : c->type; }

/* columns_check returns 0 if the mapping is usable, else FC_EINVAL with a message in err. */
static int columns_check(const fc_columns *c, char *err, size_t errlen) {
    const char *v[3] = {c->position, c->term, c->type};
    for (int k = 0; k < 3; k++) {
        if (!memchr(v[k], '\0', sizeof(c->position))) {
            set_err(err, errlen, "column name for '%s' is not terminated", column_keys[k]);
            return FC_EINVAL;
        }
        if (k < 2 && !v[k][0]) {
            set_err(err, errlen, "empty column name for '%s'", column_keys[k]);
            return FC_EINVAL;
        }
    }
    for (int a = 0; a < 3; a++)
        for (int b = a + 1; b < 3; b++)
            if (v[b][0] && strcmp(v[a], v[b]) == 0) {
                set_err(err, errlen, "%s and %s map to the same column '%s'", column_keys[a], column_keys[b], v[a]);
                return FC_EINVAL;
            }
    return FC_OK;
}

/* columns_item applies one "key=name" item s[0..n) to c; returns 0 or FC_EINVAL with a message in err. */
static int columns_item(const char *s, size_t n, fc_columns *c, int given[3], char *err, size_t errlen) {
    trim(&s, &n);
    const char *eq = memchr(s, '=', n);
    if (!eq) {
        set_err(err, errlen, "bad column mapping item '%.*s': expected key=name", (int)n, s);
        return FC_EINVAL;
    }
    const char *key = s, *name = eq + 1;
    size_t klen = (size_t)(eq - s), nlen = n - klen - 1;
    trim(&key, &klen);
    trim(&name, &nlen);
    int k = 0;
    while (k < 3 && !(strlen(column_keys[k]) == klen && memcmp(column_keys[k], key, klen) == 0)) k++;
    if (k == 3) {
        set_err(err, errlen, "unknown column key '%.*s' (expected position, term or type)", (int)klen, key);
        return FC_EINVAL;
    }
    if (given[k]++) {
        set_err(err, errlen, "column key '%s' given twice", column_keys[k]);
        return FC_EINVAL;
    }
    if (nlen >= sizeof(c->position)) {
        set_err(err, errlen, "column name for '%s' longer than %zu bytes", column_keys[k], sizeof(c->position) - 1);
        return FC_EINVAL;
    }
    memcpy(column_slot(c, k), name, nlen);
    column_slot(c, k)[nlen] = '\0';
    return FC_OK;
}

int fc_columns_parse(const char *spec, fc_columns *c, char *err, size_t errlen) {
    fc_columns_default(c);
    if (!spec || is_blank(spec, strlen(spec))) return FC_OK;
    int given[3] = {0, 0, 0};
    for (const char *p = spec;;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        int rc = columns_item(p, n, c, given, err, errlen);
        if (rc != FC_OK) return rc;
        if (!end) break;
        p = end + 1;
    }
    return columns_check(c, err, errlen);
}

/* ---- physical lines ---- */

/* ds_fill refills the input buffer with what is available; returns 1 if bytes are available, 0 at end of input,
 * FC_EIO or the wait hook's error. A FILE with a descriptor is read with read(2): fread would wait until the whole buffer is full, so
 * rows from a slow pipe would only be handled 64 KB at a time. A FILE without one (fmemopen) goes through stdio. */
static int ds_fill(fc_dataset *ds) {
    if (ds->in_eof) return 0;
    ds->in_pos = 0;
    ds->in_len = 0;
    int fd = fileno(ds->fp);
    if (fd < 0) {
        ds->in_len = fread(ds->in, 1, sizeof(ds->in), ds->fp);
        if (ds->in_len > 0) return 1;
        if (ferror(ds->fp)) return FC_EIO;
        ds->in_eof = 1;
        return 0;
    }
    if (ds->wait) {
        int rc = ds->wait(ds->wait_ud, fd);
        if (rc < 0) return rc;
    }
    ssize_t n;
    do n = read(fd, ds->in, sizeof(ds->in));
    while (n < 0 && errno == EINTR);
    if (n < 0) return FC_EIO;
    if (n == 0) {
        ds->in_eof = 1;
        return 0;
    }
    ds->in_len = (size_t)n;
    return 1;
}

/* ds_keep appends up to the record limit of p[0..n) to raw, flagging overflow; returns 0 or FC_ENOMEM. */
static int ds_keep(fc_dataset *ds, const char *p, size_t n) {
    size_t room = FC_DATASET_MAX_RECORD - ds->raw.len;
    if (n > room) {
        n = room;
        ds->overflow = 1;
    }
    return n ? fc_buf_append(&ds->raw, p, n) : FC_OK;
}

/* ds_read_line replaces raw with the next physical line, without its LF or CRLF; returns 1, 0 at end of input,
 * FC_EIO or FC_ENOMEM. */
static int ds_read_line(fc_dataset *ds) {
    fc_buf_reset(&ds->raw);
    ds->overflow = 0;
    int got = 0;
    for (;;) {
        if (ds->in_pos == ds->in_len) {
            int rc = ds_fill(ds);
            if (rc < 0) return rc;
            if (rc == 0) break;
        }
        const char *p = ds->in + ds->in_pos;
        size_t avail = ds->in_len - ds->in_pos;
        const char *nl = memchr(p, '\n', avail);
        size_t n = nl ? (size_t)(nl - p) : avail;
        got = 1;
        if (ds_keep(ds, p, n) != FC_OK) return FC_ENOMEM;
        ds->in_pos += n + (nl != NULL);
        if (nl) break;
    }
    if (!got) return 0;
    /* A UTF-8 BOM opens the input: dropped from the first line here, not from the first read, which a pipe
     * may end inside it. */
    if (++ds->line == 1 && ds->raw.len >= 3 && memcmp(ds->raw.data, "\xEF\xBB\xBF", 3) == 0) {
        memmove(ds->raw.data, ds->raw.data + 3, ds->raw.len - 3);
        ds->raw.len -= 3;
        ds->raw.data[ds->raw.len] = '\0';
    }
    if (ds->raw.len && ds->raw.data[ds->raw.len - 1] == '\r') ds->raw.data[--ds->raw.len] = '\0';
    return 1;
}

/* ---- fields ---- */

/* ds_end_field closes the field being written at *out (NUL-terminates it, records its span); returns 0 or
 * FC_ENOMEM. */
static int ds_end_field(fc_dataset *ds, char **out) {
    *(*out)++ = '\0';
    size_t end = (size_t)(*out - ds->fbuf.data);
    if (ds->nspan == ds->capspan) {
        size_t cap = ds->capspan ? ds->capspan * 2 : 32;
        ds_span *s = realloc(ds->span, cap * sizeof(*s));
        if (!s) return FC_ENOMEM;
        ds->span = s;
        ds->capspan = cap;
    }
    ds->span[ds->nspan].off = ds->fstart;
    ds->span[ds->nspan].len = end - ds->fstart - 1;
    ds->nspan++;
    ds->fstart = end;
    return FC_OK;
}

static const char *field(const fc_dataset *ds, size_t i) { return ds->fbuf.data + ds->span[i].off; }

/* csv_step feeds one byte to the CSV scanner, writing decoded bytes at *out; returns 0 or FC_ENOMEM. */
static int csv_step(fc_dataset *ds, char c, char **out) {
    int st = ds->cstate;
    if (c == ',' && st != CSV_QUOTED) {
        ds->cstate = CSV_START;
        return ds_end_field(ds, out);
    }
    if (c == '"' && (st == CSV_START || st == CSV_QUOTE)) {
        if (st == CSV_QUOTE) *(*out)++ = '"'; /* a doubled quote */
        ds->cstate = CSV_QUOTED;
    } else if (c == '"' && st == CSV_QUOTED) {
        ds->cstate = CSV_QUOTE;
    } else {
        if (st == CSV_QUOTE) ds_bad(ds, "unexpected character after closing quote in field %zu", ds->nspan + 1);
        *(*out)++ = c;
        if (st != CSV_QUOTED) ds->cstate = CSV_PLAIN;
    }
    return FC_OK;
}

/* byte_hits8 marks the bytes of v equal to c: a SWAR test, (x - 0x01..01) & ~x & 0x80..80 with x = v ^ (c in
 * every byte) sets the high bit of each byte of x that is 0. Bytes above the first match may be marked
 * wrongly (a borrow), the first one marked is always a match: only the lowest mark is used. */
static uint64_t byte_hits8(uint64_t v, unsigned char c) {
    uint64_t x = v ^ (0x0101010101010101u * c);
    return (x - 0x0101010101010101u) & ~x & 0x8080808080808080u;
}

/* csv_scan decodes raw into the record's fields; returns 1 if the record goes on (inside quotes) on the next
 * physical line, 0 if it is complete, or FC_ENOMEM. */
static int csv_scan(fc_dataset *ds) {
    /* each input byte yields at most one output byte; plus the last NUL and a newline inside quotes */
    if (fc_buf_reserve(&ds->fbuf, ds->raw.len + 2) != FC_OK) return FC_ENOMEM;
    char *out = ds->fbuf.data + ds->fbuf.len;
    const char *s = ds->raw.data;
    int st = ds->cstate; /* a local: the writes through out (a char *) would make the compiler reload ds->cstate */
    for (size_t i = 0, n = ds->raw.len; i < n; i++) {
        /* 8 bytes at a time up to the next quote, or comma outside quotes (the bytes in between are copied
         * as they are). All 8 are stored, the bytes past the run written over next: as no input byte yields
         * more than one output byte, out + 8 stays within the room reserved above while i + 8 <= n. */
        while (n - i >= 8 && st != CSV_QUOTE) {
            uint64_t v;
            memcpy(&v, s + i, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
            v = __builtin_bswap64(v); /* byte k of the text in bits 8k.., as below */
#endif
            uint64_t hits = byte_hits8(v, '"') | (st == CSV_QUOTED ? 0 : byte_hits8(v, ','));
            size_t run = hits ? (size_t)__builtin_ctzll(hits) / 8 : 8; /* byte k of the text is bits 8k.. */
            memcpy(out, s + i, 8);
            out += run;
            i += run;
            if (run && st == CSV_START) st = CSV_PLAIN;
            if (run < 8) break;
        }
        if (i == n) break;
        char c = s[i];
        /* Most bytes are copied as they are, inside a field: done here, as csv_step would. */
        if (c != '"' && (st == CSV_QUOTED || (c != ',' && st != CSV_QUOTE))) {
            *out++ = c;
            if (st == CSV_START) st = CSV_PLAIN;
            continue;
        }
        ds->cstate = st;
        if (csv_step(ds, c, &out) != FC_OK) return FC_ENOMEM;
        st = ds->cstate;
    }
    ds->cstate = st;
    int more = ds->cstate == CSV_QUOTED;
    if (more) *out++ = '\n';
    else if (ds_end_field(ds, &out) != FC_OK) return FC_ENOMEM;
    ds->fbuf.len = (size_t)(out - ds->fbuf.data);
    return more;
}

/* csv_record decodes one CSV record starting with the line in raw, reading more lines while inside quotes;
 * returns 1 (ds->bad set if the record is malformed), FC_EIO or FC_ENOMEM. */
static int csv_record(fc_dataset *ds) {
    ds->cstate = CSV_START;
    for (;;) {
        int rc = csv_scan(ds);
        if (rc < 0) return rc;
        if (ds->overflow || ds->fbuf.len > FC_DATASET_MAX_RECORD) {
            ds_bad(ds, "record longer than %d bytes%s", FC_DATASET_MAX_RECORD,
                   rc ? " (unterminated quoted field?)" : "");
            return 1;
        }
        if (rc == 0) return 1;
        rc = ds_read_line(ds);
        if (rc < 0) return rc;
        if (rc == 0) {
            ds_bad(ds, "unterminated quoted field");
            return 1;
        }
    }
}

/* tsv_unescape returns the byte a backslash escape letter stands for, or 0 if it is not an escape. */
static char tsv_unescape(char c) {
    switch (c) {
    case 't': return '\t';
    case 'n': return '\n';
    case 'r': return '\r';
    case '\\': return '\\';
    default: return 0;
    }
}

/* tsv_record splits raw on tabs, decoding \t \n \r \\ escapes; returns 1 or FC_ENOMEM. */
static int tsv_record(fc_dataset *ds) {
    if (fc_buf_reserve(&ds->fbuf, ds->raw.len + 1) != FC_OK) return FC_ENOMEM;
    const char *s = ds->raw.data;
    size_t n = ds->raw.len;
    char *out = ds->fbuf.data;
    for (size_t i = 0; i < n; i++) {
        char e = (s[i] == '\\' && i + 1 < n) ? tsv_unescape(s[i + 1]) : 0;
        if (s[i] == '\t') {
            if (ds_end_field(ds, &out) != FC_OK) return FC_ENOMEM;
        } else if (e) {
            *out++ = e;
            i++;
        } else {
            *out++ = s[i];
        }
    }
    if (ds_end_field(ds, &out) != FC_OK) return FC_ENOMEM;
    ds->fbuf.len = (size_t)(out - ds->fbuf.data);
    return 1;
}

/* ds_read_record reads the next non-blank record: fields in span/fbuf for CSV/TSV, the line in raw for JSONL.
 * Returns 1 (ds->bad set if malformed), 0 at end of input, FC_EIO or FC_ENOMEM. */
static int ds_read_record(fc_dataset *ds) {
    int rc;
    do {
        rc = ds_read_line(ds);
        if (rc <= 0) return rc;
    } while (is_blank(ds->raw.data, ds->raw.len));
    ds->rec_line = ds->line;
    ds->bad = 0;
    ds->nspan = 0;
    ds->fstart = 0;
    fc_buf_reset(&ds->fbuf);
    if (ds->format == FC_FORMAT_CSV) return csv_record(ds);
    if (ds->overflow) return ds_bad(ds, "record longer than %d bytes", FC_DATASET_MAX_RECORD), 1;
    return ds->format == FC_FORMAT_TSV ? tsv_record(ds) : 1;
}

/* ---- header ---- */

static long header_find(const fc_dataset *ds, const char *name) {
    for (size_t i = 0; i < ds->nhdr; i++)
        if (strcmp(ds->hdr[i], name) == 0) return (long)i;
    return -1;
}

/* header_missing writes "column 'X' (role) not found in header; columns are: a, b" into err. */
static void header_missing(const fc_dataset *ds, const char *name, const char *role, char *err, size_t errlen) {
    fc_buf b = {0};
    for (size_t i = 0; i < ds->nhdr; i++) fc_buf_printf(&b, "%s%s", i ? ", " : "", ds->hdr[i]);
    set_err(err, errlen, "column '%s' (%s) not found in header; columns are: %s", name, role, b.data ? b.data : "");
    fc_buf_free(&b);
}

/* header_names copies the column names of the record just read; returns 0, FC_EPARSE or FC_ENOMEM. */
static int header_names(fc_dataset *ds, char *err, size_t errlen) {
    ds->hdr = calloc(ds->nspan, sizeof(*ds->hdr));
    if (!ds->hdr) return FC_ENOMEM;
    ds->nhdr = ds->nspan;
    for (size_t i = 0; i < ds->nspan; i++) {
        if (utf8_check((const unsigned char *)field(ds, i), ds->span[i].len) != 0) {
            set_err(err, errlen, "header (line %ld): column %zu is not valid UTF-8", ds->rec_line, i + 1);
            return FC_EPARSE;
        }
        ds->hdr[i] = strdup(field(ds, i));
        if (!ds->hdr[i]) return FC_ENOMEM;
    }
    return FC_OK;
}

/* ds_read_header reads the CSV/TSV header and maps the columns; returns 0 or an FC_E* code with err set. */
static int ds_read_header(fc_dataset *ds, char *err, size_t errlen) {
    int rc = ds_read_record(ds);
    if (rc == 0) set_err(err, errlen, "empty input: no header line");
    if (rc < 0) set_err(err, errlen, "reading the header: %s", fc_strerror(rc));
    if (rc <= 0) return rc ? rc : FC_EPARSE;
    if (ds->bad) {
        set_err(err, errlen, "bad header (line %ld): %s", ds->rec_line, ds->why);
        return FC_EPARSE;
    }
    rc = header_names(ds, err, errlen);
    if (rc != FC_OK) return rc;
    ds->ipos = header_find(ds, ds->cols.position);
    ds->iterm = header_find(ds, ds->cols.term);
    ds->itype = ds->cols.type[0] ? header_find(ds, ds->cols.type) : -1;
    if (ds->ipos < 0) header_missing(ds, ds->cols.position, "position", err, errlen);
    else if (ds->iterm < 0) header_missing(ds, ds->cols.term, "term", err, errlen);
    return ds->ipos < 0 || ds->iterm < 0 ? FC_EPARSE : FC_OK;
}

/* ---- positions ---- */

/* parse_position reads a position from text s[0..n) (ASCII spaces around it ignored); returns 0 or FC_EPARSE. */
static int parse_position(fc_dataset *ds, const char *s, size_t n, long long *pos) {
    char q[DS_QUOTE_MAX + 4];
    trim(&s, &n);
    if (n == 0) return ds_bad(ds, "empty position");
    long long v = 0;
    size_t i = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        if (v <= FC_DATASET_POSITION_MAX) v = v * 10 + (s[i] - '0');
        i++;
    }
    if (i == n && v > 0 && v <= FC_DATASET_POSITION_MAX) {
        *pos = v;
        return FC_OK;
    }
    utf8_fit(q, sizeof(q), s, n); /* quoted only in a reason: a good row pays nothing for it */
    if (i < n || v == 0) return ds_bad(ds, "position '%s' is not a positive integer", q);
    return ds_bad(ds, "position '%s' is out of range (1..%lld)", q, FC_DATASET_POSITION_MAX);
}

static int seen_has(const fc_dataset *ds, long long pos) {
    size_t i = (size_t)pos >> 3;
    return i < ds->nseen && (ds->seen[i] & (1u << (pos & 7)));
}

/* seen_add marks pos seen, growing the bitmap (at most DS_SEEN_MAX bytes); returns 0 or FC_ENOMEM. */
static int seen_add(fc_dataset *ds, long long pos) {
    size_t i = (size_t)pos >> 3;
    if (i >= ds->nseen) {
        size_t n = ds->nseen * 2 > DS_SEEN_MAX ? DS_SEEN_MAX : ds->nseen * 2;
        if (n < i + 1) n = i + 1;
        if (n < 1024) n = 1024;
        unsigned char *p = realloc(ds->seen, n);
        if (!p) return FC_ENOMEM;
        memset(p + ds->nseen, 0, n - ds->nseen);
        ds->seen = p;
        ds->nseen = n;
    }
    ds->seen[i] |= (unsigned char)(1u << (pos & 7));
    return FC_OK;
}

/* ---- items ---- */

/* A field's text and length (its bytes hold no NUL once check_field passed). */
typedef struct ds_text {
    const char *s;
    size_t n;
} ds_text;

static ds_text text_of(const char *s) { return (ds_text){s, strlen(s)}; }

/* item_fill checks position, term and type texts and sets them in it (which then owns copies); marks the
 * position seen. Returns 0, FC_EPARSE (nothing allocated in it) or FC_ENOMEM. */
static int item_fill(fc_dataset *ds, ds_text pos, ds_text term_t, ds_text type_t, fc_item *it) {
    long long p = 0;
    int rc = parse_position(ds, pos.s, pos.n, &p);
    if (rc != FC_OK) return rc;
    const char *term = term_t.s, *type = type_t.s;
    size_t tn = term_t.n, yn = type_t.n;
    trim(&term, &tn);
    trim(&type, &yn);
    if (tn == 0) return ds_bad(ds, "empty term");
    if (seen_has(ds, p)) return ds_bad(ds, "duplicate position %lld", p);
    if (seen_add(ds, p) != FC_OK) return FC_ENOMEM;
    it->position = p;
    it->line = ds->rec_line;
    it->term = strndup(term, tn);
    it->type = strndup(type, yn);
    return it->term && it->type ? FC_OK : FC_ENOMEM;
}

/* span_text returns field i of the record, its length known from its span (no strlen). */
static ds_text span_text(const fc_dataset *ds, size_t i) { return (ds_text){field(ds, i), ds->span[i].len}; }

/* row_build makes an item from the CSV/TSV record in span/fbuf; returns 0, FC_EPARSE or FC_ENOMEM. */
static int row_build(fc_dataset *ds, fc_item *it) {
    if (ds->nspan != ds->nhdr) return ds_bad(ds, "expected %zu fields, got %zu", ds->nhdr, ds->nspan);
    for (size_t i = 0; i < ds->nspan; i++) {
        int rc = check_field(ds, field(ds, i), ds->span[i].len, ds->hdr[i]);
        if (rc != FC_OK) return rc;
    }
    ds_text type = ds->itype >= 0 ? span_text(ds, (size_t)ds->itype) : text_of("");
    int rc = item_fill(ds, span_text(ds, (size_t)ds->ipos), span_text(ds, (size_t)ds->iterm), type, it);
    for (size_t i = 0; rc == FC_OK && i < ds->nspan; i++) {
        if ((long)i == ds->ipos || (long)i == ds->iterm || (long)i == ds->itype) continue;
        rc = fc_item_add_extra(it, ds->hdr[i], field(ds, i));
    }
    return rc;
}

/* json_text gets the text of a top-level value: *out is NULL if the key is absent or null, the string for a
 * string, number or boolean. Returns 0, or FC_EPARSE for an object/array or a string holding a NUL. */
static int json_text(fc_dataset *ds, struct json_object *obj, const char *key, const char **out) {
    struct json_object *v = NULL;
    *out = NULL;
    if (!json_object_object_get_ex(obj, key, &v) || !v) return FC_OK;
    enum json_type t = json_object_get_type(v);
    if (t == json_type_object || t == json_type_array)
        return ds_bad(ds, "field '%s' is not a string or number", key);
    *out = json_object_get_string(v);
    if (t == json_type_string) return check_field(ds, *out, (size_t)json_object_get_string_len(v), key);
    return FC_OK;
}

/* json_extras appends every key not mapped to position/term/type to it (objects and arrays as JSON text);
 * returns 0, FC_EPARSE (a string with a NUL) or FC_ENOMEM. */
static int json_extras(fc_dataset *ds, struct json_object *obj, fc_item *it) {
    struct json_object_iterator i = json_object_iter_begin(obj), end = json_object_iter_end(obj);
    for (; !json_object_iter_equal(&i, &end); json_object_iter_next(&i)) {
        const char *key = json_object_iter_peek_name(&i);
        struct json_object *v = json_object_iter_peek_value(&i);
        if (!strcmp(key, ds->cols.position) || !strcmp(key, ds->cols.term)) continue;
        if (ds->cols.type[0] && !strcmp(key, ds->cols.type)) continue;
        enum json_type t = json_object_get_type(v);
        const char *text = !v ? ""
                           : (t == json_type_object || t == json_type_array)
                               ? json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
                               : json_object_get_string(v);
        int rc = t == json_type_string ? check_field(ds, text, (size_t)json_object_get_string_len(v), key) : FC_OK;
        if (rc == FC_OK) rc = fc_item_add_extra(it, key, text ? text : "");
        if (rc != FC_OK) return rc;
    }
    return FC_OK;
}

/* json_item makes an item from a parsed JSON object; returns 0, FC_EPARSE or FC_ENOMEM. */
static int json_item(fc_dataset *ds, struct json_object *obj, fc_item *it) {
    const char *pos = NULL, *term = NULL, *type = NULL;
    int rc = json_text(ds, obj, ds->cols.position, &pos);
    if (rc == FC_OK) rc = json_text(ds, obj, ds->cols.term, &term);
    if (rc == FC_OK && ds->cols.type[0]) rc = json_text(ds, obj, ds->cols.type, &type);
    if (rc != FC_OK) return rc;
    if (!pos) return ds_bad(ds, "missing position (key '%s')", ds->cols.position);
    if (!term) return ds_bad(ds, "missing term (key '%s')", ds->cols.term);
    /* check every extra before marking the position seen, so a bad row never claims its position */
    fc_item tmp = {0};
    rc = json_extras(ds, obj, &tmp);
    if (rc == FC_OK) rc = item_fill(ds, text_of(pos), text_of(term), text_of(type ? type : ""), it);
    if (rc == FC_OK) {
        it->extra = tmp.extra;
        it->nextra = tmp.nextra;
        tmp.extra = NULL;
        tmp.nextra = 0;
    }
    fc_item_clear(&tmp);
    return rc;
}

/* json_build parses the JSON line in raw into an item; returns 0, FC_EPARSE or FC_ENOMEM. */
static int json_build(fc_dataset *ds, fc_item *it) {
    int rc = utf8_check((const unsigned char *)ds->raw.data, ds->raw.len);
    if (rc < 0) return ds_bad(ds, "invalid UTF-8 in JSON line");
    if (rc > 0) return ds_bad(ds, "NUL byte in JSON line");
    json_tokener_reset(ds->tok);
    /* len + 1 passes the terminating NUL so a complete document is not reported as "continue" */
    struct json_object *obj = json_tokener_parse_ex(ds->tok, ds->raw.data, (int)ds->raw.len + 1);
    enum json_tokener_error jerr = json_tokener_get_error(ds->tok);
    if (jerr != json_tokener_success) return ds_bad(ds, "invalid JSON: %s", json_tokener_error_desc(jerr));
    if (!json_object_is_type(obj, json_type_object)) rc = ds_bad(ds, "not a JSON object");
    else rc = json_item(ds, obj, it);
    json_object_put(obj);
    return rc;
}

/* ---- public ---- */

fc_dataset *fc_dataset_open(FILE *fp, int format, const fc_columns *cols, char *err, size_t errlen) {
    fc_columns def;
    fc_columns_default(&def);
    if (!fp || format < FC_FORMAT_CSV || format > FC_FORMAT_JSONL) {
        set_err(err, errlen, "invalid argument: no input or unknown format");
        return NULL;
    }
    if (columns_check(cols ? cols : &def, err, errlen) != FC_OK) return NULL;
    int rc;
    fc_dataset *ds = calloc(1, sizeof(*ds));
    if (!ds) goto nomem;
    ds->fp = fp;
    ds->format = format;
    ds->cols = cols ? *cols : def;
    ds->ipos = ds->iterm = ds->itype = -1;
    if (fc_buf_reserve(&ds->raw, 4096) != FC_OK || fc_buf_reserve(&ds->fbuf, 4096) != FC_OK) goto nomem;
    rc = ds_fill(ds);
    if (rc < 0) {
        set_err(err, errlen, "reading the input: %s", strerror(errno));
        goto fail;
    }
    if (format == FC_FORMAT_JSONL) {
        ds->tok = json_tokener_new_ex(DS_JSON_DEPTH);
        if (!ds->tok) goto nomem;
        json_tokener_set_flags(ds->tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    } else if (ds_read_header(ds, err, errlen) != FC_OK) {
        goto fail;
    }
    return ds;
nomem:
    set_err(err, errlen, "out of memory");
fail:
    fc_dataset_close(ds);
    return NULL;
}

int fc_dataset_next(fc_dataset *ds, fc_item *item, fc_row_error *rerr) {
    if (ds->err) return ds->err;
    int rc = ds_read_record(ds);
    if (rc < 0) return ds->err = rc;
    if (rc == 0) return 0;
    ds->rows++;
    fc_item tmp = {0};
    if (ds->bad) rc = FC_EPARSE;
    else rc = ds->format == FC_FORMAT_JSONL ? json_build(ds, &tmp) : row_build(ds, &tmp);
    if (rc == FC_OK) {
        *item = tmp;
        return 1;
    }
    fc_item_clear(&tmp);
    if (rc != FC_EPARSE) return ds->err = rc;
    if (rerr) {
        rerr->line = ds->rec_line;
        set_err(rerr->reason, sizeof(rerr->reason), "line %ld: %s", ds->rec_line, ds->why);
    }
    return FC_EPARSE;
}

void fc_dataset_set_wait(fc_dataset *ds, int (*fn)(void *ud, int fd), void *ud) {
    ds->wait = fn;
    ds->wait_ud = ud;
}

long fc_dataset_rows(const fc_dataset *ds) { return ds->rows; }

long fc_dataset_line(const fc_dataset *ds) { return ds->line; }

void fc_dataset_close(fc_dataset *ds) {
    if (!ds) return;
    for (size_t i = 0; i < ds->nhdr; i++) free(ds->hdr[i]);
    free(ds->hdr);
    free(ds->span);
    free(ds->seen);
    fc_buf_free(&ds->raw);
    fc_buf_free(&ds->fbuf);
    if (ds->tok) json_tokener_free(ds->tok);
    free(ds);
}
