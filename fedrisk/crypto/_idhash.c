/*
 * Batch prefixed SHA-256 of customer ids: the order keys of PSI alignment, at C speed.
 *
 * Why: RR22 alignment of a million ids spent about a CPU-second per party in a Python loop of
 * str(id), strip() and one hashlib call per id, serial before the PSI library can start. Here
 * the same bytes are hashed by OpenSSL's libcrypto (SHA256_Init/Update/Final, the implementation
 * hashlib uses, with its SHA extensions); the loop over ids is C, and the hashing runs without
 * the GIL. This file does no cryptography of its own: it only arranges OpenSSL's calls.
 *
 * Each key is the first `width` bytes of SHA-256(prefix || norm(id)), where norm is
 * fedrisk.crypto.psi.normalize_id and the caller passes the prefix (for row_order:
 * ORDER_DOMAIN || 0x00 || hash_prefix(salt)). norm is reproduced in C only where it is
 * mechanical: integers (str() of a 64-bit integer is its decimal digits) and exact `str`
 * objects that are pure ASCII (strip() removes the characters str.isspace() accepts, casefold()
 * maps A-Z to a-z and leaves other ASCII alone). Every other object (non-ASCII strings, str
 * subclasses, bytes, floats, numpy scalars, ...) goes through the Python `normalize` callable the
 * caller passes (normalize_id itself), so the result is the Python path's by construction.
 *
 * Functions (both return `n * width` bytes, key i at offset i * width):
 *   digest_ints(buffer of int64 or uint64, is_signed, prefix, width)
 *   digest_objects(sequence, prefix, width, casefold, normalize)
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED /* the SHA256_* calls: no per-call context allocation */
#include <Python.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int check_width(Py_ssize_t width)
{
    if (width < 1 || width > SHA256_DIGEST_LENGTH) {
        PyErr_Format(PyExc_ValueError, "width must be between 1 and %d bytes", SHA256_DIGEST_LENGTH);
        return 0;
    }
    return 1;
}

static inline void finish(const SHA256_CTX *base, const unsigned char *data, size_t len, unsigned char *out,
                          Py_ssize_t width)
{
    SHA256_CTX c = *base;
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256_Update(&c, data, len);
    SHA256_Final(md, &c);
    memcpy(out, md, (size_t)width);
}

/* Decimal digits of v (with '-' when negative) into buf (at least 21 bytes); returns the length. */
static inline size_t format_int(uint64_t mag, int negative, unsigned char *buf)
{
    unsigned char tmp[20];
    size_t k = 0, n = 0;
    do {
        tmp[k++] = (unsigned char)('0' + mag % 10);
        mag /= 10;
    } while (mag);
    if (negative) buf[n++] = '-';
    while (k) buf[n++] = tmp[--k];
    return n;
}

static PyObject *digest_ints(PyObject *self, PyObject *args)
{
    Py_buffer ids, prefix;
    int is_signed;
    Py_ssize_t width;
    if (!PyArg_ParseTuple(args, "y*py*n", &ids, &is_signed, &prefix, &width)) return NULL;
    PyObject *out = NULL;
    if (!check_width(width)) goto done;
    if (ids.len % 8) {
        PyErr_SetString(PyExc_ValueError, "ids must be a buffer of 64-bit integers");
        goto done;
    }
    Py_ssize_t n = ids.len / 8;
    out = PyBytes_FromStringAndSize(NULL, n * width);
    if (!out) goto done;
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    const unsigned char *src = (const unsigned char *)ids.buf;
    SHA256_CTX base;
    SHA256_Init(&base);
    SHA256_Update(&base, prefix.buf, (size_t)prefix.len);
    Py_BEGIN_ALLOW_THREADS
    unsigned char text[24];
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t u;
        memcpy(&u, src + 8 * i, 8);
        int negative = is_signed && (int64_t)u < 0;
        uint64_t mag = negative ? (uint64_t)0 - u : u; /* also right for INT64_MIN */
        size_t len = format_int(mag, negative, text);
        finish(&base, text, len, dst + i * width, width);
    }
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&ids);
    PyBuffer_Release(&prefix);
    return out;
}

/* str.isspace() for an ASCII code point: \t \n \v \f \r, the separators 0x1c-0x1f, and space. */
static inline int ascii_space(unsigned char c)
{
    return c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f);
}

static PyObject *digest_objects(PyObject *self, PyObject *args)
{
    PyObject *seq, *normalize;
    Py_buffer prefix;
    Py_ssize_t width;
    int casefold;
    if (!PyArg_ParseTuple(args, "Oy*npO", &seq, &prefix, &width, &casefold, &normalize)) return NULL;
    PyObject *fast = NULL, *keep = NULL, *out = NULL;
    const unsigned char **ptr = NULL;
    Py_ssize_t *len = NULL;
    if (!check_width(width)) goto fail;
    if (!PyCallable_Check(normalize)) {
        PyErr_SetString(PyExc_TypeError, "normalize must be callable");
        goto fail;
    }
    fast = PySequence_List(seq); /* our own list: a callback cannot free the items pointed into */
    if (!fast) goto fail;
    Py_ssize_t n = PyList_GET_SIZE(fast);
    keep = PyList_New(0); /* normalised or case-folded copies, alive until hashed */
    ptr = PyMem_Malloc(sizeof(*ptr) * (size_t)(n ? n : 1));
    len = PyMem_Malloc(sizeof(*len) * (size_t)(n ? n : 1));
    if (!keep || !ptr || !len) {
        PyErr_NoMemory();
        goto fail;
    }
    /* 1. with the GIL: where each normalised id's UTF-8 bytes are */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PyList_GET_ITEM(fast, i);
#if PY_VERSION_HEX < 0x030C0000 /* before 3.12 a str made by the legacy API may not be "ready" */
        if (PyUnicode_CheckExact(o) && PyUnicode_READY(o) < 0) goto fail;
#endif
        if (PyUnicode_CheckExact(o) && PyUnicode_IS_ASCII(o)) {
            const unsigned char *s = (const unsigned char *)PyUnicode_DATA(o);
            Py_ssize_t a = 0, b = PyUnicode_GET_LENGTH(o);
            while (a < b && ascii_space(s[a])) a++;
            while (b > a && ascii_space(s[b - 1])) b--;
            int upper = 0;
            if (casefold)
                for (Py_ssize_t k = a; k < b && !upper; k++) upper = s[k] >= 'A' && s[k] <= 'Z';
            if (!upper) {
                ptr[i] = s + a;
                len[i] = b - a;
                continue;
            }
            /* A fresh object (NULL data): given the characters, CPython would return its shared
             * one-byte singleton for a 1-character id, and lowering that in place would change
             * b"A" for the whole interpreter. */
            PyObject *low = PyBytes_FromStringAndSize(NULL, b - a);
            if (!low || PyList_Append(keep, low) < 0) {
                Py_XDECREF(low);
                goto fail;
            }
            Py_DECREF(low);
            unsigned char *d = (unsigned char *)PyBytes_AS_STRING(low);
            for (Py_ssize_t k = 0; k < b - a; k++) {
                unsigned char c = s[a + k];
                d[k] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
            }
            ptr[i] = d;
            len[i] = b - a;
            continue;
        }
        PyObject *norm = PyObject_CallOneArg(normalize, o);
        if (!norm) goto fail;
        if (!PyUnicode_Check(norm)) {
            Py_DECREF(norm);
            PyErr_SetString(PyExc_TypeError, "normalize must return str");
            goto fail;
        }
        int rc = PyList_Append(keep, norm);
        Py_DECREF(norm);
        if (rc < 0) goto fail;
        Py_ssize_t size;
        const char *u = PyUnicode_AsUTF8AndSize(norm, &size); /* cached in norm, which keep holds */
        if (!u) goto fail;
        ptr[i] = (const unsigned char *)u;
        len[i] = size;
    }
    out = PyBytes_FromStringAndSize(NULL, n * width);
    if (!out) goto fail;
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    SHA256_CTX base;
    SHA256_Init(&base);
    SHA256_Update(&base, prefix.buf, (size_t)prefix.len);
    /* 2. without the GIL: the hashing (`fast` and `keep` hold every byte pointed to) */
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) finish(&base, ptr[i], (size_t)len[i], dst + i * width, width);
    Py_END_ALLOW_THREADS
    Py_DECREF(fast);
    Py_DECREF(keep);
    PyMem_Free(ptr);
    PyMem_Free(len);
    PyBuffer_Release(&prefix);
    return out;
fail:
    Py_XDECREF(fast);
    Py_XDECREF(keep);
    Py_XDECREF(out);
    PyMem_Free(ptr);
    PyMem_Free(len);
    PyBuffer_Release(&prefix);
    return NULL;
}

static PyMethodDef methods[] = {
    {"digest_ints", digest_ints, METH_VARARGS,
     "digest_ints(ids, is_signed, prefix, width) -> bytes: SHA-256(prefix || decimal(id))[:width] per 64-bit id."},
    {"digest_objects", digest_objects, METH_VARARGS,
     "digest_objects(ids, prefix, width, casefold, normalize) -> bytes: SHA-256(prefix || utf8(norm(id)))[:width]."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_idhash",
                                    "Batch prefixed SHA-256 of ids over OpenSSL (see fedrisk.crypto.idhash).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__idhash(void) { return PyModule_Create(&module); }
