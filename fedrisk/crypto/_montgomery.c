/*
 * Batch modular-multiplication kernels in the Montgomery domain, over GMP's public mpn layer.
 *
 * Why: every hot loop of SecureBoost (OU encryption, encrypted histograms, compression) is a long
 * run of products modulo one fixed modulus. Through gmpy2 each product is a Python-level multiply
 * and a division (two allocations, ~1.8-2.8 us at 2048 bits here); here it is one mpn_mul_n and a
 * Montgomery reduction on preallocated limbs, tables are contiguous limb arrays instead of
 * scattered Python objects, and the GIL is released, so a party's threads use every core while
 * the private key never leaves its process. Arithmetic is GMP's (mpn_mul_n, mpn_sqr,
 * mpn_addmul_1, mpn_tdiv_qr): this file only arranges it. Not constant time (neither is gmpy2);
 * the callers' docstrings say why that is acceptable for them.
 *
 * Representation: a modulus n is odd, L limbs, R = 2^(64 L). The Montgomery form of x is xR mod n;
 * mont_mul(a, b) = a b R^-1 mod n. Inputs and outputs of every Python-visible function are
 * fixed-width big-endian byte strings (the wire and process-pool format), except tables, which
 * are native-endian limb arrays in Montgomery form made by power_table().
 *
 * Invariant: every value handed to mont_mul is < n (checked on entry for caller data); then every
 * result is < n as well.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <gmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LIMBS 256 /* 16384-bit moduli */

typedef struct {
    mp_size_t L;
    mp_limb_t n[MAX_LIMBS];
    mp_limb_t r2[MAX_LIMBS]; /* R^2 mod n */
    mp_limb_t ninv;          /* -n^-1 mod 2^64 */
    Py_ssize_t w;            /* byte width of n's big-endian form */
    int adx;                 /* use the mulx/adx product (L <= ADX_MAX_LIMBS on a CPU with it) */
} Mod;

/* ------------------------------------------------------------------------------------------ */
/* byte <-> limb conversion                                                                   */
/* ------------------------------------------------------------------------------------------ */

static inline mp_limb_t load_be64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return (mp_limb_t)__builtin_bswap64(v);
}

/* Big-endian bytes (width w) to L limbs; returns 0 if the value does not fit in L limbs. */
static int be_to_limbs(const unsigned char *src, Py_ssize_t w, mp_limb_t *dst, mp_size_t L)
{
    Py_ssize_t full = w / 8, rest = w % 8;
    mp_size_t i = 0;
    for (; i < (mp_size_t)full && i < L; i++) dst[i] = load_be64(src + w - 8 * (i + 1));
    for (Py_ssize_t j = i; j < full; j++) /* whole limbs beyond L must be zero */
        if (load_be64(src + w - 8 * (j + 1))) return 0;
    if (rest) {
        mp_limb_t top = 0;
        for (Py_ssize_t k = 0; k < rest; k++) top = (top << 8) | src[k];
        if ((mp_size_t)full < L) dst[i++] = top;
        else if (top) return 0;
    }
    for (; i < L; i++) dst[i] = 0;
    return 1;
}

/* L limbs to big-endian bytes of width w; returns 0 if the value needs more than w bytes. */
static int limbs_to_be(const mp_limb_t *src, mp_size_t L, unsigned char *dst, Py_ssize_t w)
{
    Py_ssize_t full = w / 8, rest = w % 8;
    mp_size_t i = 0;
    for (; i < (mp_size_t)full; i++) {
        uint64_t v = i < L ? __builtin_bswap64((uint64_t)src[i]) : 0;
        memcpy(dst + w - 8 * (i + 1), &v, 8);
    }
    if (rest) {
        mp_limb_t top = i < L ? src[i++] : 0;
        if (top >> (8 * rest)) return 0;
        for (Py_ssize_t k = rest - 1; k >= 0; k--) {
            dst[k] = (unsigned char)top;
            top >>= 8;
        }
    }
    for (; i < L; i++)
        if (src[i]) return 0;
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Montgomery product on x86-64 with BMI2 + ADX (mulx, adcx, adox)                            */
/* ------------------------------------------------------------------------------------------ */

/* Why: distributions' libgmp is built for generic x86-64 (no mulx/adx code; Debian 12's 6.2.1 has
   none), so its mpn_mul_n + mpn_addmul_1 reduction runs at ~2 cycles per limb product. For the
   sizes SecureBoost uses (11, 22 and 32 limbs: q, p^2 and n of a 2048-bit OU key) a CIOS
   Montgomery product whose rows keep two carry chains in flight (adcx on CF for the running sum,
   adox on OF for the previous high half) is ~25-30 % faster here. Chosen at run time (CPUID leaf
   7: BMI2 and ADX) for moduli of at most ADX_MAX_LIMBS limbs; GMP's path otherwise. The assembler
   accepts these instructions whatever the compile flags, so no -march is needed. Same results
   bit for bit (both are the fully reduced a b R^-1 mod n). */
#if defined(__x86_64__) && defined(__GNUC__)
#define FEDRISK_ADX 1
/* one step of t[0..L+1] += x * v[0..L-1]: limb i, high half of the product into H, the previous
   step's high half (P) added on the OF chain, t[i] on the CF chain */
#define ADX_STEP(i, H, P) \
    "mulx " #i "*8(%[v]), %%rax, " H "\n\t" \
    "adcx " #i "*8(%[t]), %%rax\n\t" \
    "adox " P ", %%rax\n\t" \
    "movq %%rax, " #i "*8(%[t])\n\t"
#define ADX_E(i) ADX_STEP(i, "%%r10", "%%r11")
#define ADX_O(i) ADX_STEP(i, "%%r11", "%%r10")
/* the last step's high half (H) and both carries into t[L], then the carries into t[L+1] */
#define ADX_TAIL(L, H, P) \
    "movq " #L "*8(%[t]), %%rax\n\t" \
    "adcx " H ", %%rax\n\t" \
    "movl $0, " P "d\n\t" \
    "adox " P ", %%rax\n\t" \
    "movq %%rax, " #L "*8(%[t])\n\t" \
    "movq (" #L "+1)*8(%[t]), %%rax\n\t" \
    "adcx " P ", %%rax\n\t" \
    "adox " P ", %%rax\n\t" \
    "movq %%rax, (" #L "+1)*8(%[t])\n\t"
#define ADX_R1 ADX_E(0)
#define ADX_R2 ADX_R1 ADX_O(1)
#define ADX_R3 ADX_R2 ADX_E(2)
#define ADX_R4 ADX_R3 ADX_O(3)
#define ADX_R5 ADX_R4 ADX_E(4)
#define ADX_R6 ADX_R5 ADX_O(5)
#define ADX_R7 ADX_R6 ADX_E(6)
#define ADX_R8 ADX_R7 ADX_O(7)
#define ADX_R9 ADX_R8 ADX_E(8)
#define ADX_R10 ADX_R9 ADX_O(9)
#define ADX_R11 ADX_R10 ADX_E(10)
#define ADX_R12 ADX_R11 ADX_O(11)
#define ADX_R13 ADX_R12 ADX_E(12)
#define ADX_R14 ADX_R13 ADX_O(13)
#define ADX_R15 ADX_R14 ADX_E(14)
#define ADX_R16 ADX_R15 ADX_O(15)
#define ADX_R17 ADX_R16 ADX_E(16)
#define ADX_R18 ADX_R17 ADX_O(17)
#define ADX_R19 ADX_R18 ADX_E(18)
#define ADX_R20 ADX_R19 ADX_O(19)
#define ADX_R21 ADX_R20 ADX_E(20)
#define ADX_R22 ADX_R21 ADX_O(21)
#define ADX_R23 ADX_R22 ADX_E(22)
#define ADX_R24 ADX_R23 ADX_O(23)
#define ADX_R25 ADX_R24 ADX_E(24)
#define ADX_R26 ADX_R25 ADX_O(25)
#define ADX_R27 ADX_R26 ADX_E(26)
#define ADX_R28 ADX_R27 ADX_O(27)
#define ADX_R29 ADX_R28 ADX_E(28)
#define ADX_R30 ADX_R29 ADX_O(29)
#define ADX_R31 ADX_R30 ADX_E(30)
#define ADX_R32 ADX_R31 ADX_O(31)
/* row for an odd L ends on an even step (high half in r10), for an even L on an odd one (r11) */
#define ADX_ROW_FN(L, TAILH, TAILP) \
    static void adx_row_##L(mp_limb_t *t, const mp_limb_t *v, mp_limb_t x) \
    { \
        __asm__ volatile("xorl %%r11d, %%r11d\n\t" ADX_R##L ADX_TAIL(L, TAILH, TAILP) \
                         : : [t] "r"(t), [v] "r"(v), "d"(x) : "rax", "r10", "r11", "cc", "memory"); \
    }
#define ADX_ROW_ODD(L) ADX_ROW_FN(L, "%%r10", "%%r11")
#define ADX_ROW_EVEN(L) ADX_ROW_FN(L, "%%r11", "%%r10")
ADX_ROW_ODD(1) ADX_ROW_EVEN(2) ADX_ROW_ODD(3) ADX_ROW_EVEN(4) ADX_ROW_ODD(5) ADX_ROW_EVEN(6) ADX_ROW_ODD(7)
ADX_ROW_EVEN(8) ADX_ROW_ODD(9) ADX_ROW_EVEN(10) ADX_ROW_ODD(11) ADX_ROW_EVEN(12) ADX_ROW_ODD(13) ADX_ROW_EVEN(14)
ADX_ROW_ODD(15) ADX_ROW_EVEN(16) ADX_ROW_ODD(17) ADX_ROW_EVEN(18) ADX_ROW_ODD(19) ADX_ROW_EVEN(20) ADX_ROW_ODD(21)
ADX_ROW_EVEN(22) ADX_ROW_ODD(23) ADX_ROW_EVEN(24) ADX_ROW_ODD(25) ADX_ROW_EVEN(26) ADX_ROW_ODD(27) ADX_ROW_EVEN(28)
ADX_ROW_ODD(29) ADX_ROW_EVEN(30) ADX_ROW_ODD(31) ADX_ROW_EVEN(32)
#define ADX_MAX_LIMBS 32
typedef void (*adx_row_fn)(mp_limb_t *, const mp_limb_t *, mp_limb_t);
static const adx_row_fn adx_rows[ADX_MAX_LIMBS + 1] = {
    NULL, adx_row_1, adx_row_2, adx_row_3, adx_row_4, adx_row_5, adx_row_6, adx_row_7, adx_row_8, adx_row_9,
    adx_row_10, adx_row_11, adx_row_12, adx_row_13, adx_row_14, adx_row_15, adx_row_16, adx_row_17, adx_row_18,
    adx_row_19, adx_row_20, adx_row_21, adx_row_22, adx_row_23, adx_row_24, adx_row_25, adx_row_26, adx_row_27,
    adx_row_28, adx_row_29, adx_row_30, adx_row_31, adx_row_32,
};

#include <cpuid.h>
static int adx_usable(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (b & (1u << 8)) && (b & (1u << 19)); /* BMI2 (mulx) and ADX (adcx, adox) */
}
#else
#define ADX_MAX_LIMBS 0
static int adx_usable(void) { return 0; }
#endif
static int use_adx = -1; /* -1: not yet probed; set_adx() overrides (tests, benchmarks) */

/* ------------------------------------------------------------------------------------------ */
/* Montgomery arithmetic                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* Parse an odd modulus > 1 from big-endian bytes and derive its constants. Sets a Python error. */
static int mod_init(Mod *m, const unsigned char *nb, Py_ssize_t w)
{
    Py_ssize_t lead = 0;
    while (lead < w && nb[lead] == 0) lead++;
    Py_ssize_t sig = w - lead;
    if (sig == 0 || (sig + 7) / 8 > MAX_LIMBS) {
        PyErr_SetString(PyExc_ValueError, "modulus must be positive and at most 16384 bits");
        return 0;
    }
    m->L = (mp_size_t)((sig + 7) / 8);
    m->w = w;
    be_to_limbs(nb + lead, sig, m->n, m->L);
    if ((m->n[0] & 1) == 0 || (m->L == 1 && m->n[0] == 1)) {
        PyErr_SetString(PyExc_ValueError, "modulus must be odd and greater than 1");
        return 0;
    }
    /* Newton iteration for n^-1 mod 2^64: correct to 3 bits at the start, doubling each step */
    mp_limb_t n0 = m->n[0], inv = n0;
    for (int i = 0; i < 6; i++) inv *= 2 - n0 * inv;
    m->ninv = (mp_limb_t)0 - inv;
    if (use_adx < 0) use_adx = adx_usable();
    m->adx = use_adx && m->L <= ADX_MAX_LIMBS;
    /* R^2 mod n = remainder of 2^(128 L) */
    mp_size_t nl = 2 * m->L + 1;
    mp_limb_t *num = calloc((size_t)nl, sizeof(mp_limb_t));
    mp_limb_t *quo = calloc((size_t)(nl - m->L + 1), sizeof(mp_limb_t));
    if (!num || !quo) {
        free(num);
        free(quo);
        PyErr_NoMemory();
        return 0;
    }
    num[2 * m->L] = 1;
    mpn_tdiv_qr(quo, m->r2, 0, num, nl, m->n, m->L);
    free(num);
    free(quo);
    return 1;
}

/* r = t R^-1 mod n for t < n R (2L limbs, destroyed); r may not alias t. */
static void redc(const Mod *m, mp_limb_t *r, mp_limb_t *t)
{
    mp_size_t L = m->L;
    for (mp_size_t i = 0; i < L; i++) {
        mp_limb_t u = t[i] * m->ninv;
        /* t[i] becomes 0; its carry belongs at position i + L and is parked in t[i] */
        t[i] = mpn_addmul_1(t + i, m->n, L, u);
    }
    mp_limb_t cy = mpn_add_n(r, t + L, t, L);
    if (cy || mpn_cmp(r, m->n, L) >= 0) mpn_sub_n(r, r, m->n, L);
}

/* r = a b R^-1 mod n; tmp has 2L + 1 limbs; r may alias a or b. */
static inline void mont_mul(const Mod *m, mp_limb_t *r, const mp_limb_t *a, const mp_limb_t *b, mp_limb_t *tmp)
{
#if defined(FEDRISK_ADX)
    if (m->adx) {
        /* CIOS: row i adds a[i] b and then u n (u making the lowest limb 0) into tmp[i..i+L+1]; the
           window slides up one limb per row instead of shifting (tmp: 2L + 1 limbs used) */
        mp_size_t L = m->L;
        adx_row_fn row = adx_rows[L];
        memset(tmp, 0, (size_t)(2 * L + 1) * sizeof(mp_limb_t));
        for (mp_size_t i = 0; i < L; i++) {
            mp_limb_t *t = tmp + i;
            row(t, b, a[i]);
            row(t, m->n, t[0] * m->ninv);
        }
        if (tmp[2 * L] || mpn_cmp(tmp + L, m->n, L) >= 0) mpn_sub_n(r, tmp + L, m->n, L); /* < 2n before */
        else memcpy(r, tmp + L, (size_t)L * sizeof(mp_limb_t));
        return;
    }
#endif
    if (a == b) mpn_sqr(tmp, a, m->L);
    else mpn_mul_n(tmp, a, b, m->L);
    redc(m, r, tmp);
}

/* r = a R^-1 mod n (Montgomery form to normal form); tmp has 2L + 1 limbs. */
static inline void from_mont(const Mod *m, mp_limb_t *r, const mp_limb_t *a, mp_limb_t *tmp)
{
#if defined(FEDRISK_ADX)
    if (m->adx) { /* the reduction half of the CIOS product: rows u n only (tmp: 2L + 1 limbs) */
        mp_size_t L = m->L;
        adx_row_fn row = adx_rows[L];
        memcpy(tmp, a, (size_t)L * sizeof(mp_limb_t));
        memset(tmp + L, 0, (size_t)(L + 1) * sizeof(mp_limb_t));
        for (mp_size_t i = 0; i < L; i++) row(tmp + i, m->n, tmp[i] * m->ninv);
        if (tmp[2 * L] || mpn_cmp(tmp + L, m->n, L) >= 0) mpn_sub_n(r, tmp + L, m->n, L);
        else memcpy(r, tmp + L, (size_t)L * sizeof(mp_limb_t));
        return;
    }
#endif
    memcpy(tmp, a, (size_t)m->L * sizeof(mp_limb_t));
    memset(tmp + m->L, 0, (size_t)m->L * sizeof(mp_limb_t));
    redc(m, r, tmp);
}

static inline int below(const Mod *m, const mp_limb_t *x) { return mpn_cmp(x, m->n, m->L) < 0; }

/* Read value i of a fixed-width big-endian block into limbs and check it is < n. */
static inline int load(const Mod *m, const unsigned char *blob, Py_ssize_t i, mp_limb_t *x)
{
    return be_to_limbs(blob + i * m->w, m->w, x, m->L) && below(m, x);
}

/* ------------------------------------------------------------------------------------------ */
/* Python-visible kernels                                                                     */
/* ------------------------------------------------------------------------------------------ */

static int check_blob(const Py_buffer *b, Py_ssize_t w, const char *what, Py_ssize_t *count)
{
    if (w <= 0 || b->len % w != 0) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes is not a whole number of %zd-byte values", what, b->len, w);
        return 0;
    }
    *count = b->len / w;
    return 1;
}

static int check_index(const Py_buffer *b, const char *what, Py_ssize_t *count)
{
    if (b->len % (Py_ssize_t)sizeof(int64_t) != 0) {
        PyErr_Format(PyExc_ValueError, "%s must be an int64 array", what);
        return 0;
    }
    *count = b->len / (Py_ssize_t)sizeof(int64_t);
    return 1;
}

/* A parsed modulus on the heap (Mod is ~4 KB: too big for every stack frame), or NULL with a
   Python error set. */
static Mod *new_mod(const Py_buffer *nb)
{
    Mod *m = malloc(sizeof(Mod));
    if (!m) {
        PyErr_NoMemory();
        return NULL;
    }
    if (!mod_init(m, nb->buf, nb->len)) {
        free(m);
        return NULL;
    }
    return m;
}

/* a * b as a buffer size, or 0 with a Python error: every size a caller's count or width
   multiplies into must go through here, since a wrapped product allocates a small buffer that the
   loop then writes past (a heap overflow). */
static int size_mul(Py_ssize_t a, Py_ssize_t b, Py_ssize_t *out, const char *what)
{
    if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, out)) {
        PyErr_Format(PyExc_ValueError, "%s: %zd x %zd bytes does not fit in memory", what, a, b);
        return 0;
    }
    return 1;
}

/* After a GIL-free loop: drop the result and raise `msg` if the loop met a bad value. */
static PyObject *unless_bad(PyObject *out, int bad, const char *msg)
{
    if (bad) {
        Py_CLEAR(out);
        PyErr_SetString(PyExc_ValueError, msg);
    }
    return out;
}

PyDoc_STRVAR(power_table_doc,
"power_table(n, base, count) -> bytes\n\n"
"Montgomery forms of base**0 .. base**(count-1) mod n, each L native-endian limbs (base < n).");

static PyObject *power_table(PyObject *self, PyObject *args)
{
    Py_buffer nb, bb;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "y*y*n", &nb, &bb, &count)) return NULL;
    PyObject *out = NULL;
    mp_limb_t x[MAX_LIMBS], one[MAX_LIMBS], tmp[2 * MAX_LIMBS];
    Mod *m = new_mod(&nb);
    if (!m) goto done;
    if (count < 1) { PyErr_SetString(PyExc_ValueError, "count must be positive"); goto done; }
    if (!be_to_limbs(bb.buf, bb.len, x, m->L) || !below(m, x)) {
        PyErr_SetString(PyExc_ValueError, "base must be below the modulus");
        goto done;
    }
    mp_size_t L = m->L;
    Py_ssize_t tsize;
    if (!size_mul(count, (Py_ssize_t)L * (Py_ssize_t)sizeof(mp_limb_t), &tsize, "power_table count")) goto done;
    out = PyBytes_FromStringAndSize(NULL, tsize);
    if (!out) goto done;
    mp_limb_t *t = (mp_limb_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    memset(one, 0, (size_t)L * sizeof(mp_limb_t));
    one[0] = 1;
    mont_mul(m, t, one, m->r2, tmp);                 /* R mod n: Montgomery form of 1 */
    if (count > 1) mont_mul(m, t + L, x, m->r2, tmp); /* base R */
    for (Py_ssize_t k = 2; k < count; k++) mont_mul(m, t + k * L, t + (k - 1) * L, t + L, tmp);
    Py_END_ALLOW_THREADS
done:
    free(m);
    PyBuffer_Release(&nb);
    PyBuffer_Release(&bb);
    return out;
}

PyDoc_STRVAR(gather_products_doc,
"gather_products(n, table, index, k, factors=None) -> bytes\n\n"
"out[i] = factors[i] * prod_j table[index[i, j]] mod n for index (count x k, int64; -1 = skip),\n"
"table entries in Montgomery form (power_table), factors and the result big-endian of n's width\n"
"(a missing factor is 1).");

static PyObject *gather_products(PyObject *self, PyObject *args)
{
    Py_buffer nb, tb, ib, fb = {0};
    Py_ssize_t k;
    PyObject *fobj = Py_None;
    if (!PyArg_ParseTuple(args, "y*y*y*n|O", &nb, &tb, &ib, &k, &fobj)) return NULL;
    PyObject *out = NULL;
    int have_f = 0;
    mp_limb_t tmp[2 * MAX_LIMBS];
    Mod *m = new_mod(&nb);
    if (!m) goto done;
    mp_size_t L = m->L;
    Py_ssize_t entries, n_idx, count;
    if (tb.len % (L * (Py_ssize_t)sizeof(mp_limb_t)) != 0) {
        PyErr_SetString(PyExc_ValueError, "table size does not match the modulus");
        goto done;
    }
    entries = tb.len / (L * (Py_ssize_t)sizeof(mp_limb_t));
    if (!check_index(&ib, "index", &n_idx)) goto done;
    if (k < 1 || n_idx % k != 0) { PyErr_SetString(PyExc_ValueError, "index length is not a multiple of k"); goto done; }
    count = n_idx / k;
    const int64_t *idx = ib.buf;
    for (Py_ssize_t i = 0; i < n_idx; i++) {
        if (idx[i] < -1 || idx[i] >= entries) {
            PyErr_Format(PyExc_IndexError, "table index %lld outside [-1, %zd)", (long long)idx[i], entries);
            goto done;
        }
    }
    if (fobj != Py_None) {
        if (PyObject_GetBuffer(fobj, &fb, PyBUF_SIMPLE) < 0) goto done;
        have_f = 1;
        Py_ssize_t nf;
        if (!check_blob(&fb, m->w, "factors", &nf)) goto done;
        if (nf != count) { PyErr_Format(PyExc_ValueError, "%zd factors for %zd products", nf, count); goto done; }
    }
    Py_ssize_t osize;
    if (!size_mul(count, m->w, &osize, "gather_products result")) goto done;
    out = PyBytes_FromStringAndSize(NULL, osize);
    if (!out) goto done;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    const mp_limb_t *tab = tb.buf;
    int bad = 0;
    /* Rows in blocks, columns outer within a block: column j of a fixed-base index only touches
       table row j, so consecutive lookups stay within a few MB (cache and TLB) instead of
       spreading over the whole table. */
    enum { BLOCK = 256, PREFETCH = 2 };
    mp_limb_t *accs = malloc((size_t)BLOCK * (size_t)L * sizeof(mp_limb_t));
    unsigned char *state = malloc(BLOCK); /* 0 empty, 1 normal form, 2 Montgomery form */
    if (!accs || !state) {
        free(accs);
        free(state);
        Py_CLEAR(out);
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t lo = 0; lo < count && !bad; lo += BLOCK) {
        Py_ssize_t nb_rows = count - lo < BLOCK ? count - lo : BLOCK;
        for (Py_ssize_t r = 0; r < nb_rows; r++) {
            state[r] = 0;
            if (have_f) {
                if (!load(m, fb.buf, lo + r, accs + r * L)) { bad = 1; break; }
                state[r] = 1;
            }
        }
        if (bad) break;
        for (Py_ssize_t j = 0; j < k; j++) {
            for (Py_ssize_t r = 0; r < nb_rows; r++) {
                int64_t e = idx[(lo + r) * k + j];
                if (r + PREFETCH < nb_rows) {
                    /* table lookups are random: fetch a later row's entry during this product */
                    int64_t f = idx[(lo + r + PREFETCH) * k + j];
                    if (f >= 0) {
                        const char *q = (const char *)(tab + f * L);
                        for (size_t off = 0; off < (size_t)L * sizeof(mp_limb_t); off += 64) __builtin_prefetch(q + off);
                    }
                }
                if (e < 0) continue;
                mp_limb_t *a = accs + r * L;
                if (state[r] == 0) {
                    memcpy(a, tab + e * L, (size_t)L * sizeof(mp_limb_t));
                    state[r] = 2;
                } else {
                    mont_mul(m, a, a, tab + e * L, tmp); /* normal x Mont = normal; Mont x Mont = Mont */
                }
            }
        }
        for (Py_ssize_t r = 0; r < nb_rows; r++) {
            mp_limb_t *a = accs + r * L;
            if (state[r] == 0) {
                memset(a, 0, (size_t)L * sizeof(mp_limb_t));
                a[0] = 1;
            } else if (state[r] == 2) {
                from_mont(m, a, a, tmp);
            }
            limbs_to_be(a, L, o + (lo + r) * m->w, m->w);
        }
    }
    free(accs);
    free(state);
    Py_END_ALLOW_THREADS
    out = unless_bad(out, bad, "a factor is not below the modulus");
done:
    free(m);
    if (have_f) PyBuffer_Release(&fb);
    PyBuffer_Release(&nb);
    PyBuffer_Release(&tb);
    PyBuffer_Release(&ib);
    return out;
}

/* Montgomery form of R^j (= R^(j+1) mod n), by square-and-multiply from Mont(R) = R^2 mod n. */
static void mont_r_power(const Mod *m, mp_limb_t *r, uint64_t j, mp_limb_t *tmp)
{
    mp_limb_t one[MAX_LIMBS];
    memset(one, 0, (size_t)m->L * sizeof(mp_limb_t));
    one[0] = 1;
    mont_mul(m, r, one, m->r2, tmp); /* Mont(1) = R mod n */
    int top = 63;
    while (top >= 0 && !((j >> top) & 1)) top--;
    for (int b = top; b >= 0; b--) {
        mont_mul(m, r, r, r, tmp);
        if ((j >> b) & 1) mont_mul(m, r, r, m->r2, tmp);
    }
}

PyDoc_STRVAR(grouped_products_doc,
"grouped_products(n, values, which, group, n_groups) -> bytes\n\n"
"out[g] = product of values[which[e]] over every e with group[e] == g, mod n (1 if none);\n"
"values and the result are big-endian of n's width, which/group int64 arrays of equal length.");

static PyObject *grouped_products(PyObject *self, PyObject *args)
{
    Py_buffer nb, vb, wb, gb;
    Py_ssize_t n_groups;
    if (!PyArg_ParseTuple(args, "y*y*y*y*n", &nb, &vb, &wb, &gb, &n_groups)) return NULL;
    PyObject *out = NULL;
    mp_limb_t *acc = NULL;
    int64_t *cnt = NULL;
    mp_limb_t x[MAX_LIMBS], z[MAX_LIMBS], tmp[2 * MAX_LIMBS];
    Mod *m = new_mod(&nb);
    if (!m) goto done;
    mp_size_t L = m->L;
    Py_ssize_t n_vals, n_w, n_g;
    if (!check_blob(&vb, m->w, "values", &n_vals) || !check_index(&wb, "which", &n_w)
        || !check_index(&gb, "group", &n_g))
        goto done;
    if (n_w != n_g) { PyErr_SetString(PyExc_ValueError, "which and group differ in length"); goto done; }
    if (n_groups < 0) { PyErr_SetString(PyExc_ValueError, "n_groups must be >= 0"); goto done; }
    const int64_t *which = wb.buf, *group = gb.buf;
    for (Py_ssize_t e = 0; e < n_w; e++) {
        if (which[e] < 0 || which[e] >= n_vals || group[e] < 0 || group[e] >= n_groups) {
            PyErr_Format(PyExc_IndexError, "entry %zd refers to value %lld of %zd or group %lld of %zd", e,
                         (long long)which[e], n_vals, (long long)group[e], n_groups);
            goto done;
        }
    }
    Py_ssize_t asize, osize;
    if (!size_mul(n_groups ? n_groups : 1, (Py_ssize_t)L * (Py_ssize_t)sizeof(mp_limb_t), &asize, "grouped_products n_groups")
        || !size_mul(n_groups, m->w, &osize, "grouped_products result"))
        goto done;
    acc = malloc((size_t)asize);
    cnt = calloc((size_t)(n_groups ? n_groups : 1), sizeof(int64_t));
    out = PyBytes_FromStringAndSize(NULL, osize);
    if (!out) goto done;
    if (!acc || !cnt) {
        Py_CLEAR(out);
        PyErr_NoMemory();
        goto done;
    }
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    /* normal x normal under mont_mul loses one factor R per product: a group of c values ends as
       V R^-(c-1), fixed below with one product by R^c mod n = Mont(R^(c-1)) */
    for (Py_ssize_t e = 0; e < n_w; e++) {
        if (e + 2 < n_w) { /* accumulators and values are read at random: fetch ahead */
            const char *pa = (const char *)(acc + group[e + 2] * L);
            const char *pv = (const char *)vb.buf + which[e + 2] * m->w;
            for (size_t off = 0; off < (size_t)L * sizeof(mp_limb_t); off += 64) {
                __builtin_prefetch(pa + off, 1);
                __builtin_prefetch(pv + off);
            }
        }
        mp_limb_t *a = acc + group[e] * L;
        if (cnt[group[e]]++ == 0) {
            if (!load(m, vb.buf, which[e], a)) { bad = 1; break; }
        } else {
            if (!load(m, vb.buf, which[e], x)) { bad = 1; break; }
            mont_mul(m, a, a, x, tmp);
        }
    }
    /* corrections: powers R^c for small c incrementally (they repeat), larger ones directly */
    enum { SMALL = 64 };
    mp_limb_t *small = bad ? NULL : malloc((size_t)SMALL * (size_t)L * sizeof(mp_limb_t));
    int64_t have_small = 0; /* small[j] = Mont(R^j) for j < have_small */
    for (Py_ssize_t g = 0; g < n_groups && !bad; g++) {
        mp_limb_t *a = acc + g * L;
        int64_t c = cnt[g];
        if (c == 0) {
            memset(a, 0, (size_t)L * sizeof(mp_limb_t));
            a[0] = 1;
        } else if (c >= 2) {
            uint64_t j = (uint64_t)(c - 1);
            const mp_limb_t *f;
            if (small && j < SMALL) {
                if (have_small == 0) {
                    memset(x, 0, (size_t)L * sizeof(mp_limb_t));
                    x[0] = 1;
                    mont_mul(m, small, x, m->r2, tmp); /* Mont(R^0) */
                    have_small = 1;
                }
                while ((uint64_t)have_small <= j) {
                    mont_mul(m, small + have_small * L, small + (have_small - 1) * L, m->r2, tmp);
                    have_small++;
                }
                f = small + j * L;
            } else {
                mont_r_power(m, z, j, tmp);
                f = z;
            }
            mont_mul(m, a, a, f, tmp);
        }
        limbs_to_be(a, L, o + g * m->w, m->w);
    }
    free(small);
    Py_END_ALLOW_THREADS
    out = unless_bad(out, bad, "a value is not below the modulus");
done:
    free(m);
    free(acc);
    free(cnt);
    PyBuffer_Release(&nb);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&wb);
    PyBuffer_Release(&gb);
    return out;
}

PyDoc_STRVAR(shift_products_doc,
"shift_products(n, values, group, shift) -> bytes\n\n"
"For each run [c_0, ..., c_{g-1}] of `group` consecutive values (the last may be shorter):\n"
"c_0 * c_1^(2^shift) * ... * c_{g-1}^(2^(shift (g-1))) mod n, in Horner form.");

static PyObject *shift_products(PyObject *self, PyObject *args)
{
    Py_buffer nb, vb;
    Py_ssize_t group, shift;
    if (!PyArg_ParseTuple(args, "y*y*nn", &nb, &vb, &group, &shift)) return NULL;
    PyObject *out = NULL;
    mp_limb_t acc[MAX_LIMBS], x[MAX_LIMBS], tmp[2 * MAX_LIMBS];
    Mod *m = new_mod(&nb);
    if (!m) goto done;
    mp_size_t L = m->L;
    Py_ssize_t count;
    if (!check_blob(&vb, m->w, "values", &count)) goto done;
    if (group < 1 || shift < 0) { PyErr_SetString(PyExc_ValueError, "group must be >= 1 and shift >= 0"); goto done; }
    Py_ssize_t n_out = count / group + (count % group != 0), osize; /* no count + group overflow */
    if (!size_mul(n_out, m->w, &osize, "shift_products result")) goto done;
    out = PyBytes_FromStringAndSize(NULL, osize);
    if (!out) goto done;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t s = 0; s < n_out && !bad; s++) {
        Py_ssize_t lo = s * group, hi = lo + group < count ? lo + group : count;
        if (!load(m, vb.buf, hi - 1, acc)) { bad = 1; break; }
        for (Py_ssize_t i = hi - 2; i >= lo; i--) {
            if (!load(m, vb.buf, i, x)) { bad = 1; break; }
            mont_mul(m, acc, acc, m->r2, tmp);                             /* to Montgomery form */
            for (Py_ssize_t b = 0; b < shift; b++) mont_mul(m, acc, acc, acc, tmp); /* ^(2^shift) */
            mont_mul(m, acc, acc, x, tmp);                                 /* x normal: back to normal */
        }
        limbs_to_be(acc, L, o + s * m->w, m->w);
    }
    Py_END_ALLOW_THREADS
    out = unless_bad(out, bad, "a value is not below the modulus");
done:
    free(m);
    PyBuffer_Release(&nb);
    PyBuffer_Release(&vb);
    return out;
}

PyDoc_STRVAR(pow_list_doc,
"pow_list(n, values, exponent) -> bytes\n\n"
"values[i] ** exponent mod n for every value (big-endian of n's width); exponent big-endian\n"
"bytes, >= 0. Fixed 5-bit windows in the Montgomery domain.");

static PyObject *pow_list(PyObject *self, PyObject *args)
{
    Py_buffer nb, vb, eb;
    if (!PyArg_ParseTuple(args, "y*y*y*", &nb, &vb, &eb)) return NULL;
    PyObject *out = NULL;
    enum { W = 5 };
    mp_limb_t *tab = NULL;
    mp_limb_t acc[MAX_LIMBS], x[MAX_LIMBS], tmp[2 * MAX_LIMBS];
    Mod *m = new_mod(&nb);
    if (!m) goto done;
    mp_size_t L = m->L;
    Py_ssize_t count;
    if (!check_blob(&vb, m->w, "values", &count)) goto done;
    const unsigned char *e = eb.buf;
    Py_ssize_t ebits, osize;
    if (!size_mul(eb.len, 8, &ebits, "pow_list exponent") || !size_mul(count, m->w, &osize, "pow_list result")) goto done;
    while (ebits > 0 && !((e[(eb.len * 8 - ebits) / 8] >> (7 - (eb.len * 8 - ebits) % 8)) & 1)) ebits--;
    tab = malloc(((size_t)1 << W) * (size_t)L * sizeof(mp_limb_t));
    out = PyBytes_FromStringAndSize(NULL, osize);
    if (!out) goto done;
    if (!tab) { Py_CLEAR(out); PyErr_NoMemory(); goto done; }
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    /* bit i of the exponent, counting from the least significant */
#define EBIT(i) ((e[eb.len - 1 - (i) / 8] >> ((i) % 8)) & 1)
    for (Py_ssize_t v = 0; v < count && !bad; v++) {
        if (!load(m, vb.buf, v, x)) { bad = 1; break; }
        memset(acc, 0, (size_t)L * sizeof(mp_limb_t));
        acc[0] = 1;
        if (ebits > 0) {
            mont_mul(m, tab, acc, m->r2, tmp);         /* Mont(1) */
            mont_mul(m, tab + L, x, m->r2, tmp);       /* Mont(x) */
            for (int d = 2; d < (1 << W); d++) mont_mul(m, tab + d * L, tab + (d - 1) * L, tab + L, tmp);
            Py_ssize_t top = (ebits - 1) / W * W;      /* lowest bit of the leading window */
            int d = 0;
            for (Py_ssize_t b = ebits - 1; b >= top; b--) d = (d << 1) | EBIT(b);
            memcpy(acc, tab + d * L, (size_t)L * sizeof(mp_limb_t));
            for (Py_ssize_t lo = top - W; lo >= 0; lo -= W) {
                for (int k = 0; k < W; k++) mont_mul(m, acc, acc, acc, tmp);
                d = 0;
                for (Py_ssize_t b = lo + W - 1; b >= lo; b--) d = (d << 1) | EBIT(b);
                if (d) mont_mul(m, acc, acc, tab + d * L, tmp);
            }
            from_mont(m, acc, acc, tmp);
        }
        limbs_to_be(acc, L, o + v * m->w, m->w);
    }
#undef EBIT
    Py_END_ALLOW_THREADS
    out = unless_bad(out, bad, "a value is not below the modulus");
done:
    free(m);
    free(tab);
    PyBuffer_Release(&nb);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&eb);
    return out;
}

PyDoc_STRVAR(crt_combine_doc,
"crt_combine(m1, m2, u, a, b, width) -> bytes\n\n"
"c[i] with c = a[i] mod m1 and c = b[i] mod m2 (coprime odd moduli, u = m1^-1 mod m2), as\n"
"big-endian values of `width` bytes; a is big-endian of m1's width, b of m2's.");

static PyObject *crt_combine(PyObject *self, PyObject *args)
{
    Py_buffer m1b, m2b, ub, ab, bb;
    Py_ssize_t width;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*n", &m1b, &m2b, &ub, &ab, &bb, &width)) return NULL;
    PyObject *out = NULL;
    mp_limb_t a[MAX_LIMBS], amod[MAX_LIMBS], b[MAX_LIMBS], u[MAX_LIMBS], d[MAX_LIMBS];
    mp_limb_t quo[MAX_LIMBS + 1], prod[2 * MAX_LIMBS + 1], tmp[2 * MAX_LIMBS];
    Mod *m1 = new_mod(&m1b), *m2 = m1 ? new_mod(&m2b) : NULL;
    if (!m1 || !m2) goto done;
    mp_size_t L1 = m1->L, L2 = m2->L;
    if (L1 < L2 || L1 + L2 > MAX_LIMBS) { PyErr_SetString(PyExc_ValueError, "crt_combine needs m1 at least as long as m2"); goto done; }
    if (!be_to_limbs(ub.buf, ub.len, u, L2) || !below(m2, u)) { PyErr_SetString(PyExc_ValueError, "u must be below m2"); goto done; }
    Py_ssize_t na, nbv;
    if (!check_blob(&ab, m1->w, "a", &na) || !check_blob(&bb, m2->w, "b", &nbv)) goto done;
    if (na != nbv) { PyErr_SetString(PyExc_ValueError, "a and b differ in length"); goto done; }
    Py_ssize_t osize;
    if (width < 1) { PyErr_SetString(PyExc_ValueError, "width must be positive"); goto done; }
    if (!size_mul(na, width, &osize, "crt_combine result")) goto done;
    out = PyBytes_FromStringAndSize(NULL, osize);
    if (!out) goto done;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    mont_mul(m2, u, u, m2->r2, tmp); /* Mont(u): then mont_mul(d, Mont(u)) = d u mod m2 */
    for (Py_ssize_t i = 0; i < na && !bad; i++) {
        if (!load(m1, ab.buf, i, a) || !load(m2, bb.buf, i, b)) { bad = 1; break; }
        mpn_tdiv_qr(quo, amod, 0, a, L1, m2->n, L2);
        if (mpn_cmp(b, amod, L2) >= 0) mpn_sub_n(d, b, amod, L2);
        else { mpn_sub_n(d, m2->n, amod, L2); mpn_add_n(d, d, b, L2); }
        mont_mul(m2, d, d, u, tmp);            /* (b - a) m1^-1 mod m2 */
        mpn_mul(prod, m1->n, L1, d, L2);       /* m1 * that, < m1 m2 */
        mpn_add(prod, prod, L1 + L2, a, L1);   /* + a: < m1 m2, no carry out */
        if (!limbs_to_be(prod, L1 + L2, o + i * width, width)) { bad = 2; break; }
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        Py_CLEAR(out);
        PyErr_SetString(PyExc_ValueError, bad == 1 ? "a residue is not below its modulus" : "width too small for m1 m2");
    }
done:
    free(m1);
    free(m2);
    PyBuffer_Release(&m1b);
    PyBuffer_Release(&m2b);
    PyBuffer_Release(&ub);
    PyBuffer_Release(&ab);
    PyBuffer_Release(&bb);
    return out;
}

PyDoc_STRVAR(p_subgroup_shift_doc,
"p_subgroup_shift(p, consts, v, x) -> bytes\n\n"
"c[i] = x[i] (1 + p z_i) mod p^2 with z_i = sum_j v[i, j] consts[j] mod p, computed as\n"
"x[i] + p ((x[i] mod p) z_i mod p): x is big-endian of p^2's width (each < p^2), consts k values\n"
"below p (big-endian of p's width), v an int64 array of count x k with |v| < 2^62.");

/* Why: the OU key owner multiplies its obfuscator h^r mod p^2 by the plaintext's element of the
   order-p subgroup, (1 + p)^z = 1 + p z mod p^2. That element is linear in z, so instead of one
   table product per packed slot (22 limbs each) it costs a few limb additions, one product mod p
   and two divisions. */
static PyObject *p_subgroup_shift(PyObject *self, PyObject *args)
{
    Py_buffer pb, cb, vb, xb;
    if (!PyArg_ParseTuple(args, "y*y*y*y*", &pb, &cb, &vb, &xb)) return NULL;
    PyObject *out = NULL;
    enum { ML = MAX_LIMBS / 2 };
    mp_limb_t p[ML], p2[2 * ML], x[2 * ML], xm[ML], z[ML], zn[ML], t[ML];
    mp_limb_t acc[ML + 2], accn[ML + 2], quo[2 * ML + 2], prod[2 * ML], c[2 * ML + 1];
    mp_limb_t *consts = NULL;
    Py_ssize_t pw = pb.len;
    mp_size_t L = (mp_size_t)((pw + 7) / 8);
    if (pw < 1 || L > ML || !be_to_limbs(pb.buf, pw, p, L) || !(p[0] & 1)) {
        PyErr_SetString(PyExc_ValueError, "p must be an odd modulus of at most 8192 bits");
        goto done;
    }
    while (L > 1 && p[L - 1] == 0) L--;
    if (p[L - 1] == 0) { PyErr_SetString(PyExc_ValueError, "p must be an odd modulus"); goto done; }
    mp_size_t L2 = 2 * L;
    mpn_sqr(p2, p, L);
    mp_size_t top = L2;
    while (top > 1 && p2[top - 1] == 0) top--; /* mpn_sizeinbase needs a non-zero top limb */
    Py_ssize_t w2 = (Py_ssize_t)((mpn_sizeinbase(p2, top, 2) + 7) / 8);
    Py_ssize_t k, nv, nx;
    if (!check_blob(&cb, pw, "consts", &k) || !check_index(&vb, "v", &nv) || !check_blob(&xb, w2, "x", &nx)) goto done;
    if (k < 1 || nv != nx * k) { PyErr_SetString(PyExc_ValueError, "v must hold one row of len(consts) values per x"); goto done; }
    consts = malloc((size_t)k * (size_t)L * sizeof(mp_limb_t));
    if (!consts) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t j = 0; j < k; j++) {
        mp_limb_t *cj = consts + j * L;
        if (!be_to_limbs((const unsigned char *)cb.buf + j * pw, pw, cj, L) || mpn_cmp(cj, p, L) >= 0) {
            PyErr_SetString(PyExc_ValueError, "a constant is not below p");
            goto done;
        }
    }
    const int64_t *v = vb.buf;
    for (Py_ssize_t e = 0; e < nv; e++) {
        if (v[e] >= ((int64_t)1 << 62) || v[e] <= -((int64_t)1 << 62)) {
            PyErr_SetString(PyExc_ValueError, "|v| must be below 2^62");
            goto done;
        }
    }
    Py_ssize_t osize;
    if (!size_mul(nx, w2, &osize, "p_subgroup_shift result")) goto done;
    out = PyBytes_FromStringAndSize(NULL, osize);
    if (!out) goto done;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < nx; i++) {
        if (!be_to_limbs((const unsigned char *)xb.buf + i * w2, w2, x, L2) || mpn_cmp(x, p2, L2) >= 0) { bad = 1; break; }
        /* z = sum_j v_j c_j mod p: positive and negative terms apart (each < 2^(64 L + 66)) */
        memset(acc, 0, (size_t)(L + 2) * sizeof(mp_limb_t));
        memset(accn, 0, (size_t)(L + 2) * sizeof(mp_limb_t));
        for (Py_ssize_t j = 0; j < k; j++) {
            int64_t vj = v[i * k + j];
            if (vj == 0) continue;
            mp_limb_t *a = vj > 0 ? acc : accn;
            mp_limb_t cy = mpn_addmul_1(a, consts + j * L, L, (mp_limb_t)(vj > 0 ? vj : -vj));
            mpn_add_1(a + L, a + L, 2, cy);
        }
        mpn_tdiv_qr(quo, z, 0, acc, L + 2, p, L);
        mpn_tdiv_qr(quo, zn, 0, accn, L + 2, p, L);
        if (mpn_sub_n(z, z, zn, L)) mpn_add_n(z, z, p, L); /* z - zn mod p */
        /* c = x + p ((x mod p) z mod p) < 2 p^2, then reduced */
        mpn_tdiv_qr(quo, xm, 0, x, L2, p, L);
        mpn_mul_n(prod, xm, z, L);
        mpn_tdiv_qr(quo, t, 0, prod, L2, p, L);
        mpn_mul_n(prod, p, t, L);
        c[L2] = mpn_add_n(c, x, prod, L2);
        if (c[L2] || mpn_cmp(c, p2, L2) >= 0) mpn_sub_n(c, c, p2, L2);
        if (!limbs_to_be(c, L2, o + i * w2, w2)) { bad = 2; break; }
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        Py_CLEAR(out);
        PyErr_SetString(PyExc_ValueError, bad == 1 ? "an x is not below p^2" : "result wider than p^2");
    }
done:
    free(consts);
    PyBuffer_Release(&pb);
    PyBuffer_Release(&cb);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&xb);
    return out;
}

PyDoc_STRVAR(set_adx_doc,
"set_adx(flag) -> bool\n\n"
"Use the mulx/adx Montgomery product where the CPU has it (flag true, the default) or GMP's\n"
"generic one (false), for moduli parsed from now on; returns whether the mulx/adx product is in\n"
"use after the call (false on a CPU without BMI2/ADX whatever the flag).");

static PyObject *set_adx(PyObject *self, PyObject *args)
{
    int flag;
    if (!PyArg_ParseTuple(args, "p", &flag)) return NULL;
    use_adx = flag ? adx_usable() : 0;
    return PyBool_FromLong(use_adx);
}

static PyMethodDef methods[] = {
    {"set_adx", set_adx, METH_VARARGS, set_adx_doc},
    {"power_table", power_table, METH_VARARGS, power_table_doc},
    {"gather_products", gather_products, METH_VARARGS, gather_products_doc},
    {"grouped_products", grouped_products, METH_VARARGS, grouped_products_doc},
    {"shift_products", shift_products, METH_VARARGS, shift_products_doc},
    {"crt_combine", crt_combine, METH_VARARGS, crt_combine_doc},
    {"p_subgroup_shift", p_subgroup_shift, METH_VARARGS, p_subgroup_shift_doc},
    {"pow_list", pow_list, METH_VARARGS, pow_list_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_montgomery",
    "Batch Montgomery-domain products over GMP's mpn layer (see fedrisk.crypto.montgomery).", -1, methods,
};

PyMODINIT_FUNC PyInit__montgomery(void)
{
    PyObject *mod = PyModule_Create(&module);
    if (mod && PyModule_AddIntConstant(mod, "LIMB_BITS", GMP_LIMB_BITS) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
