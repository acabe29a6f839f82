/* A streaming reader of vocabulary datasets (CSV per RFC 4180, TSV, JSON Lines) that yields one fc_item per
 * record with constant memory, and reports bad rows with their line number instead of dropping them. */
#ifndef FC_DATASET_H
#define FC_DATASET_H

#include <stddef.h>
#include <stdio.h>

#include "fc_item.h"

enum fc_format { FC_FORMAT_CSV = 1, FC_FORMAT_TSV, FC_FORMAT_JSONL };

#define FC_DATASET_POSITION_MAX 100000000LL /* positions are 1..this */
#define FC_DATASET_MAX_RECORD (1024 * 1024) /* bytes; a longer record is a bad row */

/* fc_format_from_name maps "csv", "tsv" or "jsonl" (also "ndjson"; any case) to an enum fc_format;
 * returns FC_EINVAL for anything else. */
int fc_format_from_name(const char *name);

/* fc_format_from_path guesses the format from a file name's extension: .csv, .tsv/.tab, .jsonl/.ndjson
 * (any case); returns FC_EINVAL for any other or no extension. */
int fc_format_from_path(const char *path);

/* Source column names (CSV/TSV header names, JSONL keys) of the three mapped fields. Matching is exact.
 * An empty type means "no type column". */
typedef struct fc_columns {
    char position[64];
    char term[64];
    char type[64];
} fc_columns;

/* fc_columns_default sets "position", "term", "type". */
void fc_columns_default(fc_columns *c);

/* fc_columns_parse reads a spec like "position=Position,term=Hangul,type=Word_Type" into c, starting from the
 * defaults (keys not given keep their default; spaces around keys and names are ignored; "" keeps all
 * defaults). Returns 0, or FC_EINVAL with a message in err (unknown key, missing '=', empty or too long name,
 * key given twice, position and term naming the same column); c is then unspecified. */
int fc_columns_parse(const char *spec, fc_columns *c, char *err, size_t errlen);

/* A bad row: line is the record's first physical line (1-based); reason is the full message including the line,
 * e.g. "line 9: expected 3 fields, got 2". */
typedef struct fc_row_error {
    long line;
    char reason[256];
} fc_row_error;

typedef struct fc_dataset fc_dataset;

/* fc_dataset_open starts reading fp (not closed by the reader; may be stdin or a pipe, whose rows are handled as
 * they arrive) in the given enum fc_format with the given column mapping (NULL = defaults). For CSV/TSV it reads
 * the header now: an empty input, an unreadable header or a mapped position/term column missing from it is an
 * error. A UTF-8 BOM at the start is skipped. A FILE with a descriptor is read with read(2) from the
 * descriptor's offset: do not read it through stdio first (to read it again, rewind it, which also moves the
 * descriptor, and open a new reader). Returns a reader (free with fc_dataset_close), or NULL with a message in
 * err. */
fc_dataset *fc_dataset_open(FILE *fp, int format, const fc_columns *cols, char *err, size_t errlen);

/* fc_dataset_next reads the next record, skipping blank lines. Returns 1 with *item filled (item is
 * overwritten, not cleared first: pass a zeroed or cleared item; the caller then owns it and frees it with
 * fc_item_clear), 0 at end of input, FC_EPARSE for a bad row (*rerr filled if rerr is not NULL, item untouched;
 * call again to go on with the next row), FC_EIO on a read error, FC_ENOMEM, or the wait hook's error (all sticky). Extra columns
 * travel in item->extra in header (JSONL: key) order; position, term and type are trimmed of ASCII spaces. */
int fc_dataset_next(fc_dataset *ds, fc_item *item, fc_row_error *rerr);

/* fc_dataset_set_wait installs fn, called with the input's descriptor before each read(2) of it (not for a FILE
 * without one): a caller with other work to keep going while the input is slow (a connection to service) waits
 * in fn until fd is readable. fn returns 0 to go on with the read, or a negative FC_E* code, which
 * fc_dataset_next then returns (sticky). fn NULL removes the hook. */
void fc_dataset_set_wait(fc_dataset *ds, int (*fn)(void *ud, int fd), void *ud);

/* fc_dataset_rows returns the number of data records seen so far, good and bad (blank lines not counted). */
long fc_dataset_rows(const fc_dataset *ds);

/* fc_dataset_line returns the number of physical lines consumed so far (header included). */
long fc_dataset_line(const fc_dataset *ds);

/* fc_dataset_close frees the reader (accepts NULL); it does not fclose the FILE. */
void fc_dataset_close(fc_dataset *ds);

#endif
