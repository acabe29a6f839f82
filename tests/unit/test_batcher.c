/* Unit tests of the batcher: item and byte limits, batch numbering, items too big for any
 * batch, that every item comes back out of the decoded messages exactly once, in order, and that
 * running out of memory is reported as such (never as an item too big to publish). */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fc_batcher.h"
#include "fc_error.h"

/* Fault injection: fc_buf allocates with realloc only, a new buffer with realloc(NULL, n). While
 * fail_new_buffers is set, those fail; every other call goes to the next realloc (libc's, or a
 * sanitizer's). Volatile: the compiler takes realloc for the library's, which reads no global of ours. */
static volatile int fail_new_buffers;

void *realloc(void *p, size_t n) {
    static void *(*next)(void *, size_t);
    if (fail_new_buffers && !p) return NULL;
    if (!next) *(void **)&next = dlsym(RTLD_NEXT, "realloc");
    return next(p, n);
}

/* skip_without_injection skips the test when this realloc is not the one called (valgrind replaces
 * the executable's allocator with its own). */
static void skip_without_injection(void) {
    void *volatile none = NULL; /* realloc(NULL, n) would be compiled as malloc(n) */
    fail_new_buffers = 1;
    void *p = realloc(none, 16);
    fail_new_buffers = 0;
    if (p) {
        free(p);
        skip();
    }
}

typedef struct run {
    long positions[4096]; /* positions read back from the decoded batches, in order */
    size_t npos;
    long sizes[512];      /* items per batch */
    size_t nbatches;
    size_t max_len;       /* largest message */
} run;

/* check_batch decodes a closed batch, checks its number and header, and records its items. */
static void check_batch(run *r, fc_closed_batch *c, const char *job) {
    fc_batch_msg m;
    char why[256] = "";
    if (fc_message_decode_batch(c->body.data, c->body.len, &m, why, sizeof(why)) != FC_OK)
        fail_msg("batch %ld does not decode: %s", c->batch, why);
    assert_int_equal(c->batch, (long)r->nbatches);
    assert_int_equal(m.hdr.batch, c->batch);
    assert_string_equal(m.hdr.job_id, job);
    assert_int_equal((long)m.nitems, c->items);
    for (size_t i = 0; i < m.nitems; i++) r->positions[r->npos++] = (long)m.items[i].position;
    r->sizes[r->nbatches++] = c->items;
    if (c->body.len > r->max_len) r->max_len = c->body.len;
    fc_batch_msg_free(&m);
    fc_buf_free(&c->body);
}

/* feed adds items 1..n (term i carries term_len bytes, or big_len for the positions in big[])
 * and returns the positions the batcher refused as too big. */
static size_t feed(fc_batcher *b, run *r, long n, size_t term_len, const long *big, size_t nbig, size_t big_len,
                   long *refused) {
    size_t nref = 0;
    char *term = malloc(big_len > term_len ? big_len + 1 : term_len + 1);
    for (long i = 1; i <= n; i++) {
        size_t len = term_len;
        for (size_t k = 0; k < nbig; k++)
            if (big[k] == i) len = big_len;
        memset(term, 'a' + (int)(i % 26), len);
        term[len] = '\0';
        fc_item it = {.position = i, .term = term, .type = (char *)"noun", .line = i + 1};
        fc_closed_batch c;
        int rc = fc_batcher_add(b, &it, &c);
        if (rc == FC_ETOOBIG) refused[nref++] = i;
        else if (rc == 1) check_batch(r, &c, b->hdr.job_id);
        else assert_int_equal(rc, 0);
    }
    fc_closed_batch c;
    if (fc_batcher_finish(b, &c)) check_batch(r, &c, b->hdr.job_id);
    assert_int_equal(fc_batcher_finish(b, &c), 0);
    free(term);
    return nref;
}

static fc_batcher new_batcher(long max_items, long max_bytes) {
    fc_batcher b = {.max_items = max_items, .max_bytes = max_bytes};
    snprintf(b.hdr.job_id, sizeof(b.hdr.job_id), "job-batcher");
    b.hdr.attempt = 1;
    return b;
}

static void test_item_limit(void **state) {
    static run r;
    memset(&r, 0, sizeof(r));
    fc_batcher b = new_batcher(10, 1 << 20);
    long refused[1];
    assert_int_equal(feed(&b, &r, 95, 5, NULL, 0, 0, refused), 0);
    assert_int_equal(r.nbatches, 10); /* 9 full batches and one of 5 */
    for (size_t i = 0; i < 9; i++) assert_int_equal(r.sizes[i], 10);
    assert_int_equal(r.sizes[9], 5);
    assert_int_equal(r.npos, 95);
    for (size_t i = 0; i < r.npos; i++) assert_int_equal(r.positions[i], (long)i + 1);
    fc_batcher_free(&b);
}

static void test_byte_limit(void **state) {
    static run r;
    memset(&r, 0, sizeof(r));
    /* Items of about 150 bytes under a 1,000-byte limit: a handful per batch, never over. */
    fc_batcher b = new_batcher(100, 1000);
    long refused[1];
    assert_int_equal(feed(&b, &r, 200, 100, NULL, 0, 0, refused), 0);
    assert_true(r.max_len <= 1000);
    assert_true(r.max_len > 850); /* batches are filled, not closed early */
    assert_true(r.nbatches > 20 && r.nbatches < 60);
    assert_int_equal(r.npos, 200);
    for (size_t i = 0; i < r.npos; i++) assert_int_equal(r.positions[i], (long)i + 1);
    fc_batcher_free(&b);
}

/* An item that no batch can hold is refused and the batch being built goes on; an item that
 * only fits alone gets a batch of its own. */
static void test_too_big(void **state) {
    static run r;
    memset(&r, 0, sizeof(r));
    fc_batcher b = new_batcher(100, 2000);
    long big[] = {7, 8, 30}, refused[8];
    size_t nref = feed(&b, &r, 40, 20, big, 3, 5000, refused);
    assert_int_equal(nref, 3);
    assert_int_equal(refused[0], 7);
    assert_int_equal(refused[1], 8);
    assert_int_equal(refused[2], 30);
    assert_int_equal(r.npos, 37);
    for (size_t i = 0, want = 1; i < r.npos; i++, want++) {
        while (want == 7 || want == 8 || want == 30) want++;
        assert_int_equal(r.positions[i], (long)want);
    }
    assert_true(r.max_len <= 2000);
    fc_batcher_free(&b);

    /* Exactly at the limit: an item whose batch of one is max_bytes long is taken, one byte more is not. */
    memset(&r, 0, sizeof(r));
    fc_batcher probe = new_batcher(100, 1 << 20);
    fc_item it = {.position = 1, .term = (char *)"x", .type = (char *)"noun"};
    fc_closed_batch c;
    assert_int_equal(fc_batcher_add(&probe, &it, &c), 0);
    assert_int_equal(fc_batcher_finish(&probe, &c), 1);
    long one_len = (long)c.body.len; /* a batch holding one item with a 1-byte term */
    fc_buf_free(&c.body);
    fc_batcher_free(&probe);
    char term[600];
    memset(term, 'y', 500);
    term[500] = '\0';
    it.term = term;
    fc_batcher exact = new_batcher(100, one_len + 499);
    assert_int_equal(fc_batcher_add(&exact, &it, &c), 0);
    assert_int_equal(fc_batcher_finish(&exact, &c), 1);
    assert_int_equal((long)c.body.len, one_len + 499);
    fc_buf_free(&c.body);
    fc_batcher_free(&exact);
    fc_batcher tight = new_batcher(100, one_len + 498);
    assert_int_equal(fc_batcher_add(&tight, &it, &c), FC_ETOOBIG);
    assert_int_equal(fc_batcher_finish(&tight, &c), 0);
    fc_batcher_free(&tight);
}

/* Out of memory while checking whether an item fits a batch alone (an item near max_bytes takes
 * that path) is FC_ENOMEM, not FC_ETOOBIG: the caller must stop, not reject the row. */
static void test_out_of_memory_fits(void **state) {
    skip_without_injection();
    char term[900];
    memset(term, 'z', 800);
    term[800] = '\0';
    fc_item it = {.position = 1, .term = term, .type = (char *)"noun"};
    fc_batcher b = new_batcher(100, 1024);
    fc_closed_batch c;
    assert_int_equal(fc_batcher_fits(&b, &it), FC_OK); /* b.one keeps room for this item */
    fail_new_buffers = 1;
    int fits = fc_batcher_fits(&b, &it), add = fc_batcher_add(&b, &it, &c);
    fail_new_buffers = 0;
    assert_int_equal(fits, FC_ENOMEM);
    assert_int_equal(add, FC_ENOMEM);
    assert_int_equal(fc_batcher_finish(&b, &c), 0); /* nothing was added */
    fc_batcher_free(&b);
}

/* Out of memory after the open batch was closed for a new item: nothing is handed out (and nothing
 * leaks, which the ASan build checks). */
static void test_out_of_memory_after_close(void **state) {
    skip_without_injection();
    fc_item it = {.position = 1, .term = (char *)"x", .type = (char *)"noun"};
    fc_batcher b = new_batcher(1, 1 << 20);
    fc_closed_batch c = {0};
    assert_int_equal(fc_batcher_add(&b, &it, &c), 0);
    it.position = 2;
    fail_new_buffers = 1; /* the closed batch's body grows; the new batch's cannot start */
    int rc = fc_batcher_add(&b, &it, &c);
    fail_new_buffers = 0;
    assert_int_equal(rc, FC_ENOMEM);
    assert_null(c.body.data);
    fc_batcher_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_item_limit),
        cmocka_unit_test(test_byte_limit),
        cmocka_unit_test(test_too_big),
        cmocka_unit_test(test_out_of_memory_fits),
        cmocka_unit_test(test_out_of_memory_after_close),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
