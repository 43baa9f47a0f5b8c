/* gguf.h — read-only access to a GGUF model file (versions 2 and 3) through mmap.
 *
 * gguf_open() maps the file and validates everything before returning: the header, every
 * metadata key and value (types 0–12, nested arrays one level deep, string lengths), the tensor
 * table (name, ≤ 4 dims, known type, offset aligned to general.alignment) and that each
 * tensor's bytes lie inside the file. After that, accessors never read outside the mapping.
 * A file that fails any check is refused with PL_CORRUPT (or PL_UNSUPPORTED for an unknown
 * tensor type or version) and a message naming the problem ("tensor 'blk.3.attn_q.weight':
 * data ends at 9123456, past the end of the file (9000000)").
 *
 * Thread-safety: a gguf_file is immutable after open; any number of threads may read it.
 * Ownership: every pointer returned (strings, arrays, tensor data) is borrowed from the mapping
 * and lives until gguf_close(). Strings in GGUF are not NUL-terminated: they come back as
 * gguf_str {ptr, len}. */
#ifndef PARLEY_GGUF_H
#define PARLEY_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum gguf_vtype {
    GGUF_U8 = 0,
    GGUF_I8 = 1,
    GGUF_U16 = 2,
    GGUF_I16 = 3,
    GGUF_U32 = 4,
    GGUF_I32 = 5,
    GGUF_F32 = 6,
    GGUF_BOOL = 7,
    GGUF_STRING = 8,
    GGUF_ARRAY = 9,
    GGUF_U64 = 10,
    GGUF_I64 = 11,
    GGUF_F64 = 12,
} gguf_vtype;

/* Tensor element types (ggml's ids; only those listed are accepted; more are appended later). */
typedef enum gguf_ttype {
    GGML_F32 = 0,
    GGML_F16 = 1,
    GGML_Q4_0 = 2,
    GGML_Q4_1 = 3,
    GGML_Q5_0 = 6,
    GGML_Q5_1 = 7,
    GGML_Q8_0 = 8,
    GGML_Q8_1 = 9,
    GGML_Q2_K = 10,
    GGML_Q3_K = 11,
    GGML_Q4_K = 12,
    GGML_Q5_K = 13,
    GGML_Q6_K = 14,
    GGML_Q8_K = 15,
    GGML_BF16 = 30,
} gguf_ttype;

typedef struct gguf_str {
    const char *ptr; /* not NUL-terminated */
    uint64_t len;
} gguf_str;

typedef struct gguf_tensor {
    gguf_str name;
    uint32_t n_dims;
    uint64_t ne[4]; /* ne[0] is the row length (contiguous); unused dims are 1 */
    gguf_ttype type;
    uint64_t offset; /* from the start of the data section */
    uint64_t nbytes;
    const void *data; /* borrowed from the mapping */
} gguf_tensor;

typedef struct gguf_file gguf_file;

/* Opens and validates `path`. On PL_OK *out is owned by the caller (gguf_close). Errors:
 * PL_IO (cannot open/map), PL_CORRUPT, PL_UNSUPPORTED; the message is in pl_err_last(). */
pl_status gguf_open(const char *path, gguf_file **out);
/* Same, over a caller-owned buffer that must outlive the gguf_file (for the fuzzer and tests);
 * nothing is copied. */
pl_status gguf_open_buffer(const void *buf, size_t len, gguf_file **out);
void gguf_close(gguf_file *f); /* accepts NULL */

uint32_t gguf_version(const gguf_file *f);
uint64_t gguf_alignment(const gguf_file *f);
uint64_t gguf_file_size(const gguf_file *f);

/* --- metadata ---------------------------------------------------------------------------- */
/* Index of `key`, or -1. */
int64_t gguf_find_key(const gguf_file *f, const char *key);
uint64_t gguf_n_keys(const gguf_file *f);
gguf_str gguf_key_name(const gguf_file *f, uint64_t i);
gguf_vtype gguf_key_type(const gguf_file *f, uint64_t i);

/* Typed getters by key: PL_NOT_FOUND when absent, PL_INVALID when the stored type does not
 * convert (integers of any width convert to the asked integer type when the value fits;
 * F32/F64 convert to double). The message names the key. */
pl_status gguf_get_u64(const gguf_file *f, const char *key, uint64_t *v);
pl_status gguf_get_i64(const gguf_file *f, const char *key, int64_t *v);
pl_status gguf_get_u32(const gguf_file *f, const char *key, uint32_t *v);
pl_status gguf_get_f64(const gguf_file *f, const char *key, double *v);
pl_status gguf_get_bool(const gguf_file *f, const char *key, bool *v);
pl_status gguf_get_str(const gguf_file *f, const char *key, gguf_str *v);
/* Variants with a default when the key is absent (still PL_INVALID on a wrong type). */
pl_status gguf_get_u32_or(const gguf_file *f, const char *key, uint32_t def, uint32_t *v);
pl_status gguf_get_f64_or(const gguf_file *f, const char *key, double def, double *v);

/* Arrays: element type and count; elements read with the helpers below. */
typedef struct gguf_array {
    gguf_vtype type;
    uint64_t n;
    const uint8_t *data; /* for fixed-size types: packed little-endian elements */
    /* for GGUF_STRING arrays: use gguf_array_str(); strings are indexed at open time */
    const void *priv;
} gguf_array;
pl_status gguf_get_array(const gguf_file *f, const char *key, gguf_array *a);
/* i-th string of a string array (borrowed); {NULL,0} when out of range. O(1). */
gguf_str gguf_array_str(const gguf_array *a, uint64_t i);
/* i-th element of a numeric array converted to double / int64. */
double gguf_array_f64(const gguf_array *a, uint64_t i);
int64_t gguf_array_i64(const gguf_array *a, uint64_t i);

/* --- tensors ----------------------------------------------------------------------------- */
uint64_t gguf_n_tensors(const gguf_file *f);
const gguf_tensor *gguf_tensor_at(const gguf_file *f, uint64_t i);
/* The tensor named `name`, or NULL. */
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

/* Compares a gguf_str with a C string. */
bool gguf_str_eq(gguf_str s, const char *c);

/* Name of a tensor type ("q4_1"), or "unknown". */
const char *gguf_ttype_name(gguf_ttype t);

#endif
