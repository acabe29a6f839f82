/* SHA-256 (FIPS 180-4), small and dependency-free, used for cache keys. */
#ifndef FC_SHA256_H
#define FC_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define FC_SHA256_DIGEST_LEN 32
#define FC_SHA256_HEX_LEN 64 /* hex digits, excluding the NUL */

typedef struct fc_sha256 {
    uint32_t h[8];     /* chaining state */
    uint64_t nbytes;   /* message bytes hashed so far */
    uint8_t block[64]; /* pending partial block */
    size_t used;       /* bytes pending in block, < 64 */
} fc_sha256;

/* fc_sha256_init resets ctx to hash a new message. */
void fc_sha256_init(fc_sha256 *ctx);

/* fc_sha256_update hashes n more bytes of p (p may be NULL when n is 0). */
void fc_sha256_update(fc_sha256 *ctx, const void *p, size_t n);

/* fc_sha256_final writes the 32-byte digest to out; ctx must be re-initialised before reuse. */
void fc_sha256_final(fc_sha256 *ctx, uint8_t out[FC_SHA256_DIGEST_LEN]);

/* fc_sha256_to_hex writes the digest as 64 lowercase hex digits plus a NUL to hex. */
void fc_sha256_to_hex(const uint8_t digest[FC_SHA256_DIGEST_LEN], char hex[FC_SHA256_HEX_LEN + 1]);

/* fc_sha256_hex hashes n bytes of p in one call and writes the lowercase hex digest to hex. */
void fc_sha256_hex(const void *p, size_t n, char hex[FC_SHA256_HEX_LEN + 1]);

#endif
