/* Unit tests of the streaming dataset reader (common/fc_dataset.c), fed from in-memory files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "fc_dataset.h"
#include "fc_error.h"

/* A reader over an in-memory text; the FILE is the test's to close. */
typedef struct reader {
    FILE *fp;
    fc_dataset *ds;
    char err[512];
} reader;

#define TEXT(s) s, sizeof(s) - 1

static FILE *mem(const char *s, size_t n) {
    FILE *fp = n ? fmemopen((void *)s, n, "r") : tmpfile();
    assert_non_null(fp);
    return fp;
}

/* open_spec opens text in format with a column spec (NULL = defaults); r->ds is NULL on failure (r->err). */
static void open_spec(reader *r, const char *s, size_t n, int format, const char *spec) {
    fc_columns cols;
    memset(r, 0, sizeof(*r));
    assert_int_equal(fc_columns_parse(spec, &cols, r->err, sizeof(r->err)), 0);
    r->fp = mem(s, n);
    r->ds = fc_dataset_open(r->fp, format, &cols, r->err, sizeof(r->err));
}

static void open_ok(reader *r, const char *s, size_t n, int format, const char *spec) {
    open_spec(r, s, n, format, spec);
    if (!r->ds) print_error("open failed: %s\n", r->err);
    assert_non_null(r->ds);
}

static void done(reader *r) {
    fc_dataset_close(r->ds);
    fclose(r->fp);
}

/* next_ok reads a good item and checks its position, term, type and line; the caller clears it. */
static void next_ok(reader *r, fc_item *it, long long pos, const char *term, const char *type, long line) {
    fc_row_error e = {0};
    memset(it, 0, sizeof(*it));
    int rc = fc_dataset_next(r->ds, it, &e);
    if (rc != 1) print_error("expected an item, got %d (%s)\n", rc, e.reason);
    assert_int_equal(rc, 1);
    assert_int_equal(it->position, pos);
    assert_string_equal(it->term, term);
    assert_string_equal(it->type, type);
    assert_int_equal(it->line, line);
}

static void expect_item(reader *r, long long pos, const char *term, const char *type, long line) {
    fc_item it;
    next_ok(r, &it, pos, term, type, line);
    fc_item_clear(&it);
}

static void expect_bad(reader *r, long line, const char *reason) {
    fc_item it = {0};
    fc_row_error e = {0};
    int rc = fc_dataset_next(r->ds, &it, &e);
    if (rc != FC_EPARSE) print_error("expected a bad row, got %d\n", rc);
    assert_int_equal(rc, FC_EPARSE);
    assert_int_equal(e.line, line);
    assert_string_equal(e.reason, reason);
    assert_null(it.term);
}

static void expect_end(reader *r) {
    fc_item it = {0};
    assert_int_equal(fc_dataset_next(r->ds, &it, NULL), 0);
    assert_int_equal(fc_dataset_next(r->ds, &it, NULL), 0);
}

static void expect_extra(const fc_item *it, size_t i, const char *name, const char *value) {
    assert_true(i < it->nextra);
    assert_string_equal(it->extra[i].name, name);
    assert_string_equal(it->extra[i].value, value);
}

/* ---- CSV ---- */

static void test_csv_basic(void **state) {
    reader r;
    open_ok(&r, TEXT("position,term,type\n1,가다,verb\n2,오다,verb\n"), FC_FORMAT_CSV, NULL);
    expect_item(&r, 1, "가다", "verb", 2);
    expect_item(&r, 2, "오다", "verb", 3);
    expect_end(&r);
    assert_int_equal(fc_dataset_rows(r.ds), 2);
    done(&r);
}

static void test_csv_quotes(void **state) {
    reader r;
    fc_item it;
    open_ok(&r, TEXT("position,term,type,note\n"
                     "1,\"a, b\",\"say \"\"hi\"\"\",\"\"\n"
                     "\"2\",\"\"\"\",x,\"quoted, with \"\"both\"\"\"\n"
                     "3,ab\"c,,plain\n"),
            FC_FORMAT_CSV, NULL);
    next_ok(&r, &it, 1, "a, b", "say \"hi\"", 2);
    assert_int_equal(it.nextra, 1);
    expect_extra(&it, 0, "note", "");
    fc_item_clear(&it);
    next_ok(&r, &it, 2, "\"", "x", 3);
    expect_extra(&it, 0, "note", "quoted, with \"both\"");
    fc_item_clear(&it);
    expect_item(&r, 3, "ab\"c", "", 4); /* a bare quote inside an unquoted field is kept */
    expect_end(&r);
    done(&r);
}

static void test_csv_newline_in_quotes(void **state) {
    reader r;
    fc_item it;
    open_ok(&r, TEXT("position,term,type,note\n"
                     "1,one,noun,\"first line\nsecond line\n\nfourth, with comma\"\n"
                     "2,two,noun,x\n"
                     "3,,noun,x\n"
                     "4,\"multi\r\nline term\",noun,\"a\"\r\n"
                     "5,five,noun,\"\"\n"),
            FC_FORMAT_CSV, NULL);
    next_ok(&r, &it, 1, "one", "noun", 2);
    expect_extra(&it, 0, "note", "first line\nsecond line\n\nfourth, with comma");
    fc_item_clear(&it);
    expect_item(&r, 2, "two", "noun", 6);
    expect_bad(&r, 7, "line 7: empty term");
    expect_item(&r, 4, "multi\nline term", "noun", 8); /* CRLF inside quotes becomes LF */
    expect_item(&r, 5, "five", "noun", 10);
    expect_end(&r);
    assert_int_equal(fc_dataset_line(r.ds), 10);
    done(&r);
}

static void test_csv_bom_crlf(void **state) {
    reader r;
    open_ok(&r, TEXT("\xEF\xBB\xBFposition,term,type\r\n1,내가,pronoun\r\n2,그,pronoun\r\n"), FC_FORMAT_CSV, NULL);
    expect_item(&r, 1, "내가", "pronoun", 2);
    expect_item(&r, 2, "그", "pronoun", 3);
    expect_end(&r);
    done(&r);
    /* no final newline, CRLF elsewhere */
    open_ok(&r, TEXT("\xEF\xBB\xBF\"position\",term\r\n7,x"), FC_FORMAT_CSV, NULL);
    expect_item(&r, 7, "x", "", 2);
    expect_end(&r);
    done(&r);
}

/* A BOM that a pipe or a socket delivers a byte at a time is still dropped: the reader used to look for it in
 * its first read only (found by tests/fuzz/fuzz_dataset.c; regressions/dataset/bom_split_across_reads). Every
 * read(2) of a SOCK_SEQPACKET socket returns one message, so each piece below is one read. */
static void test_bom_split_across_reads(void **state) {
    static const char *const pieces[] = {"\xEF", "\xBB", "\xBF", "pos", "ition,term\n", "1,\xEC\x82", "\xAC\n"};
    for (int format = FC_FORMAT_CSV; format <= FC_FORMAT_JSONL; format += FC_FORMAT_JSONL - FC_FORMAT_CSV) {
        int fds[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, fds), 0);
        for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]) && format == FC_FORMAT_CSV; i++)
            assert_int_equal(write(fds[1], pieces[i], strlen(pieces[i])), (ssize_t)strlen(pieces[i]));
        if (format == FC_FORMAT_JSONL) {
            const char *j[] = {"\xEF\xBB", "\xBF{\"position\":1,", "\"term\":\"\xEC\x82\xAC\"}\n"};
            for (size_t i = 0; i < 3; i++) assert_int_equal(write(fds[1], j[i], strlen(j[i])), (ssize_t)strlen(j[i]));
        }
        close(fds[1]);
        FILE *fp = fdopen(fds[0], "r");
        assert_non_null(fp);
        char err[256] = "";
        fc_dataset *ds = fc_dataset_open(fp, format, NULL, err, sizeof(err));
        assert_non_null(ds);
        fc_item it = {0};
        assert_int_equal(fc_dataset_next(ds, &it, NULL), 1);
        assert_int_equal(it.position, 1);
        assert_string_equal(it.term, "\xEC\x82\xAC");
        fc_item_clear(&it);
        assert_int_equal(fc_dataset_next(ds, &it, NULL), 0);
        fc_dataset_close(ds);
        fclose(fp);
    }
    (void)state;
}

static void test_csv_invalid_utf8(void **state) {
    reader r;
    open_ok(&r, TEXT("position,term,type,note\n"
                     "1,\xC0\xAF,noun,x\n"          /* overlong '/' */
                     "2,ok,\xED\xA0\x80,x\n"        /* UTF-16 surrogate */
                     "3,ok,noun,\xE3\x81\n"         /* truncated 3-byte sequence at the end */
                     "4,\xE3\x81x,noun,x\n"         /* truncated, followed by ASCII */
                     "5,\x80,noun,x\n"              /* lone continuation byte */
                     "6,\xF4\x90\x80\x80,noun,x\n"  /* above U+10FFFF */
                     "7,\xF5\x80\x80\x80,noun,x\n"  /* invalid lead byte */
                     "8,\xE0\x80\xAF,noun,x\n"      /* overlong 3-byte */
                     "9,\xF0\x8F\xBF\xBF,noun,x\n"  /* overlong 4-byte */
                     "10,\xFF,noun,x\n"
                     "11,a\0b,noun,x\n"             /* NUL byte */
                     "12,\xF0\x9F\x98\x80\xC3\xA9\xEF\xBF\xBF\xF4\x8F\xBF\xBF,noun,x\n"), /* valid 4/2/3/4-byte */
            FC_FORMAT_CSV, NULL);
    expect_bad(&r, 2, "line 2: invalid UTF-8 in field 'term'");
    expect_bad(&r, 3, "line 3: invalid UTF-8 in field 'type'");
    expect_bad(&r, 4, "line 4: invalid UTF-8 in field 'note'");
    expect_bad(&r, 5, "line 5: invalid UTF-8 in field 'term'");
    expect_bad(&r, 6, "line 6: invalid UTF-8 in field 'term'");
    expect_bad(&r, 7, "line 7: invalid UTF-8 in field 'term'");
    expect_bad(&r, 8, "line 8: invalid UTF-8 in field 'term'");
    expect_bad(&r, 9, "line 9: invalid UTF-8 in field 'term'");
    expect_bad(&r, 10, "line 10: invalid UTF-8 in field 'term'");
    expect_bad(&r, 11, "line 11: invalid UTF-8 in field 'term'");
    expect_bad(&r, 12, "line 12: NUL byte in field 'term'");
    expect_item(&r, 12, "\xF0\x9F\x98\x80\xC3\xA9\xEF\xBF\xBF\xF4\x8F\xBF\xBF", "noun", 13);
    expect_end(&r);
    assert_int_equal(fc_dataset_rows(r.ds), 12);
    done(&r);
}

static void test_csv_column_count(void **state) {
    reader r;
    open_ok(&r, TEXT("position,term,type\n1,a,noun\n2,b\n3,c,noun,extra\n4,d,noun\n"), FC_FORMAT_CSV, NULL);
    expect_item(&r, 1, "a", "noun", 2);
    expect_bad(&r, 3, "line 3: expected 3 fields, got 2");
    expect_bad(&r, 4, "line 4: expected 3 fields, got 4");
    expect_item(&r, 4, "d", "noun", 5);
    expect_end(&r);
    done(&r);
}

static void test_csv_terms(void **state) {
    reader r;
    open_ok(&r, TEXT("position,term,type\n1,,noun\n2,   ,noun\n3,\"\",noun\n4,  padded  , noun \n"),
            FC_FORMAT_CSV, NULL);
    expect_bad(&r, 2, "line 2: empty term");
    expect_bad(&r, 3, "line 3: empty term");
    expect_bad(&r, 4, "line 4: empty term");
    expect_item(&r, 4, "padded", "noun", 5);
    expect_end(&r);
    done(&r);
}

static void test_csv_positions(void **state) {
    reader r;
    open_ok(&r, TEXT("position,term\n"
                     "abc,a\n0,a\n-1,a\n1.5,a\n,a\n100000001,a\n99999999999999999999999,a\n"
                     "12x,a\n 100000000 ,max\n007,seven\n"),
            FC_FORMAT_CSV, NULL);
    expect_bad(&r, 2, "line 2: position 'abc' is not a positive integer");
    expect_bad(&r, 3, "line 3: position '0' is not a positive integer");
    expect_bad(&r, 4, "line 4: position '-1' is not a positive integer");
    expect_bad(&r, 5, "line 5: position '1.5' is not a positive integer");
    expect_bad(&r, 6, "line 6: empty position");
    expect_bad(&r, 7, "line 7: position '100000001' is out of range (1..100000000)");
    expect_bad(&r, 8, "line 8: position '99999999999999999999999' is out of range (1..100000000)");
    expect_bad(&r, 9, "line 9: position '12x' is not a positive integer");
    expect_item(&r, 100000000, "max", "", 10);
    expect_item(&r, 7, "seven", "", 11);
    expect_end(&r);
    assert_int_equal(fc_dataset_rows(r.ds), 10);
    done(&r);
}

static void test_csv_duplicates(void **state) {
    reader r;
    open_ok(&r, TEXT("position,term\n7,a\n3,b\n7,c\n9,\n9,d\n3,e\n100000000,f\n100000000,g\n"), FC_FORMAT_CSV, NULL);
    expect_item(&r, 7, "a", "", 2);
    expect_item(&r, 3, "b", "", 3);
    expect_bad(&r, 4, "line 4: duplicate position 7");
    expect_bad(&r, 5, "line 5: empty term");
    expect_item(&r, 9, "d", "", 6); /* a bad row does not claim its position */
    expect_bad(&r, 7, "line 7: duplicate position 3");
    expect_item(&r, 100000000, "f", "", 8);
    expect_bad(&r, 9, "line 9: duplicate position 100000000");
    expect_end(&r);
    done(&r);
}

static void test_csv_blank_lines(void **state) {
    reader r;
    open_ok(&r, TEXT("\n  \r\nposition,term\n\n1,a\n \t \r\n\r\n2,b\n\n\n"), FC_FORMAT_CSV, NULL);
    expect_item(&r, 1, "a", "", 5);
    expect_item(&r, 2, "b", "", 8);
    expect_end(&r);
    assert_int_equal(fc_dataset_rows(r.ds), 2);
    done(&r);
}

static void test_csv_unterminated_quote(void **state) {
    reader r;
    open_ok(&r, TEXT("position,term\n1,a\n2,\"never\nclosed\n3,c\n"), FC_FORMAT_CSV, NULL);
    expect_item(&r, 1, "a", "", 2);
    expect_bad(&r, 3, "line 3: unterminated quoted field");
    expect_end(&r);
    done(&r);
}

static void test_csv_junk_after_quote(void **state) {
    reader r;
    open_ok(&r, TEXT("position,term\n1,\"a\"b\n2,c\n"), FC_FORMAT_CSV, NULL);
    expect_bad(&r, 2, "line 2: unexpected character after closing quote in field 2");
    expect_item(&r, 2, "c", "", 3);
    expect_end(&r);
    done(&r);
}

static void test_csv_long_record(void **state) {
    static char s[FC_DATASET_MAX_RECORD + 200];
    size_t n = (size_t)snprintf(s, sizeof(s), "position,term\n1,");
    memset(s + n, 'x', FC_DATASET_MAX_RECORD + 100);
    n += FC_DATASET_MAX_RECORD + 100;
    n += (size_t)snprintf(s + n, sizeof(s) - n, "\n2,ok\n");
    reader r;
    open_ok(&r, s, n, FC_FORMAT_CSV, NULL);
    expect_bad(&r, 2, "line 2: record longer than 1048576 bytes");
    expect_item(&r, 2, "ok", "", 3);
    expect_end(&r);
    done(&r);
}

/* The real header of topik_10k.csv and three of its rows (lines 2, 3 and 474). */
static const char topik[] =
    "Position,Hangul,IPA_Pronunciation,Word_Type,TOPIK_Level,Definition,Example_Sentence,Example_Sentence_IPA,"
    "Example_Sentence_Translation,Usage_Hint,Frequency,Frequency_Number,Verified,Quality_Score,HSK_Compliance,"
    "Processed,Reasoning_Tokens,Total_Tokens,O4_Error\r\n"
    "1,내가,nɛ.ka,pronoun,1,I,내가 밥을 먹었어.,nɛ.ka pap̚.ɯl mʌk̚.ʌt̚.ʌ,I ate rice.,\"Subject marker attached to "
    "the pronoun I, common in spoken and casual writing\",1,39801,True,Accurate and meets frequency-based definition "
    "requirements.,False,True,960,1677,\r\n"
    "2,그,kɯ,pronoun,1,that,그 사람은 친절해요.,kɯ sa.ɾam.ɯn tɕʰin.tɕʌl.hɛ.jo,That person is kind.,Demonstrative "
    "pronoun used before nouns to refer to something distant from the speaker or in the discourse.,2,35563,True,"
    "Clear and accurate.,False,True,768,1482,\r\n"
    "473,라고,ɾa.ko,particle,1,quotative marker,\"그는 \"\"안녕하세요\"\"라고 말했다.\",kɯ.nɯn an.njʌŋ.ha.se.jo "
    "ɾa.ko mal.hɛt̚.ta,\"He said \"\"Hello.\"\"\",\"Used after quoted speech or thoughts, in both formal and "
    "informal contexts\",473,1377,True,Comprehensive and precise,False,True,1024,1744,\r\n";

static void test_topik_mapping(void **state) {
    reader r;
    fc_item it;
    open_ok(&r, topik, sizeof(topik) - 1, FC_FORMAT_CSV, "position=Position,term=Hangul,type=Word_Type");
    next_ok(&r, &it, 1, "내가", "pronoun", 2);
    assert_int_equal(it.nextra, 16);
    expect_extra(&it, 0, "IPA_Pronunciation", "nɛ.ka");
    expect_extra(&it, 1, "TOPIK_Level", "1");
    expect_extra(&it, 2, "Definition", "I");
    expect_extra(&it, 6, "Usage_Hint", "Subject marker attached to the pronoun I, common in spoken and casual writing");
    expect_extra(&it, 15, "O4_Error", "");
    fc_item_clear(&it);
    expect_item(&r, 2, "그", "pronoun", 3);
    next_ok(&r, &it, 473, "라고", "particle", 4);
    expect_extra(&it, 3, "Example_Sentence", "그는 \"안녕하세요\"라고 말했다.");
    expect_extra(&it, 5, "Example_Sentence_Translation", "He said \"Hello.\"");
    fc_item_clear(&it);
    expect_end(&r);
    done(&r);
}

static void test_topik_missing_column(void **state) {
    reader r;
    open_spec(&r, TEXT("a,b,c\n1,x,y\n"), FC_FORMAT_CSV, "position=a,term=Hangul");
    assert_null(r.ds);
    assert_string_equal(r.err, "column 'Hangul' (term) not found in header; columns are: a, b, c");
    fclose(r.fp);
    open_spec(&r, TEXT("Hangul,b\n"), FC_FORMAT_CSV, "term=Hangul");
    assert_null(r.ds);
    assert_string_equal(r.err, "column 'position' (position) not found in header; columns are: Hangul, b");
    fclose(r.fp);
    /* header match is exact: no case folding, no trimming */
    open_spec(&r, TEXT("Position, term\n"), FC_FORMAT_CSV, NULL);
    assert_null(r.ds);
    fclose(r.fp);
}

static void test_type_absent(void **state) {
    reader r;
    fc_item it;
    open_ok(&r, TEXT("term,position,level\nhello,1,A1\n"), FC_FORMAT_CSV, NULL);
    next_ok(&r, &it, 1, "hello", "", 2);
    assert_int_equal(it.nextra, 1);
    expect_extra(&it, 0, "level", "A1");
    fc_item_clear(&it);
    expect_end(&r);
    done(&r);
    /* "type=" means no type column: a column named "type" then travels as an extra */
    open_ok(&r, TEXT("position,term,type\n1,a,noun\n"), FC_FORMAT_CSV, "type=");
    next_ok(&r, &it, 1, "a", "", 2);
    expect_extra(&it, 0, "type", "noun");
    fc_item_clear(&it);
    done(&r);
}

static void test_bad_headers(void **state) {
    reader r;
    open_spec(&r, "", 0, FC_FORMAT_CSV, NULL);
    assert_null(r.ds);
    assert_string_equal(r.err, "empty input: no header line");
    fclose(r.fp);
    open_spec(&r, TEXT("\n\r\n  \n"), FC_FORMAT_TSV, NULL);
    assert_null(r.ds);
    assert_string_equal(r.err, "empty input: no header line");
    fclose(r.fp);
    open_spec(&r, TEXT("position,\"term\n"), FC_FORMAT_CSV, NULL);
    assert_null(r.ds);
    assert_string_equal(r.err, "bad header (line 1): unterminated quoted field");
    fclose(r.fp);
    open_spec(&r, TEXT("position,te\xFFrm\n"), FC_FORMAT_CSV, NULL);
    assert_null(r.ds);
    assert_string_equal(r.err, "header (line 1): column 2 is not valid UTF-8");
    fclose(r.fp);
    /* a header only is fine: no rows */
    open_ok(&r, TEXT("position,term\r\n"), FC_FORMAT_CSV, NULL);
    expect_end(&r);
    assert_int_equal(fc_dataset_rows(r.ds), 0);
    done(&r);
    char err[64];
    FILE *fp = mem(TEXT("position,term\n"));
    assert_null(fc_dataset_open(fp, 99, NULL, err, sizeof(err)));
    assert_null(fc_dataset_open(NULL, FC_FORMAT_CSV, NULL, err, sizeof(err)));
    fc_dataset *ds = fc_dataset_open(fp, FC_FORMAT_CSV, NULL, NULL, 0); /* NULL cols = defaults */
    assert_non_null(ds);
    fc_dataset_close(ds);
    fc_dataset_close(NULL);
    fclose(fp);
}

/* ---- TSV ---- */

static void test_tsv(void **state) {
    reader r;
    fc_item it;
    open_ok(&r, TEXT("\xEF\xBB\xBFposition\tterm\ttype\tnote\r\n"
                     "1\ta, \"b\"\tnoun\tline\\none\\ttab\\\\back\\xkeep\r\n"
                     "\n"
                     "2\tb\tverb\n"
                     "3\t\tverb\tx\n"
                     "4\tc\tverb\t\n"),
            FC_FORMAT_TSV, NULL);
    next_ok(&r, &it, 1, "a, \"b\"", "noun", 2);
    expect_extra(&it, 0, "note", "line\none\ttab\\back\\xkeep");
    fc_item_clear(&it);
    expect_bad(&r, 4, "line 4: expected 4 fields, got 3");
    expect_bad(&r, 5, "line 5: empty term");
    next_ok(&r, &it, 4, "c", "verb", 6);
    expect_extra(&it, 0, "note", "");
    fc_item_clear(&it);
    expect_end(&r);
    assert_int_equal(fc_dataset_rows(r.ds), 4);
    done(&r);
}

/* ---- JSON Lines ---- */

static void test_jsonl(void **state) {
    reader r;
    fc_item it;
    open_ok(&r, TEXT("\xEF\xBB\xBF{\"position\": 1, \"term\": \"가다\", \"type\": \"verb\", \"level\": 2}\r\n"
                     "{\"term\": 42, \"position\": \"2\", \"tags\": [\"a\",\"b/c\"], \"n\": null, \"ok\": true}\n"
                     "\n"
                     "{\"position\": 3, \"term\": \"x\"\n"
                     "[1, 2]\n"
                     "\"just a string\"\n"
                     "null\n"
                     "{\"position\": 4}\n"
                     "{\"term\": \"y\"}\n"
                     "{\"position\": 1.5, \"term\": \"y\"}\n"
                     "{\"position\": -2, \"term\": \"y\"}\n"
                     "{\"position\": 1, \"term\": \"dup\"}\n"
                     "{\"position\": 5, \"term\": {\"a\": 1}}\n"
                     "{\"position\": 5, \"term\": \"\\u0000\"}\n"
                     "{\"position\": 5, \"term\": \"\xC0\xAF\"}\n"
                     "{\"position\": 5, \"term\": \"a\"} trailing\n"
                     "{\"position\": 5, \"term\": \"  five \", \"type\": null}\n"),
            FC_FORMAT_JSONL, NULL);
    next_ok(&r, &it, 1, "가다", "verb", 1);
    assert_int_equal(it.nextra, 1);
    expect_extra(&it, 0, "level", "2");
    fc_item_clear(&it);
    next_ok(&r, &it, 2, "42", "", 2);
    assert_int_equal(it.nextra, 3);
    expect_extra(&it, 0, "tags", "[\"a\",\"b/c\"]");
    expect_extra(&it, 1, "n", "");
    expect_extra(&it, 2, "ok", "true");
    fc_item_clear(&it);
    fc_row_error e = {0};
    memset(&it, 0, sizeof(it));
    assert_int_equal(fc_dataset_next(r.ds, &it, &e), FC_EPARSE);
    assert_int_equal(e.line, 4);
    assert_true(strncmp(e.reason, "line 4: invalid JSON: ", 22) == 0);
    expect_bad(&r, 5, "line 5: not a JSON object");
    expect_bad(&r, 6, "line 6: not a JSON object");
    expect_bad(&r, 7, "line 7: not a JSON object");
    expect_bad(&r, 8, "line 8: missing term (key 'term')");
    expect_bad(&r, 9, "line 9: missing position (key 'position')");
    expect_bad(&r, 10, "line 10: position '1.5' is not a positive integer");
    expect_bad(&r, 11, "line 11: position '-2' is not a positive integer");
    expect_bad(&r, 12, "line 12: duplicate position 1");
    expect_bad(&r, 13, "line 13: field 'term' is not a string or number");
    expect_bad(&r, 14, "line 14: NUL byte in field 'term'");
    expect_bad(&r, 15, "line 15: invalid UTF-8 in JSON line");
    assert_int_equal(fc_dataset_next(r.ds, &it, &e), FC_EPARSE);
    assert_int_equal(e.line, 16);
    expect_item(&r, 5, "five", "", 17);
    expect_end(&r);
    assert_int_equal(fc_dataset_rows(r.ds), 16);
    done(&r);
}

static void test_jsonl_mapping(void **state) {
    reader r;
    fc_item it;
    open_ok(&r, TEXT("{\"Position\": 10, \"Hangul\": \"내가\", \"Word_Type\": \"pronoun\", \"position\": \"x\"}\n"),
            FC_FORMAT_JSONL, "position=Position,term=Hangul,type=Word_Type");
    next_ok(&r, &it, 10, "내가", "pronoun", 1);
    assert_int_equal(it.nextra, 1);
    expect_extra(&it, 0, "position", "x");
    fc_item_clear(&it);
    expect_end(&r);
    done(&r);
    open_ok(&r, "", 0, FC_FORMAT_JSONL, NULL); /* an empty JSONL file has no rows, which is fine */
    expect_end(&r);
    done(&r);
}

/* ---- names and specs ---- */

static void test_formats(void **state) {
    assert_int_equal(fc_format_from_path("data/topik_10k.csv"), FC_FORMAT_CSV);
    assert_int_equal(fc_format_from_path("X.CSV"), FC_FORMAT_CSV);
    assert_int_equal(fc_format_from_path("a.tsv"), FC_FORMAT_TSV);
    assert_int_equal(fc_format_from_path("a.b/c.tab"), FC_FORMAT_TSV);
    assert_int_equal(fc_format_from_path("words.jsonl"), FC_FORMAT_JSONL);
    assert_int_equal(fc_format_from_path("words.ndjson"), FC_FORMAT_JSONL);
    assert_int_equal(fc_format_from_path("words.json"), FC_EINVAL);
    assert_int_equal(fc_format_from_path("words"), FC_EINVAL);
    assert_int_equal(fc_format_from_path("dir.csv/words"), FC_EINVAL);
    assert_int_equal(fc_format_from_path(".csv"), FC_EINVAL);
    assert_int_equal(fc_format_from_path("-"), FC_EINVAL);
    assert_int_equal(fc_format_from_path("words.csv.gz"), FC_EINVAL);
    assert_int_equal(fc_format_from_name("csv"), FC_FORMAT_CSV);
    assert_int_equal(fc_format_from_name("TSV"), FC_FORMAT_TSV);
    assert_int_equal(fc_format_from_name("jsonl"), FC_FORMAT_JSONL);
    assert_int_equal(fc_format_from_name("xml"), FC_EINVAL);
    assert_int_equal(fc_format_from_name(NULL), FC_EINVAL);
}

static void expect_spec_error(const char *spec, const char *msg) {
    fc_columns c;
    char err[128] = "";
    assert_int_equal(fc_columns_parse(spec, &c, err, sizeof(err)), FC_EINVAL);
    assert_string_equal(err, msg);
}

static void test_columns_parse(void **state) {
    fc_columns c;
    char err[128] = "";
    assert_int_equal(fc_columns_parse("position=Position,term=Hangul,type=Word_Type", &c, err, sizeof(err)), 0);
    assert_string_equal(c.position, "Position");
    assert_string_equal(c.term, "Hangul");
    assert_string_equal(c.type, "Word_Type");
    assert_int_equal(fc_columns_parse(" term = Word ", &c, err, sizeof(err)), 0);
    assert_string_equal(c.position, "position");
    assert_string_equal(c.term, "Word");
    assert_string_equal(c.type, "type");
    assert_int_equal(fc_columns_parse("", &c, err, sizeof(err)), 0);
    assert_string_equal(c.term, "term");
    assert_int_equal(fc_columns_parse(NULL, &c, err, sizeof(err)), 0);
    assert_int_equal(fc_columns_parse("type=", &c, err, sizeof(err)), 0);
    assert_string_equal(c.type, "");
    fc_columns_default(&c);
    assert_string_equal(c.position, "position");

    expect_spec_error("pos=Position", "unknown column key 'pos' (expected position, term or type)");
    expect_spec_error("term", "bad column mapping item 'term': expected key=name");
    expect_spec_error("term=a,,type=b", "bad column mapping item '': expected key=name");
    expect_spec_error("term=a,", "bad column mapping item '': expected key=name");
    expect_spec_error("term=", "empty column name for 'term'");
    expect_spec_error("position= ", "empty column name for 'position'");
    expect_spec_error("term=a,term=b", "column key 'term' given twice");
    expect_spec_error("term=position", "position and term map to the same column 'position'");
    expect_spec_error("type=term", "term and type map to the same column 'term'");
    expect_spec_error("=x", "unknown column key '' (expected position, term or type)");
    expect_spec_error("term=0123456789012345678901234567890123456789012345678901234567890123",
                      "column name for 'term' longer than 63 bytes");
}

/* ---- reasons are valid UTF-8 ---- */

/* valid_utf8 checks s on its own terms (code points, not byte ranges): no stray or missing continuation
 * bytes, no overlong forms, surrogates or values above U+10FFFF. */
static int valid_utf8(const char *s) {
    static const unsigned long min[5] = {0, 0, 0x80, 0x800, 0x10000};
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        int len = *p < 0x80 ? 1 : (*p >> 5) == 6 ? 2 : (*p >> 4) == 14 ? 3 : (*p >> 3) == 30 ? 4 : 0;
        if (!len) return 0;
        unsigned long cp = len == 1 ? *p : *p & (0x7F >> len);
        for (int k = 1; k < len; k++) {
            if ((p[k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (p[k] & 0x3F);
        }
        if (cp < min[len] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return 0;
        p += len;
    }
    return 1;
}

/* long_name writes pad ASCII 'x's then 100 three-byte Hangul syllables, so that fixed-size buffers end at
 * every offset inside a character as pad goes 0, 1, 2. */
static void long_name(char *out, size_t outlen, int pad) {
    size_t o = 0;
    for (int i = 0; i < pad; i++) out[o++] = 'x';
    for (int i = 0; i < 100 && o + 4 <= outlen; i++, o += 3) memcpy(out + o, "\xEB\x8B\xA8", 3); /* U+B2E8 */
    out[o] = '\0';
}

/* bad_reason reads the first record of text (format) and returns its bad-row reason in e. */
static void bad_reason(const char *text, int format, fc_row_error *e) {
    reader r;
    fc_item it = {0};
    open_ok(&r, text, strlen(text), format, NULL);
    assert_int_equal(fc_dataset_next(r.ds, &it, e), FC_EPARSE);
    done(&r);
}

/* expect_cut checks that a reason is valid UTF-8, starts with head and was cut with "...". */
static void expect_cut(const char *reason, const char *head) {
    if (!valid_utf8(reason)) fail_msg("reason is not valid UTF-8: %s", reason);
    assert_int_equal(strncmp(reason, head, strlen(head)), 0);
    assert_string_equal(reason + strlen(reason) - 3, "...");
}

static void test_long_multibyte_reasons(void **state) {
    char name[400], text[1024];
    fc_row_error e;
    for (int pad = 0; pad < 3; pad++) {
        long_name(name, sizeof(name), pad);
        snprintf(text, sizeof(text), "position,term,%s\n1,a,\xFF\n", name); /* a bad value in a long column */
        bad_reason(text, FC_FORMAT_CSV, &e);
        expect_cut(e.reason, "line 2: invalid UTF-8 in field '");
        snprintf(text, sizeof(text), "position,term\n%s,a\n", name); /* a long term where the position goes */
        bad_reason(text, FC_FORMAT_CSV, &e);
        if (!valid_utf8(e.reason)) fail_msg("reason is not valid UTF-8: %s", e.reason);
        assert_non_null(strstr(e.reason, "...' is not a positive integer"));
        snprintf(text, sizeof(text), "{\"position\":1,\"term\":\"a\",\"%s\":\"\\u0000\"}\n", name);
        bad_reason(text, FC_FORMAT_JSONL, &e);
        expect_cut(e.reason, "line 1: NUL byte in field '");
    }
}

/* Open errors are cut the same way, and bytes that are not UTF-8 in what is quoted become U+FFFD. */
static void test_open_errors_valid_utf8(void **state) {
    char name[400], text[1024], err[100];
    for (int pad = 0; pad < 3; pad++) {
        long_name(name, sizeof(name), pad);
        snprintf(text, sizeof(text), "%s,term\n1,a\n", name);
        FILE *fp = mem(text, strlen(text));
        assert_null(fc_dataset_open(fp, FC_FORMAT_CSV, NULL, err, sizeof(err)));
        fclose(fp);
        expect_cut(err, "column 'position' (position) not found in header; columns are: ");
    }
    expect_spec_error("\xFF\xFE", "bad column mapping item '\xEF\xBF\xBD\xEF\xBF\xBD': expected key=name");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv_basic),
        cmocka_unit_test(test_csv_quotes),
        cmocka_unit_test(test_csv_newline_in_quotes),
        cmocka_unit_test(test_csv_bom_crlf),
        cmocka_unit_test(test_bom_split_across_reads),
        cmocka_unit_test(test_csv_invalid_utf8),
        cmocka_unit_test(test_csv_column_count),
        cmocka_unit_test(test_csv_terms),
        cmocka_unit_test(test_csv_positions),
        cmocka_unit_test(test_csv_duplicates),
        cmocka_unit_test(test_csv_blank_lines),
        cmocka_unit_test(test_csv_unterminated_quote),
        cmocka_unit_test(test_csv_junk_after_quote),
        cmocka_unit_test(test_csv_long_record),
        cmocka_unit_test(test_topik_mapping),
        cmocka_unit_test(test_topik_missing_column),
        cmocka_unit_test(test_type_absent),
        cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_tsv),
        cmocka_unit_test(test_jsonl),
        cmocka_unit_test(test_jsonl_mapping),
        cmocka_unit_test(test_formats),
        cmocka_unit_test(test_columns_parse),
        cmocka_unit_test(test_long_multibyte_reasons),
        cmocka_unit_test(test_open_errors_valid_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
