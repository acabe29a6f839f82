/* The flashcard pipeline codec: builds the stage-1 (analysis) and stage-2 (cards) chat-completion request bodies
 * and parses and validates the answers. Pure functions over buffers, no I/O except loading a prompt file.
 * The worker sees it only through fc_processor (at the end), the interface another pipeline would implement. */
#ifndef FC_PIPELINE_H
#define FC_PIPELINE_H

#include <stddef.h>

#include "fc_buf.h"
#include "fc_item.h"
#include "fc_sha256.h"

/* Pipeline settings; the strings are owned by whoever fills the struct (see fc_pipeline_conf_free). */
typedef struct fc_pipeline_conf {
    char *stage1_model;  /* model name sent in stage-1 requests */
    char *stage2_model;  /* model name sent in stage-2 requests */
    char *stage1_prompt; /* stage-1 system prompt text (loaded, not a path) */
    char *stage2_prompt; /* stage-2 system prompt text */
    double temperature;  /* sampling temperature, finite, >= 0 */
    int max_tokens;      /* completion token limit per request, > 0 */
    /* Filled by fc_pipeline_conf_prepare: what every request of a stage shares, rendered once. */
    int prepared;
    char *body_prefix[2];  /* body up to the user message's content, per stage */
    char *body_suffix;     /* body after it */
    fc_sha256 key_ctx[2];  /* cache-key hash state after model and prompt, per stage */
} fc_pipeline_conf;

/* fc_pipeline_conf_prepare renders the parts of the request bodies and cache keys that do not
 * change between calls (the escaped system prompt, the model, the settings), so each call only
 * appends its own user content. Call once after filling the struct; 0 or FC_ENOMEM. Bodies and
 * keys are byte-identical with or without it. */
int fc_pipeline_conf_prepare(fc_pipeline_conf *c);

/* fc_pipeline_stage_cache_key is fc_pipeline_cache_key for stage 1 or 2 of a prepared conf. */
void fc_pipeline_stage_cache_key(const fc_pipeline_conf *c, int stage, const char *input, char key[65]);

/* fc_pipeline_conf_free frees the strings and the prepared parts; accepts NULL. */
void fc_pipeline_conf_free(fc_pipeline_conf *c);

/* fc_pipeline_load_prompt reads the whole prompt file at path into *out (NUL-terminated, caller frees).
 * Returns 0, FC_ENOTFOUND, FC_EIO, FC_ETOOBIG (over 1 MiB), FC_EPARSE (empty file) or FC_ENOMEM; on failure
 * writes a message naming the path into err and leaves *out NULL. */
int fc_pipeline_load_prompt(const char *path, char **out, char *err, size_t errlen);

/* fc_pipeline_item_json returns the item as compact JSON {"position":..,"term":..,"type":..} with UTF-8 left
 * unescaped; caller frees. NULL on allocation failure. */
char *fc_pipeline_item_json(const fc_item *it);

/* fc_pipeline_stage1_body returns the stage-1 request body (caller frees) and, if user_content is not NULL, a copy
 * of the user message, i.e. the item JSON (caller frees). NULL (and *user_content NULL) on allocation failure. */
char *fc_pipeline_stage1_body(const fc_pipeline_conf *c, const fc_item *it, char **user_content);

/* fc_pipeline_stage2_body returns the stage-2 request body whose user message is
 * {"position":..,"term":..,"stage1_result":<stage1_json>}; stage1_json is the string fc_pipeline_stage1_parse
 * produced. Caller frees the result and *user_content. NULL if stage1_json is not a JSON object or on allocation
 * failure. */
char *fc_pipeline_stage2_body(const fc_pipeline_conf *c, const fc_item *it, const char *stage1_json,
                              char **user_content);

/* fc_pipeline_envelope extracts choices[0].message.content (*content, caller frees) and the usage token counts
 * (0 when absent; either pointer may be NULL) from a chat.completion response body of len bytes (need not be
 * NUL-terminated; any bytes). Returns 0, FC_EPARSE with a reason in why, or FC_ENOMEM. A body holding a NUL byte
 * is not JSON, and content holding one (an escaped \u0000) is not an answer ("answer contains a NUL byte at
 * offset N"): on success *content is a C string whose strlen is its whole length. */
int fc_pipeline_envelope(const char *body, size_t len, char **content, long *prompt_tok, long *completion_tok,
                         char *why, size_t whylen);

/* fc_pipeline_error_reason writes a short single-line reason (at most ~200 bytes, cleaned by fc_text_clean)
 * for a non-2xx response body into why: error.message of an OpenAI error body, else the start of the body.
 * Returns 0 if an error message was found, FC_EPARSE if the fallback was used. */
int fc_pipeline_error_reason(const char *body, size_t len, char *why, size_t whylen);

/* fc_pipeline_strip_fence returns a new NUL-terminated string (caller frees) holding content without surrounding
 * whitespace and without a ```lang ... ``` fence around it (a missing closing fence is tolerated); its length goes
 * to *outlen if outlen is not NULL. Any bytes are copied as they are, NUL included: *outlen counts every byte of
 * the copy, which strlen may not. Tabs are not trimmed (they separate TSV fields). NULL on allocation failure. */
char *fc_pipeline_strip_fence(const char *content, size_t len, size_t *outlen);

/* The answer parsers below and the processor's `answer` take content of len bytes that may hold any bytes (a
 * cached answer is read back as it was stored). Content with a NUL byte or invalid UTF-8 is FC_EPARSE
 * ("stage 2 answer contains a NUL byte at offset N", "... is not valid UTF-8 at offset N"). */

/* fc_pipeline_stage1_parse validates a stage-1 answer (a JSON object, possibly fenced, nested at most 64 deep:
 * deeper is "stage 1 answer is not JSON: nesting too deep") and on success sets *stage1_json to the object
 * re-serialized compactly with keys in received order (caller frees), every string in it (keys included)
 * cleaned by fc_text_clean (FC_TEXT_FIELD).
 * Returns 0, FC_EPARSE with a reason in why (e.g. "stage 1 answer lacks field 'ipa'"), or FC_ENOMEM. */
int fc_pipeline_stage1_parse(const char *content, size_t len, char **stage1_json, char *why, size_t whylen);

/* Card columns, in the order of the stage-2 TSV header. */
enum fc_card_field {
    FC_CARD_POSITION,
    FC_CARD_TERM,
    FC_CARD_TERM_NUMBER,
    FC_CARD_TAB_NAME,
    FC_CARD_PRIMER,
    FC_CARD_FRONT,
    FC_CARD_BACK,
    FC_CARD_TAGS,
    FC_CARD_HONORIFIC_LEVEL,
    FC_CARD_NFIELDS
};

/* fc_card_columns names the card columns in FC_CARD_* order (static strings): the keys of a result's card
 * objects and the columns of the producer's TSV output. */
extern const char *const fc_card_columns[FC_CARD_NFIELDS];

/* The header line of the stage-2 TSV answer (and of the results file), without a newline. */
#define FC_CARD_HEADER "position\tterm\tterm_number\ttab_name\tprimer\tfront\tback\ttags\thonorific_level"

/* One flashcard: FC_CARD_NFIELDS owned strings, never NULL (honorific_level may be ""). Fields are TSV text as the
 * model wrote it, cleaned by fc_text_clean (FC_TEXT_FIELD): no control character (a CR or VT inside a field is a
 * space, an ESC is dropped), valid UTF-8; escape sequences such as a literal backslash-t stay as they are. */
typedef struct fc_card {
    char *f[FC_CARD_NFIELDS];
} fc_card;

/* fc_pipeline_stage2_parse parses a stage-2 TSV answer (possibly fenced, LF or CRLF, header optional) into
 * *cards (array of *ncards, caller frees with fc_cards_free). Blank lines and lines without a tab (commentary)
 * are skipped; a row has 9 fields, or 8 (no honorific_level), empty fields after the ninth (trailing tabs)
 * ignored. A row with any other number of fields makes the whole answer bad: a field that held a tab, or lost
 * one, would shift every column after it. Returns 0, FC_EPARSE with a reason in why ("stage 2 answer has no
 * cards", "stage 2 answer line 3 has 11 fields (expected 9)"), or FC_ENOMEM. */
int fc_pipeline_stage2_parse(const char *content, size_t len, fc_card **cards, size_t *ncards, char *why,
                             size_t whylen);

/* fc_cards_free frees n cards and the array; accepts NULL. */
void fc_cards_free(fc_card *cards, size_t n);

/* How a request outcome should be handled. */
/* FC_CLASS_CRASHED, FC_CLASS_CANCELLED and FC_CLASS_BUDGET are not HTTP classes: the batch kept coming back
 * unsettled (its workers died), an operator cancelled the item's job, or the job's budget was spent. */
enum fc_class {
    FC_CLASS_OK, FC_CLASS_RETRY, FC_CLASS_PERMANENT, FC_CLASS_AUTH, FC_CLASS_CRASHED, FC_CLASS_CANCELLED,
    FC_CLASS_BUDGET
};

/* fc_pipeline_classify maps an HTTP status to an fc_class. Pass 0 for a transport error or timeout and a
 * negative value (e.g. FC_EPARSE) for an invalid answer: both are FC_CLASS_RETRY, as are 408, 409, 425, 429 and
 * 5xx. 401 and 403 are FC_CLASS_AUTH, other 3xx/4xx FC_CLASS_PERMANENT, 2xx FC_CLASS_OK. */
int fc_pipeline_classify(int http_status);

/* fc_class_name returns "ok", "retryable", "permanent", "auth", "crashed", "cancelled" or "budget" (static; "unknown" for other values). */
const char *fc_class_name(int cls);

/* fc_pipeline_estimate_tokens returns the tokens to reserve for a request: body_len / 4 + max_tokens. */
long fc_pipeline_estimate_tokens(size_t body_len, int max_tokens);

/* fc_pipeline_cache_key writes the 64-hex-digit SHA-256 of model '\0' prompt '\0' input into key.
 * Stage 1 uses the item JSON as input, stage 2 the stage-1 result JSON. NULL strings count as "". */
void fc_pipeline_cache_key(const char *model, const char *prompt, const char *input,
                           char key[FC_SHA256_HEX_LEN + 1]);

/* ---- The processing step as an interface: item in, result or classified error out ----
 *
 * A processor makes `nstages` chat-completion calls per item. The request of stage s (1-based) is
 * built from the item and the result of stage s-1; the content of each answer is validated into the
 * stage's result, a compact JSON text. A bad answer is FC_EPARSE with a reason (a retryable
 * failure); HTTP errors are classified by fc_pipeline_classify. The worker knows nothing else of
 * what it computes: it schedules the calls under the limiter and breaker, caches each stage's
 * accepted answer content (a cache hit goes through `answer` again), and publishes `result` for an
 * item that got through every stage. */

#define FC_STAGES_MAX 4

typedef struct fc_processor {
    const char *name;
    int nstages;         /* 1..FC_STAGES_MAX */
    const void *self;    /* passed to every function below */
    /* request returns stage's request body for it (caller frees), prev being the result of the
     * stage before (NULL for stage 1), and hands the user content, which the cache key hashes, to
     * *user (caller frees; may be NULL). NULL when out of memory or prev is unusable. */
    char *(*request)(const void *self, int stage, const fc_item *it, const char *prev, char **user);
    /* cache_key writes the 64-hex-digit cache key of stage's request for that user content. */
    void (*cache_key)(const void *self, int stage, const char *user, char key[FC_SHA256_HEX_LEN + 1]);
    /* answer validates the content of stage's answer, len bytes of anything (a NUL byte or invalid
     * UTF-8 is a bad answer), into its result, compact JSON text (caller frees): 0, FC_EPARSE with
     * the reason in why, or FC_ENOMEM. */
    int (*answer)(const void *self, int stage, const char *content, size_t len, char **result, char *why,
                  size_t whylen);
    /* result appends the item's result to the JSON object being written for it in the results
     * message, as members (",\"name\":value..."), from every stage's result; 0 or FC_ENOMEM. */
    int (*result)(const void *self, char *const *results, fc_buf *out);
} fc_processor;

/* fc_flashcard_processor returns the two-stage flashcard processor over c (kept by pointer; prepare
 * it first). Stage 1's result is the analysis object, stage 2's the array of cards; the item's
 * result members are "analysis" and "cards". */
fc_processor fc_flashcard_processor(const fc_pipeline_conf *c);

#endif
