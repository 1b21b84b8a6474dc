// Single-precision GEMM with an AVX-512 micro-kernel; see include/dg_kernels.h.
#include "dg_kernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef DG_KC
#define DG_KC 256    // k rows per block
#endif
#ifndef DG_MC
#define DG_MC 192    // rows of A per block (192 x 256 floats: in L2)
#endif
#ifndef DG_KC_DIRECT_CHANNELS
#define DG_KC_DIRECT_CHANNELS 16
#endif
#ifndef DG_NC
#define DG_NC 512    // columns of B per packed block (256 x 512 floats: 512 KB, in L2 with the C block)
#endif

// MARK: packing B (portable C, memory-bound; the transposing packs have AVX-512 versions)

int dg_has_avx512(void);
static void pack_transposed_avx512(const float *b, long cs, long p0, long kc, long j0, long n, long nr, float *dst);
static void pack_transposed_bf16_avx512(const unsigned short *b, long cs, long p0, long kc, long j0, long n, long nr, float *dst);
static void pack_im2col_t_avx512(const dg_bsource *s, long p0, long kc, long j0, long n, long nr, float *dst);
static void pack_im2col_avx512(const dg_bsource *s, long p0, long kc, long j0, long n, long nr, float *dst);

// Packs B(p0 + p, j0 + j), p < kc, j < n, into ceil(n / nr) panels of kc x nr floats (zero-padded).
static void pack_matrix(const dg_bsource *s, long p0, long kc, long j0, long n, long nr, float *dst) {
    if (s->bf16) {   // a bf16 weight (dg_gemm_bf16 where the bf16 products do not pay): widened as packed
        if (s->rs == 1 && nr % 16 == 0 && dg_has_avx512()) {
            pack_transposed_bf16_avx512((const unsigned short *)s->b, s->cs, p0, kc, j0, n, nr, dst);
            return;
        }
        const unsigned short *b16 = (const unsigned short *)s->b;
        long panels = (n + nr - 1) / nr;
        for (long q = 0; q < panels; q++) {
            long jq = j0 + q * nr, cols = n - q * nr < nr ? n - q * nr : nr;
            for (long p = 0; p < kc; p++)
                for (long t = 0; t < nr; t++) {
                    unsigned bits = t < cols ? (unsigned)b16[(p0 + p) * s->rs + (jq + t) * s->cs] << 16 : 0;
                    memcpy(dst + q * kc * nr + p * nr + t, &bits, 4);
                }
        }
        return;
    }
    if (s->rs == 1 && s->cs != 1 && nr % 16 == 0 && dg_has_avx512()) {
        pack_transposed_avx512(s->b, s->cs, p0, kc, j0, n, nr, dst);
        return;
    }
    long panels = (n + nr - 1) / nr;
    for (long q = 0; q < panels; q++) {
        long jq = j0 + q * nr, cols = n - q * nr < nr ? n - q * nr : nr;
        float *d = dst + q * kc * nr;
        if (s->cs == 1) {
            for (long p = 0; p < kc; p++) {
                const float *src = s->b + (p0 + p) * s->rs + jq;
                float *o = d + p * nr;
                memcpy(o, src, (size_t)cols * sizeof(float));
                for (long t = cols; t < nr; t++) o[t] = 0;
            }
        } else {
            // Each column of the panel is a run of kc values (stride rs, 1 for a transposed matrix).
            for (long t = 0; t < cols; t++) {
                const float *src = s->b + p0 * s->rs + (jq + t) * s->cs;
                long rs = s->rs;
                for (long p = 0; p < kc; p++) d[p * nr + t] = src[p * rs];
            }
            for (long t = cols; t < nr; t++)
                for (long p = 0; p < kc; p++) d[p * nr + t] = 0;
        }
    }
}

// One row r of the im2col matrix over output positions [first, first + len) that lie on one output
// row oy starting at column ox0.
static inline void im2col_run(const dg_bsource *s, long r, long oy, long ox0, long len, float *o) {
    long kk = s->kh * s->kw;
    long c = r / kk, ki = (r / s->kw) % s->kh, kj = r % s->kw;
    long iy = oy * s->stride - s->pad + ki;
    if (iy < 0 || iy >= s->h) { for (long t = 0; t < len; t++) o[t] = 0; return; }
    const float *xr = s->b + (c * s->h + iy) * s->w;
    long w = s->w;
    if (s->stride == 1) {
        long ix0 = ox0 - s->pad + kj;
        long lo = ix0 < 0 ? -ix0 : 0, hi = w - ix0 < len ? w - ix0 : len;
        if (hi < lo) hi = lo;
        for (long t = 0; t < lo; t++) o[t] = 0;
        if (hi > lo) memcpy(o + lo, xr + ix0 + lo, (size_t)(hi - lo) * sizeof(float));
        for (long t = hi; t < len; t++) o[t] = 0;
    } else {
        long st = s->stride, base = ox0 * st - s->pad + kj;
        for (long t = 0; t < len; t++) {
            long ix = base + t * st;
            o[t] = (ix >= 0 && ix < w) ? xr[ix] : 0;
        }
    }
}

static void pack_im2col(const dg_bsource *s, long p0, long kc, long j0, long n, long nr, float *dst) {
    if (s->stride == 1 && dg_has_avx512()) {
        pack_im2col_avx512(s, p0, kc, j0, n, nr, dst);
        return;
    }
    long panels = (n + nr - 1) / nr;
    for (long q = 0; q < panels; q++) {
        long first = j0 + q * nr, cols = n - q * nr < nr ? n - q * nr : nr;
        float *d = dst + q * kc * nr;
        for (long p = 0; p < kc; p++) {
            float *o = d + p * nr;
            for (long t = 0; t < cols;) {
                long jp = first + t, oy = jp / s->wout, ox = jp % s->wout;
                long len = s->wout - ox < cols - t ? s->wout - ox : cols - t;
                im2col_run(s, p0 + p, oy, ox, len, o + t);
                t += len;
            }
            for (long t = cols; t < nr; t++) o[t] = 0;
        }
    }
}

// The transposed im2col: rows are output positions p0..<p0+kc, columns are im2col rows j0..<j0+n.
static void pack_im2col_t(const dg_bsource *s, long p0, long kc, long j0, long n, long nr, float *dst) {
    if (nr % 16 == 0 && dg_has_avx512()) {
        pack_im2col_t_avx512(s, p0, kc, j0, n, nr, dst);
        return;
    }
    long panels = (n + nr - 1) / nr;
    float run[4096];
    for (long q = 0; q < panels; q++) {
        long jq = j0 + q * nr, cols = n - q * nr < nr ? n - q * nr : nr;
        float *d = dst + q * kc * nr;
        for (long t = 0; t < cols; t++) {
            // im2col row jq + t over positions p0..<p0+kc, in runs along output rows.
            for (long p = 0; p < kc;) {
                long jp = p0 + p, oy = jp / s->wout, ox = jp % s->wout;
                long len = s->wout - ox < kc - p ? s->wout - ox : kc - p;
                if (len > 4096) len = 4096;
                im2col_run(s, jq + t, oy, ox, len, run);
                for (long u = 0; u < len; u++) d[(p + u) * nr + t] = run[u];
                p += len;
            }
        }
        for (long t = cols; t < nr; t++)
            for (long p = 0; p < kc; p++) d[p * nr + t] = 0;
    }
}

long dg_panel_width(long n) {
    // 16-column panels where they waste fewer columns of a narrow product (40 -> 48, not 64).
    if (n <= 16) return 16;
    if (n < 128 && (n + 15) / 16 * 16 < (n + 31) / 32 * 32) return 16;
    return 32;
}

static void pack_b(const dg_bsource *s, long p0, long kc, long j0, long n, long nr, float *dst);

void dg_pack_block(const dg_bsource *b, long p0, long kc, long j0, long n, long nr, float *dst) {
    pack_b(b, p0, kc, j0, n, nr, dst);
}

void dg_pack(const dg_bsource *b, long k, long j0, long n, long nr, float *dst) {
    long panels = (n + nr - 1) / nr;
    for (long q = 0; q < panels; q++) {
        long cols = n - q * nr < nr ? n - q * nr : nr;
        pack_b(b, 0, k, j0 + q * nr, cols, nr, dst + q * k * nr);
    }
}

static void pack_b(const dg_bsource *s, long p0, long kc, long j0, long n, long nr, float *dst) {
    switch (s->kind) {
    case DG_B_IM2COL: pack_im2col(s, p0, kc, j0, n, nr, dst); break;
    case DG_B_IM2COL_T: pack_im2col_t(s, p0, kc, j0, n, nr, dst); break;
    default: pack_matrix(s, p0, kc, j0, n, nr, dst); break;
    }
}

#ifndef DG_KC_BF16
#define DG_KC_BF16 512   // k values per block: a 32-column panel of 512 x 32 bf16 is 32 KB, as the f32 one of 256
#endif

void dg_gemm_bf16_blocking(long *kc, long *mc, long *nc) { *kc = DG_KC_BF16; *mc = DG_MC; *nc = DG_NC; }

#if defined(__x86_64__)
#include "avx512.h"
#include <cpuid.h>

#include <stdatomic.h>

// CPU features and OS support for the zmm state (settings.c combines it with the switch).
int dg_cpu_has_avx512(void) {
    static _Atomic int cached = -1;
    int known = atomic_load_explicit(&cached, memory_order_relaxed);
    if (__builtin_expect(known >= 0, 1)) return known;
    unsigned a, b, c, d;
    int ok = 0;
    if (__get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 27)) && (c & (1u << 12))) {   // OSXSAVE, FMA
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        (void)hi;
        // XMM, YMM, opmask, ZMM_Hi256 and Hi16_ZMM state enabled by the OS.
        if ((lo & 0xE6) == 0xE6 && __get_cpuid_count(7, 0, &a, &b, &c, &d))
            ok = (b & (1u << 16)) && (b & (1u << 17)) && (b & (1u << 30)) && (b & (1u << 31));   // F DQ BW VL
    }
    atomic_store(&cached, ok);
    return ok;
}

// Ways of the L1 data cache, from CPUID's cache parameters (leaf 4 on Intel, 0x8000001D on AMD); 12
// (the Intel Xeon's) where neither says.
static long l1d_ways(void) {
    static _Atomic long cached = 0;
    long known = atomic_load_explicit(&cached, memory_order_relaxed);
    if (__builtin_expect(known > 0, 1)) return known;
    long ways = 0;
    const unsigned leaves[2] = {4u, 0x8000001Du};
    for (int l = 0; l < 2 && !ways; l++) {
        if (__get_cpuid_max(leaves[l] & 0x80000000u, 0) < leaves[l]) continue;
        for (unsigned i = 0; i < 8; i++) {
            unsigned a, b, c, d;
            __cpuid_count(leaves[l], i, a, b, c, d);
            unsigned type = a & 31, level = (a >> 5) & 7;
            if (type == 0) break;
            if (type == 1 && level == 1) { ways = ((b >> 22) & 0x3FF) + 1; break; }
        }
    }
    if (ways <= 0) ways = 12;
    atomic_store(&cached, ways);
    return ways;
}

int dg_cpu_is_amd(void) {
    unsigned a, b, c, d;
    // The vendor string "AuthenticAMD" in ebx, edx, ecx.
    return __get_cpuid(0, &a, &b, &c, &d) && b == 0x68747541u && d == 0x69746E65u && c == 0x444D4163u;
}

// One MR x (16 NV) tile of C over kc values of k, from a panel b (kc x 16 NV floats).
// first: C = alpha acc [+ beta C] [+ biases]; else C += alpha acc. cols: valid columns of the panel.
// ROWMAJOR: A(i, p) = a[i ars + p]; else A(i, p) = a[i + p aks].
#define DG_TILE(MR, NV, ROWMAJOR)                                                                       \
    TGT static void tile_##MR##x##NV##_##ROWMAJOR(long kc, const float *a, long ars, long aks,          \
        const float *b, float alpha, float *c, long ldc, int first, float beta,                         \
        const float *rowBias, const float *colBias, long cols) {                                        \
        __m512 acc[MR][NV];                                                                             \
        _Pragma("clang loop unroll(full)") for (int i = 0; i < MR; i++)                                  \
            _Pragma("clang loop unroll(full)") for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps(); \
        if (ROWMAJOR) {                                                                                 \
            const float *ap[MR];                                                                        \
            _Pragma("clang loop unroll(full)") for (int i = 0; i < MR; i++) ap[i] = a + i * ars;         \
            for (long p = 0; p < kc; p++) {                                                             \
                __m512 bv[NV];                                                                          \
                _Pragma("clang loop unroll(full)") for (int v = 0; v < NV; v++)                          \
                    bv[v] = _mm512_loadu_ps(b + p * (16 * NV) + 16 * v);                                 \
                _Pragma("clang loop unroll(full)") for (int i = 0; i < MR; i++) {                        \
                    __m512 s = _mm512_set1_ps(ap[i][p]);                                                \
                    _Pragma("clang loop unroll(full)") for (int v = 0; v < NV; v++)                      \
                        acc[i][v] = _mm512_fmadd_ps(s, bv[v], acc[i][v]);                               \
                }                                                                                       \
            }                                                                                           \
        } else {                                                                                        \
            for (long p = 0; p < kc; p++) {                                                             \
                const float *ak = a + p * aks;                                                          \
                __m512 bv[NV];                                                                          \
                _Pragma("clang loop unroll(full)") for (int v = 0; v < NV; v++)                          \
                    bv[v] = _mm512_loadu_ps(b + p * (16 * NV) + 16 * v);                                 \
                _Pragma("clang loop unroll(full)") for (int i = 0; i < MR; i++) {                        \
                    __m512 s = _mm512_set1_ps(ak[i]);                                                   \
                    _Pragma("clang loop unroll(full)") for (int v = 0; v < NV; v++)                      \
                        acc[i][v] = _mm512_fmadd_ps(s, bv[v], acc[i][v]);                               \
                }                                                                                       \
            }                                                                                           \
        }                                                                                               \
        (void)ars; (void)aks;                                                                           \
        DG_TILE_STORE(MR, NV)                                                                           \
    }

// C from the accumulators acc[MR][NV] of a tile (f32 and bf16 tiles alike): see DG_TILE.
#define DG_TILE_STORE(MR, NV)                                                                           \
        __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);                                   \
        __mmask16 masks[NV];                                                                            \
        _Pragma("clang loop unroll(full)") for (int v = 0; v < NV; v++) {                                \
            long r = cols - 16 * v;                                                                     \
            masks[v] = r >= 16 ? (__mmask16)0xFFFF : r <= 0 ? (__mmask16)0 : (__mmask16)((1u << r) - 1); \
        }                                                                                               \
        _Pragma("clang loop unroll(full)") for (int i = 0; i < MR; i++) {                                \
            float *ci = c + i * ldc;                                                                    \
            _Pragma("clang loop unroll(full)") for (int v = 0; v < NV; v++) {                            \
                __mmask16 mk = masks[v];                                                                \
                __m512 r = _mm512_mul_ps(acc[i][v], va);                                                \
                if (first) {                                                                            \
                    if (beta != 0) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mk, ci + 16 * v), r);  \
                    if (rowBias) r = _mm512_add_ps(r, _mm512_set1_ps(rowBias[i]));                      \
                    if (colBias) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(mk, colBias + 16 * v));     \
                } else {                                                                                \
                    r = _mm512_add_ps(_mm512_maskz_loadu_ps(mk, ci + 16 * v), r);                       \
                }                                                                                       \
                _mm512_mask_storeu_ps(ci + 16 * v, mk, r);                                              \
            }                                                                                           \
        }

#define DG_TILES(MR, NV) DG_TILE(MR, NV, 0) DG_TILE(MR, NV, 1)

// 32-column panels: up to 12 rows (24 accumulators).
DG_TILES(1, 2) DG_TILES(2, 2) DG_TILES(3, 2) DG_TILES(4, 2) DG_TILES(5, 2) DG_TILES(6, 2)
DG_TILES(7, 2) DG_TILES(8, 2) DG_TILES(9, 2) DG_TILES(10, 2) DG_TILES(11, 2) DG_TILES(12, 2)
// 16-column panels (narrow products): up to 24 rows.
DG_TILES(1, 1) DG_TILES(2, 1) DG_TILES(3, 1) DG_TILES(4, 1) DG_TILES(5, 1) DG_TILES(6, 1)
DG_TILES(7, 1) DG_TILES(8, 1) DG_TILES(9, 1) DG_TILES(10, 1) DG_TILES(11, 1) DG_TILES(12, 1)
DG_TILES(13, 1) DG_TILES(14, 1) DG_TILES(15, 1) DG_TILES(16, 1) DG_TILES(17, 1) DG_TILES(18, 1)
DG_TILES(19, 1) DG_TILES(20, 1) DG_TILES(21, 1) DG_TILES(22, 1) DG_TILES(23, 1) DG_TILES(24, 1)

// Direct-convolution tiles: MR x 32 outputs of one output row, B read straight from the input image
// (stride 1, all lanes inside it): the value for k index p, lane l is base[off[p] + l].
#define DG_DTILE(MR, ROWMAJOR)                                                                          \
    TGT static void dtile_##MR##_##ROWMAJOR(long kc, const float *a, long ars, long aks, const float *base, \
        const long *off, float *c, long ldc, int first, const float *rowBias) {                          \
        __m512 acc[MR][2];                                                                              \
        _Pragma("clang loop unroll(full)") for (int i = 0; i < MR; i++) {                                \
            acc[i][0] = _mm512_setzero_ps(); acc[i][1] = _mm512_setzero_ps();                           \
        }                                                                                               \
        const float *ap[MR];                                                                            \
        _Pragma("clang loop unroll(full)") for (int i = 0; i < MR; i++) ap[i] = a + i * (ROWMAJOR ? ars : 1); \
        for (long p = 0; p < kc; p++) {                                                                 \
            const float *bp = base + off[p];                                                            \
            __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16);                             \
            _Pragma("clang loop unroll(full)") for (int i = 0; i < MR; i++) {                            \
                __m512 s = _mm512_set1_ps(ROWMAJOR ? ap[i][p] : ap[i][p * aks]);                        \
                acc[i][0] = _mm512_fmadd_ps(s, b0, acc[i][0]);                                          \
                acc[i][1] = _mm512_fmadd_ps(s, b1, acc[i][1]);                                          \
            }                                                                                           \
        }                                                                                               \
        _Pragma("clang loop unroll(full)") for (int i = 0; i < MR; i++) {                                \
            float *ci = c + i * ldc;                                                                    \
            for (int v = 0; v < 2; v++) {                                                               \
                __m512 r = acc[i][v];                                                                   \
                if (first) { if (rowBias) r = _mm512_add_ps(r, _mm512_set1_ps(rowBias[i])); }          \
                else r = _mm512_add_ps(_mm512_loadu_ps(ci + 16 * v), r);                                \
                _mm512_storeu_ps(ci + 16 * v, r);                                                       \
            }                                                                                           \
        }                                                                                               \
    }
#define DG_DTILES(MR) DG_DTILE(MR, 0) DG_DTILE(MR, 1)
DG_DTILES(1) DG_DTILES(2) DG_DTILES(3) DG_DTILES(4) DG_DTILES(5) DG_DTILES(6)
DG_DTILES(7) DG_DTILES(8) DG_DTILES(9) DG_DTILES(10) DG_DTILES(11) DG_DTILES(12)

typedef void (*dtile_fn)(long, const float *, long, long, const float *, const long *, float *, long, int, const float *);
#define DROW(R) { dtile_##R##_0, dtile_##R##_1 }
static const dtile_fn dtiles[13][2] = { { 0, 0 }, DROW(1), DROW(2), DROW(3), DROW(4), DROW(5), DROW(6),
                                        DROW(7), DROW(8), DROW(9), DROW(10), DROW(11), DROW(12) };

typedef void (*tile_fn)(long, const float *, long, long, const float *, float, float *, long, int, float,
                        const float *, const float *, long);

#define ROW2(R) { tile_##R##x2_0, tile_##R##x2_1 }
#define ROW1(R) { tile_##R##x1_0, tile_##R##x1_1 }
static const tile_fn tiles32[13][2] = { { 0, 0 }, ROW2(1), ROW2(2), ROW2(3), ROW2(4), ROW2(5), ROW2(6),
                                        ROW2(7), ROW2(8), ROW2(9), ROW2(10), ROW2(11), ROW2(12) };
static const tile_fn tiles16[25][2] = { { 0, 0 }, ROW1(1), ROW1(2), ROW1(3), ROW1(4), ROW1(5), ROW1(6),
                                        ROW1(7), ROW1(8), ROW1(9), ROW1(10), ROW1(11), ROW1(12),
                                        ROW1(13), ROW1(14), ROW1(15), ROW1(16), ROW1(17), ROW1(18),
                                        ROW1(19), ROW1(20), ROW1(21), ROW1(22), ROW1(23), ROW1(24) };

// The packing buffer of the calling thread (kept for the thread's lifetime).
static float *workspace(size_t floats) {
    static __thread float *buffer = 0;
    static __thread size_t capacity = 0;
    if (capacity < floats) {
        free(buffer);
        buffer = aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64);
        capacity = buffer ? floats : 0;
    }
    return buffer;
}

// An A the product packs into slivers (never reads in place). bf16 set: A(i, p) = bf16[i ars + p aks]
// widened to f32 (a weight stored in bf16, on CPUs where the bf16 products do not pay). Else A of the
// input-gradient product of a stride-1 convolution with weights w [cout, cin, kh, kw]:
// A(i, p) = w[(o cin + row0 + i) kk + kk - 1 - t], p = o kk + t (the kernel flipped and transposed,
// read in place). NULL: A is the strided matrix of dg_gemm.
typedef struct { const float *w; long cin, kk, row0; const unsigned short *bf16; } conv_t_source;

static void gemm(long m, long n, long k, float alpha, const float *a, long ars, long aks, const conv_t_source *ct,
                 const dg_bsource *b, long j0, float beta, float *c, long ldc,
                 const float *rowBias, const float *colBias);

void dg_gemm(long m, long n, long k, float alpha, const float *a, long ars, long aks,
             const dg_bsource *b, long j0, float beta, float *c, long ldc,
             const float *rowBias, const float *colBias) {
    DG_REQUIRE_AVX512("dg_gemm");
    gemm(m, n, k, alpha, a, ars, aks, 0, b, j0, beta, c, ldc, rowBias, colBias);
}

void dg_gemm_conv_t(long m, long n, long k, const float *w, long cin, long kk, long row0,
                    const dg_bsource *b, long j0, float *c, long ldc) {
    DG_REQUIRE_AVX512("dg_gemm_conv_t");
    conv_t_source ct = { w, cin, kk, row0, 0 };
    gemm(m, n, k, 1, 0, 1, 1, &ct, b, j0, 0, c, ldc, 0, 0);
}

static void gemm(long m, long n, long k, float alpha, const float *a, long ars, long aks, const conv_t_source *ct,
                 const dg_bsource *b, long j0, float beta, float *c, long ldc,
                 const float *rowBias, const float *colBias) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {   // C = beta C + biases
        for (long i = 0; i < m; i++)
            for (long j = 0; j < n; j++) {
                float v = beta != 0 ? beta * c[i * ldc + j] : 0;
                if (rowBias) v += rowBias[i];
                if (colBias) v += colBias[j];
                c[i * ldc + j] = v;
            }
        return;
    }
    int prepacked = b->kind == DG_B_PACKED;
    // A stride-1 convolution with few output channels (m), whose output rows are whole 32-column
    // panels, reads B straight from the image: the im2col packing would cost as much as the product
    // (each packed value serves only m rows). Panels off the image's edges are packed one by one.
    // (Measured: 128 -> 128 channels at 512x512 +9%, 128 -> 3 2.6x; from 256 channels on, packing wins.)
    int direct = b->kind == DG_B_IM2COL && b->stride == 1 && b->wout % 32 == 0 && j0 % 32 == 0 && m <= 160
                 && alpha == 1 && beta == 0 && !colBias && n % 32 == 0;
    long nr = prepacked ? b->rs : direct ? 32 : dg_panel_width(n), MR = nr == 16 ? 24 : 12;
    const tile_fn(*tiles)[2] = nr == 16 ? tiles16 : tiles32;
    int rowMajor = aks == 1 ? 1 : 0;   // else ars == 1 (see the header)
    long ncMax = n < DG_NC ? (n + nr - 1) / nr * nr : DG_NC;
    // Direct convolutions take k in blocks of whole channels, few enough that the image rows they read
    // (a multiple of 4 KB apart when a plane is) stay in L1 together.
    long KC = direct ? DG_KC_DIRECT_CHANNELS * b->kh * b->kw : DG_KC;
    if (KC > DG_KC) KC = DG_KC;
    long kcMax = k < KC ? k : KC;
    // Rows of A a multiple of 2 KB apart share the L1 cache's sets: the 24 rows a 16-column tile reads
    // would then evict each other (4x slower). The 12 rows of a 32-column tile fall in one set when they
    // are a multiple of 4 KB apart: they fit the Intel Xeon's 12 ways, not the AMD EPYC's 8 (Zen 4:
    // 4096² products 63-74 -> 75-84 GFLOP/s a core with A packed). Such an A is copied block by block
    // into MR-row slivers (the same sums, in the same order).
    long rowBytes = ars * (long)sizeof(float);
    int packA = ct || (rowMajor && m > 12 && (((MR > 12 || direct) && rowBytes % 2048 == 0)
                                              || (rowBytes % 4096 == 0 && MR > l1d_ways())));
    long mcMax = m < DG_MC ? (m + MR - 1) / MR * MR : DG_MC;
    // Direct convolutions pack only one edge panel at a time, and keep a table of B's row offsets.
    long bFloats = prepacked ? 0 : direct ? kcMax * 32 + kcMax * 2 : kcMax * ncMax;
    size_t bufferFloats = (size_t)(bFloats + (packA ? kcMax * mcMax : 0));
    float *buffer = bufferFloats ? workspace(bufferFloats) : 0;
    if (bufferFloats && !buffer) abort();
    float *packed = prepacked ? 0 : buffer;
    long *offsets = direct ? (long *)(buffer + kcMax * 32) : 0;
    float *apack = packA ? buffer + bFloats : 0;
    for (long jc = 0; jc < n; jc += DG_NC) {
        long nc = n - jc < DG_NC ? n - jc : DG_NC;
        long panels = (nc + nr - 1) / nr;
        for (long p0 = 0; p0 < k; p0 += KC) {
            long kc = k - p0 < KC ? k - p0 : KC;
            int first = p0 == 0;
            if (direct) {
                long kk = b->kh * b->kw;
                for (long p = 0; p < kc; p++) {
                    long r = p0 + p, ch = r / kk, ki = (r / b->kw) % b->kh, kj = r % b->kw;
                    offsets[p] = (ch * b->h + ki) * b->w + kj;
                }
            } else if (!prepacked) {
                pack_b(b, p0, kc, j0 + jc, nc, nr, packed);
            }
            for (long i0 = 0; i0 < m; i0 += DG_MC) {
                long mc = m - i0 < DG_MC ? m - i0 : DG_MC;
                if (packA) {
                    // Sliver t: A(i0 + t MR + i, p0 + p) at apack[t kc MR + p MR + i].
                    for (long t = 0; t * MR < mc; t++) {
                        long rows = mc - t * MR < MR ? mc - t * MR : MR;
                        float *d = apack + t * kc * MR;
                        for (long i = 0; i < rows; i++) {
                            if (ct && ct->bf16) {
                                const unsigned short *src = ct->bf16 + (i0 + t * MR + i) * ars + p0 * aks;
                                for (long p = 0; p < kc; p++) {
                                    unsigned bits = (unsigned)src[p * aks] << 16;
                                    memcpy(d + p * MR + i, &bits, 4);
                                }
                            } else if (ct) {
                                long ch = ct->row0 + i0 + t * MR + i, o = p0 / ct->kk, tt = p0 % ct->kk;
                                const float *src = ct->w + (o * ct->cin + ch) * ct->kk + ct->kk - 1 - tt;
                                for (long p = 0; p < kc; p++) {
                                    d[p * MR + i] = *src;
                                    if (++tt == ct->kk) { tt = 0; o++; src = ct->w + (o * ct->cin + ch) * ct->kk + ct->kk - 1; }
                                    else src--;
                                }
                            } else {
                                const float *src = a + (i0 + t * MR + i) * ars + p0;
                                for (long p = 0; p < kc; p++) d[p * MR + i] = src[p];
                            }
                        }
                    }
                }
                for (long q = 0; q < panels; q++) {
                    const float *bq = prepacked ? b->b + ((j0 + jc) / nr + q) * b->cs * nr + p0 * nr
                                                : packed + q * kc * nr;
                    long jq = jc + q * nr, cols = nc - q * nr < nr ? nc - q * nr : nr;
                    if (direct) {
                        long jp = j0 + jq, oy = jp / b->wout, ox0 = jp % b->wout;
                        long iy0 = oy - b->pad, ix0 = ox0 - b->pad;
                        if (iy0 >= 0 && iy0 + b->kh <= b->h && ix0 >= 0 && ix0 + 32 + b->kw - 1 <= b->w) {
                            const float *base = b->b + iy0 * b->w + ix0;
                            for (long i = i0; i < i0 + mc; i += MR) {
                                long mr = i0 + mc - i < MR ? i0 + mc - i : MR;
                                if (packA) dtiles[mr][0](kc, apack + (i - i0) * kc, 1, MR, base, offsets, c + i * ldc + jq, ldc,
                                                         first, rowBias ? rowBias + i : 0);
                                else dtiles[mr][rowMajor](kc, a + i * ars + p0 * aks, ars, aks, base, offsets, c + i * ldc + jq, ldc,
                                                          first, rowBias ? rowBias + i : 0);
                            }
                            continue;
                        }
                        pack_b(b, p0, kc, jp, cols, 32, packed);   // a panel touching the padding
                        bq = packed;
                    }
                    for (long i = i0; i < i0 + mc; i += MR) {
                        long mr = i0 + mc - i < MR ? i0 + mc - i : MR;
                        if (packA) {
                            tiles[mr][0](kc, apack + (i - i0) * kc, 1, MR, bq, alpha, c + i * ldc + jq, ldc,
                                         first, beta, rowBias ? rowBias + i : 0, colBias ? colBias + jq : 0, cols);
                        } else {
                            tiles[mr][rowMajor](kc, a + i * ars + p0 * aks, ars, aks, bq, alpha, c + i * ldc + jq, ldc,
                                                first, beta, rowBias ? rowBias + i : 0, colBias ? colBias + jq : 0, cols);
                        }
                    }
                }
            }
        }
    }
}

// MARK: transposing packs

// r[i] <- column i of the 16 x 16 matrix whose rows are r[0..15].
TGT static inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int g = 0; g < 2; g++)
        for (int j = 0; j < 4; j++) {
            t[8 * g + j] = _mm512_shuffle_f32x4(r[8 * g + j], r[8 * g + j + 4], 0x88);
            t[8 * g + j + 4] = _mm512_shuffle_f32x4(r[8 * g + j], r[8 * g + j + 4], 0xdd);
        }
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
        r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
    }
}

// B(p, j) = b[p + j cs] (a transposed matrix): 16 x 16 blocks transposed in registers.
TGT static void pack_transposed_avx512(const float *b, long cs, long p0, long kc, long j0, long n, long nr, float *dst) {
    long panels = (n + nr - 1) / nr;
    for (long q = 0; q < panels; q++) {
        float *d = dst + q * kc * nr;
        for (long g = 0; g < nr; g += 16) {
            long jg = q * nr + g;            // first column of the group
            long cols = n - jg;              // valid columns in it (may be <= 0)
            for (long p = 0; p < kc; p += 16) {
                __mmask16 mk = lanes(kc - p);
                __m512 r[16];
                for (int t = 0; t < 16; t++)
                    r[t] = t < cols ? _mm512_maskz_loadu_ps(mk, b + (j0 + jg + t) * cs + p0 + p) : _mm512_setzero_ps();
                transpose16(r);
                long rows = kc - p < 16 ? kc - p : 16;
                for (long u = 0; u < rows; u++) _mm512_storeu_ps(d + (p + u) * nr + g, r[u]);
            }
        }
    }
}


// The same for a bf16 B (a weight W [n, k] read transposed), widened to f32 as it is loaded.
TGT static void pack_transposed_bf16_avx512(const unsigned short *b, long cs, long p0, long kc, long j0, long n, long nr, float *dst) {
    long panels = (n + nr - 1) / nr;
    for (long q = 0; q < panels; q++) {
        float *d = dst + q * kc * nr;
        for (long g = 0; g < nr; g += 16) {
            long jg = q * nr + g, cols = n - jg;
            for (long p = 0; p < kc; p += 16) {
                __mmask16 mk = lanes(kc - p);
                __m512 r[16];
                for (int t = 0; t < 16; t++)
                    r[t] = t < cols ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(
                                          _mm256_maskz_loadu_epi16(mk, b + (j0 + jg + t) * cs + p0 + p)), 16))
                                    : _mm512_setzero_ps();
                transpose16(r);
                long rows = kc - p < 16 ? kc - p : 16;
                for (long u = 0; u < rows; u++) _mm512_storeu_ps(d + (p + u) * nr + g, r[u]);
            }
        }
    }
}

// The im2col of a stride-1 convolution. Row by row of B (so that the reads of x run along its rows,
// which the prefetchers follow): each 16-column vector of a panel row gathers the lanes of the runs
// of consecutive input pixels (one run per output row) that overlap it, with plain loads inside the
// image and masked loads at its edges (the mask drops padding pixels without touching them).
TGT static void pack_im2col_avx512(const dg_bsource *s, long p0, long kc, long j0, long n, long nr, float *dst) {
    enum { MAXRUNS = 1056 };
    long runT[MAXRUNS], runOy[MAXRUNS], runOx[MAXRUNS], runLen[MAXRUNS];
    long kk = s->kh * s->kw, w = s->w, h = s->h, pad = s->pad;
    for (long c0 = 0; c0 < n; c0 += 1024) {   // column chunks of 1024 (whole panels)
        long nc = n - c0 < 1024 ? n - c0 : 1024;
        long nrun = 0;
        for (long t = 0; t < nc;) {
            long jp = j0 + c0 + t, oy = jp / s->wout, ox = jp % s->wout;
            long len = s->wout - ox < nc - t ? s->wout - ox : nc - t;
            runT[nrun] = t; runOy[nrun] = oy; runOx[nrun] = ox; runLen[nrun] = len; nrun++;
            t += len;
        }
        long vectors = (nc + nr - 1) / nr * nr / 16;
        float *base = dst + (c0 / nr) * kc * nr;
        long r = p0, c = r / kk, ki = (r / s->kw) % s->kh, kj = r % s->kw;
        // Input rows this chunk reads from each channel (for prefetching the next channel's).
        long iyFirst = runOy[0] - pad, iyLast = runOy[nrun - 1] - pad + s->kh - 1;
        if (iyFirst < 0) iyFirst = 0;
        if (iyLast > h - 1) iyLast = h - 1;
        for (long p = 0; p < kc; p++) {
            const float *xc = s->b + c * h * w;
            if (ki == 0 && kj == 0 && c + 1 < s->cin && iyLast >= iyFirst) {
                const char *next = (const char *)(xc + h * w + iyFirst * w), *end = (const char *)(xc + h * w + (iyLast + 1) * w);
                for (; next < end; next += 64) _mm_prefetch(next, _MM_HINT_T0);
            }
            long g = 0;   // first run that may overlap the current vector
            for (long vi = 0; vi < vectors; vi++) {
                long v = vi * 16;
                float *o = base + (v / nr) * kc * nr + p * nr + v % nr;
                __m512 vec = _mm512_setzero_ps();
                while (g < nrun && runT[g] + runLen[g] <= v) g++;
                for (long e = g; e < nrun && runT[e] < v + 16; e++) {
                    long t0 = runT[e], len = runLen[e];
                    long iy = runOy[e] - pad + ki;
                    if (iy < 0 || iy >= h) continue;
                    long ix0 = runOx[e] - pad + kj;
                    // Lane l holds run position t = v + l - t0, input column ix0 + t: valid when
                    // 0 <= t < len and 0 <= ix0 + t < w.
                    long lo = t0 + (ix0 < 0 ? -ix0 : 0), hi = t0 + (w - ix0 < len ? w - ix0 : len);
                    long a = lo - v, b = hi - v;
                    if (a < 0) a = 0;
                    if (b > 16) b = 16;
                    if (b <= a) continue;
                    const float *src = xc + iy * w + ix0 + (v - t0);
                    if (a == 0 && b == 16) vec = _mm512_loadu_ps(src);
                    else vec = _mm512_mask_loadu_ps(vec, (__mmask16)(lanes(b) & ~lanes(a)), src);
                }
                _mm512_storeu_ps(o, vec);
            }
            if (++kj == s->kw) { kj = 0; if (++ki == s->kh) { ki = 0; c++; } }
        }
    }
}

// The transposed im2col: 16 im2col rows x 16 positions at a time, built as rows and transposed.
TGT static void pack_im2col_t_avx512(const dg_bsource *s, long p0, long kc, long j0, long n, long nr, float *dst) {
    long panels = (n + nr - 1) / nr;
    float block[16 * 16] __attribute__((aligned(64)));
    for (long q = 0; q < panels; q++) {
        float *d = dst + q * kc * nr;
        for (long g = 0; g < nr; g += 16) {
            long jg = q * nr + g, cols = n - jg;
            for (long p = 0; p < kc; p += 16) {
                long rows = kc - p < 16 ? kc - p : 16;
                for (int t = 0; t < 16; t++) {
                    float *o = block + 16 * t;
                    if (t >= cols) { for (int u = 0; u < 16; u++) o[u] = 0; continue; }
                    for (long u = 0; u < rows;) {
                        long jp = p0 + p + u, oy = jp / s->wout, ox = jp % s->wout;
                        long len = s->wout - ox < rows - u ? s->wout - ox : rows - u;
                        im2col_run(s, j0 + jg + t, oy, ox, len, o + u);
                        u += len;
                    }
                }
                __m512 r[16];
                for (int t = 0; t < 16; t++) r[t] = _mm512_load_ps(block + 16 * t);
                transpose16(r);
                for (long u = 0; u < rows; u++) _mm512_storeu_ps(d + (p + u) * nr + g, r[u]);
            }
        }
    }
}

TGT static void transpose_avx512(const float *src, long rows, long cols, long lds, float *dst, long ldd) {
    for (long i0 = 0; i0 < rows; i0 += 16) {
        long ri = rows - i0 < 16 ? rows - i0 : 16;
        for (long j0 = 0; j0 < cols; j0 += 16) {
            long cj = cols - j0 < 16 ? cols - j0 : 16;
            __mmask16 load = lanes(cj), store = lanes(ri);
            __m512 r[16];
            for (int t = 0; t < 16; t++)
                r[t] = t < ri ? _mm512_maskz_loadu_ps(load, src + (i0 + t) * lds + j0) : _mm512_setzero_ps();
            transpose16(r);
            for (long u = 0; u < cj; u++) {
                if (ri == 16) _mm512_storeu_ps(dst + (j0 + u) * ldd + i0, r[u]);
                else _mm512_mask_storeu_ps(dst + (j0 + u) * ldd + i0, store, r[u]);
            }
        }
    }
}

// MARK: exp and the attention rows

// exp(x): x = n ln2 + r (Cody-Waite), e^r by the Cephes polynomial, times 2^n; 0 below -87.3.
TGT static inline __m512 exp512(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.33654f), hi = _mm512_set1_ps(88.0f);
    __m512 xc = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512 y = _mm512_scalef_ps(p, n);
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ), y);
}

TGT static inline __mmask16 tail_mask(long left) { return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1); }

TGT static void exp_avx512(const float *x, float *y, long n) {
    for (long j = 0; j < n; j += 16) {
        __mmask16 mk = tail_mask(n - j);
        _mm512_mask_storeu_ps(y + j, mk, exp512(_mm512_maskz_loadu_ps(mk, x + j)));
    }
}

// row[j] = exp(row[j] - shift) for j < n (0 for n <= j < keys); returns the sum of the n values
// (float lanes over runs of 512, the runs added in double).
TGT static double exp_row(float *row, long n, long keys, float shift) {
    __m512 sh = _mm512_set1_ps(shift);
    double total = 0;
    for (long j0 = 0; j0 < n; j0 += 512) {
        long end = n - j0 < 512 ? n : j0 + 512;
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        long j = j0;
        for (; j + 32 <= end; j += 32) {
            __m512 e0 = exp512(_mm512_sub_ps(_mm512_loadu_ps(row + j), sh));
            __m512 e1 = exp512(_mm512_sub_ps(_mm512_loadu_ps(row + j + 16), sh));
            _mm512_storeu_ps(row + j, e0);
            _mm512_storeu_ps(row + j + 16, e1);
            acc0 = _mm512_add_ps(acc0, e0);
            acc1 = _mm512_add_ps(acc1, e1);
        }
        for (; j < end; j += 16) {
            __mmask16 mk = tail_mask(end - j);
            __m512 e = _mm512_maskz_mov_ps(mk, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, row + j), sh)));
            _mm512_mask_storeu_ps(row + j, mk, e);
            acc0 = _mm512_add_ps(acc0, e);
        }
        float sums[16];
        _mm512_storeu_ps(sums, _mm512_add_ps(acc0, acc1));
        for (int l = 0; l < 16; l++) total += sums[l];
    }
    for (long j = n; j < keys; j++) row[j] = 0;
    return total;
}

TGT static float max_row(const float *row, long n) {
    __m512 m0 = _mm512_set1_ps(-__builtin_inff()), m1 = m0;
    long j = 0;
    for (; j + 32 <= n; j += 32) {
        m0 = _mm512_max_ps(m0, _mm512_loadu_ps(row + j));
        m1 = _mm512_max_ps(m1, _mm512_loadu_ps(row + j + 16));
    }
    for (; j < n; j += 16) {
        __mmask16 mk = tail_mask(n - j);
        m0 = _mm512_mask_max_ps(m0, mk, m0, _mm512_maskz_loadu_ps(mk, row + j));
    }
    return _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
}

#include <math.h>

// Two vectors of positive finite f32 rounded to bf16 (to nearest even, as vcvtne2ps2bf16; no NaN or
// denormal to care for) as pairs: lane l = lo[l] | hi[l] << 16. Integer AVX-512F only.
TGT static inline __m512i positive_pairs(__m512 lo, __m512 hi) {
    __m512i a = bf16_rounded_bits(_mm512_castps_si512(lo)), b = bf16_rounded_bits(_mm512_castps_si512(hi));
    return _mm512_or_si512(_mm512_srli_epi32(a, 16), _mm512_and_si512(b, _mm512_set1_epi32((int)0xFFFF0000u)));
}

// The softmax of a transposed score panel st [keys, 32] (query j in column j), down its columns, 16
// queries per vector (no horizontal reductions): exp(s - max) (0 where causal masks it) into st, or
// where `pairs` is given, into pairs as the bf16 product's packed B (rows 2 pp and 2 pp + 1 rounded
// to bf16 as one row of 32 pairs; past keys 0); lse[j] the log-sum-exp for j < nq, inverse[j] 1 / sum
// of the f32 exponentials.
TGT static void panel_softmax(float *st, long keys, long nq, int causal, long qpos0, float *lse, float *inverse,
                              unsigned *pairs) {
    for (long half = 0; half < 2; half++) {
        float *col = st + half * 16;
        // Keys each lane's query sees: all, or 0...qpos0 + j (causal).
        __m512i qpos = _mm512_add_epi32(_mm512_set1_epi32((int)(qpos0 + half * 16)),
                                        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
        __m512 m = _mm512_set1_ps(-__builtin_inff());
        for (long r = 0; r < keys; r++) {
            __m512 s = _mm512_loadu_ps(col + r * 32);
            __mmask16 ok = causal ? _mm512_cmp_epi32_mask(_mm512_set1_epi32((int)r), qpos, _MM_CMPINT_LE) : (__mmask16)0xFFFF;
            m = _mm512_mask_max_ps(m, ok, m, s);
        }
        double total[16] = { 0 };
        for (long r0 = 0; r0 < keys; r0 += 512) {
            long end = keys - r0 < 512 ? keys : r0 + 512;
            __m512 acc = _mm512_setzero_ps();
            for (long r = r0; r < end; r += pairs ? 2 : 1) {
                __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(col + r * 32), m));
                if (causal) e = _mm512_maskz_mov_ps(_mm512_cmp_epi32_mask(_mm512_set1_epi32((int)r), qpos, _MM_CMPINT_LE), e);
                acc = _mm512_add_ps(acc, e);
                if (!pairs) {
                    _mm512_storeu_ps(col + r * 32, e);
                    continue;
                }
                __m512 e1 = _mm512_setzero_ps();   // r0 is even, so pairs never straddle two runs
                if (r + 1 < end) {
                    e1 = exp512(_mm512_sub_ps(_mm512_loadu_ps(col + (r + 1) * 32), m));
                    if (causal) e1 = _mm512_maskz_mov_ps(_mm512_cmp_epi32_mask(_mm512_set1_epi32((int)(r + 1)), qpos, _MM_CMPINT_LE), e1);
                    acc = _mm512_add_ps(acc, e1);
                }
                _mm512_storeu_si512(pairs + r / 2 * 32 + half * 16, positive_pairs(e, e1));
            }
            float l[16];
            _mm512_storeu_ps(l, acc);
            for (int i = 0; i < 16; i++) total[i] += l[i];
        }
        float mx[16];
        _mm512_storeu_ps(mx, m);
        for (int i = 0; i < 16; i++) {
            long j = half * 16 + i;
            if (j < nq) lse[j] = mx[i] + (float)log(total[i]);
            inverse[j] = (float)(1 / total[i]);
        }
    }
}

// Each query's 1/sum scales a column of O^T [dv, 32]; 16 x 16 register transposes then write the rows.
TGT static void panel_output(float *ot, long dv, long nq, const float *inverse, float *out, long ldo) {
    __m512 f0 = _mm512_loadu_ps(inverse), f1 = _mm512_loadu_ps(inverse + 16);
    for (long t = 0; t < dv; t++) {
        _mm512_storeu_ps(ot + t * 32, _mm512_mul_ps(_mm512_loadu_ps(ot + t * 32), f0));
        _mm512_storeu_ps(ot + t * 32 + 16, _mm512_mul_ps(_mm512_loadu_ps(ot + t * 32 + 16), f1));
    }
    transpose_avx512(ot, dv, nq, 32, out, ldo);
}

// Attention for up to 32 queries of one head, computed transposed: S^T = K Q^T [keys, 32] comes out
// of the product already in the packed-panel layout the second product reads, the softmax runs down
// its columns, and O^T = V^T P^T reads V in place. No packing of K or V, and full-width tiles
// whatever the head size.
TGT static void attention_panel_avx512(long keys, long d, long dv, float scale, const float *q, long ldq, long nq,
                                       const float *k, long ldk, const float *v, long ldv, float *out, long ldo, float *lse,
                                       int causal, long qpos0, float *scratch) {
    float *st = scratch, *qt = st + keys * 32, *ot = qt + d * 32;
    if (causal && qpos0 + nq < keys) keys = qpos0 + nq;   // later keys are masked for every query here
    dg_bsource qs = { 0 };
    qs.kind = DG_B_MATRIX; qs.b = q; qs.rs = 1; qs.cs = ldq;
    dg_pack(&qs, d, 0, nq, 32, qt);                                   // Q^T [d, 32], zero-padded
    dg_bsource qp = { 0 };
    qp.kind = DG_B_PACKED; qp.b = qt; qp.rs = 32; qp.cs = d;
    gemm(keys, 32, d, scale, k, ldk, 1, 0, &qp, 0, 0, st, 32, 0, 0);  // S^T [keys, 32]
    float inverse[32];
    panel_softmax(st, keys, nq, causal, qpos0, lse, inverse, 0);
    dg_bsource pp = { 0 };
    pp.kind = DG_B_PACKED; pp.b = st; pp.rs = 32; pp.cs = keys;
    gemm(dv, 32, keys, 1, v, 1, ldv, 0, &pp, 0, 0, ot, 32, 0, 0);     // O^T [dv, 32]
    panel_output(ot, dv, nq, inverse, out, ldo);
}

TGT static void attention_probabilities_avx512(long rows, long keys, float *s, long ld, const float *lse, int causal, long qpos0) {
    for (long i = 0; i < rows; i++) {
        float *row = s + i * ld;
        long n = causal ? (qpos0 + i + 1 < keys ? qpos0 + i + 1 : keys) : keys;
        __m512 sh = _mm512_set1_ps(lse[i]);
        for (long j = 0; j < n; j += 16) {
            __mmask16 mk = tail_mask(n - j);
            _mm512_mask_storeu_ps(row + j, mk, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, row + j), sh)));
        }
        for (long j = n; j < keys; j++) row[j] = 0;
    }
}

TGT static void attention_score_gradient_avx512(long rows, long keys, const float *p, float *dp, long ld, const float *delta) {
    for (long i = 0; i < rows; i++) {
        const float *pr = p + i * ld;
        float *dr = dp + i * ld;
        __m512 dl = _mm512_set1_ps(delta[i]);
        for (long j = 0; j < keys; j += 16) {
            __mmask16 mk = tail_mask(keys - j);
            __m512 r = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, pr + j), _mm512_sub_ps(_mm512_maskz_loadu_ps(mk, dr + j), dl));
            _mm512_mask_storeu_ps(dr + j, mk, r);
        }
    }
}

// MARK: the bfloat16 product (vdpbf16ps)

// AVX512-BF16 (CPUID leaf 7, subleaf 1, EAX bit 5), on top of the AVX-512 check; cached.
int dg_cpu_has_avx512_bf16(void) {
    static _Atomic int cached = -1;
    int known = atomic_load_explicit(&cached, memory_order_relaxed);
    if (__builtin_expect(known >= 0, 1)) return known;
    unsigned a = 0, b, c, d;
    int ok = dg_cpu_has_avx512() && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5));
    atomic_store(&cached, ok);
    return ok;
}

#define TGTBF __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,fma,avx2,avx")))

typedef unsigned short dg_bf16;

#include <x86intrin.h>

// Multiply-adds per TSC cycle of 12 independent chains of vdpbf16ps (32 each) and of vfmadd231ps (16
// each), best of 9 runs of 256 rounds (a run preempted by another process only counts if it is the best).
TGTBF static void time_dot_rates(double *bf16, double *f32) {
    __m512 acc[12];
    __m512i x = _mm512_set1_epi32(0x3F803F80);
    __m512 y = _mm512_set1_ps(1.0f);
    unsigned long long best[2] = { ~0ull, ~0ull };
    for (int run = 0; run < 9; run++) {
        for (int kind = 0; kind < 2; kind++) {
            for (int i = 0; i < 12; i++) acc[i] = _mm512_setzero_ps();
            unsigned long long t0 = __rdtsc();
            for (int r = 0; r < 256; r++) {
                __asm__ volatile("" : "+v"(x), "+v"(y));   // keep the operands opaque: no folding
                if (kind == 0) {
                    for (int i = 0; i < 12; i++) acc[i] = _mm512_dpbf16_ps(acc[i], (__m512bh)x, (__m512bh)x);
                } else {
                    for (int i = 0; i < 12; i++) acc[i] = _mm512_fmadd_ps(y, y, acc[i]);
                }
            }
            unsigned long long t = __rdtsc() - t0;
            __m512 s = acc[0];
            for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, acc[i]);
            __asm__ volatile("" : : "v"(s));
            if (t < best[kind]) best[kind] = t;
        }
    }
    *bf16 = 256.0 * 12 * 32 / (double)best[0];
    *f32 = 256.0 * 12 * 16 / (double)best[1];
}

void dg_bf16_dot_rates(double *bf16, double *f32) {
    static _Atomic int done = 0;
    static double rates[2];
    if (!dg_cpu_has_avx512_bf16()) { *bf16 = 0; *f32 = 0; return; }
    if (!atomic_load(&done)) {   // two threads may both time it: the same answer either way
        double b, f;
        time_dot_rates(&b, &f);
        rates[0] = b; rates[1] = f;
        atomic_store(&done, 1);
    }
    *bf16 = rates[0]; *f32 = rates[1];
}

double dg_tsc_ghz(void) {
    static _Atomic double cached = -1;
    double known = atomic_load(&cached);
    if (known >= 0) return known;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    unsigned long long t0 = __rdtsc();
    double elapsed;
    do {
        clock_gettime(CLOCK_MONOTONIC, &b);
        elapsed = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
    } while (elapsed < 0.02);
    double ghz = (double)(__rdtsc() - t0) / elapsed * 1e-9;
    atomic_store(&cached, ghz);
    return ghz;
}

int dg_bf16_dot_pays(void) {
    static _Atomic int cached = -1;
    int known = atomic_load_explicit(&cached, memory_order_relaxed);
    if (__builtin_expect(known >= 0, 1)) return known;
    double b, f;
    dg_bf16_dot_rates(&b, &f);
    int pays = b >= 1.5 * f && f > 0;
    atomic_store(&cached, pays);
    return pays;
}

// Two bf16 values as one 32-bit lane (the first, k even, in the low half): what vdpbf16ps multiplies in pairs.
static inline unsigned load_pair(const dg_bf16 *p) { unsigned v; memcpy(&v, p, 4); return v; }

// Round to nearest even, as vcvtneps2bf16 does (f32 denormals to signed 0, NaN stays a quiet NaN).
static inline dg_bf16 to_bf16(float f) {
    unsigned x;
    memcpy(&x, &f, 4);
    if ((x & 0x7F800000u) == 0x7F800000u && (x & 0x7FFFFFu)) return (dg_bf16)((x >> 16) | 0x40);
    if ((x & 0x7F800000u) == 0) return (dg_bf16)((x >> 16) & 0x8000);
    return (dg_bf16)((x + 0x7FFFu + ((x >> 16) & 1)) >> 16);
}

// One MR x (16 NV) tile over kp pairs of k from a bf16 panel b (kp x 16 NV pairs); the epilogue is the
// f32 tile's. ROWMAJOR: A(i, 2 pp) and A(i, 2 pp + 1) are the bf16 values at a16 + i ars + 2 pp (a bf16
// weight read in place); else a is a packed sliver of pairs: pair (i, pp) at a32[pp ars + i].
#define DG_BTILE(MR, NV, ROWMAJOR)                                                                      \
    TGTBF static void btile_##MR##x##NV##_##ROWMAJOR(long kp, const void *a, long ars,                  \
        const unsigned *b, float alpha, float *c, long ldc, int first, float beta,                       \
        const float *rowBias, const float *colBias, long cols) {                                        \
        __m512 acc[MR][NV];                                                                             \
        _Pragma("clang loop unroll(full)") for (int i = 0; i < MR; i++)                                  \
            _Pragma("clang loop unroll(full)") for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps(); \
        const dg_bf16 *a16 = (const dg_bf16 *)a;                                                        \
        const unsigned *a32 = (const unsigned *)a;                                                      \
        for (long pp = 0; pp < kp; pp++) {                                                              \
            __m512i bv[NV];                                                                             \
            _Pragma("clang loop unroll(full)") for (int v = 0; v < NV; v++)                              \
                bv[v] = _mm512_loadu_si512(b + pp * (16 * NV) + 16 * v);                                 \
            _Pragma("clang loop unroll(full)") for (int i = 0; i < MR; i++) {                            \
                __m512i s = _mm512_set1_epi32((int)(ROWMAJOR ? load_pair(a16 + i * ars + 2 * pp) : a32[pp * ars + i])); \
                _Pragma("clang loop unroll(full)") for (int v = 0; v < NV; v++)                          \
                    acc[i][v] = _mm512_dpbf16_ps(acc[i][v], (__m512bh)s, (__m512bh)bv[v]);              \
            }                                                                                           \
        }                                                                                               \
        (void)a16; (void)a32; (void)ars;                                                                \
        DG_TILE_STORE(MR, NV)                                                                           \
    }

#define DG_BTILES(MR, NV) DG_BTILE(MR, NV, 0) DG_BTILE(MR, NV, 1)
DG_BTILES(1, 2) DG_BTILES(2, 2) DG_BTILES(3, 2) DG_BTILES(4, 2) DG_BTILES(5, 2) DG_BTILES(6, 2)
DG_BTILES(7, 2) DG_BTILES(8, 2) DG_BTILES(9, 2) DG_BTILES(10, 2) DG_BTILES(11, 2) DG_BTILES(12, 2)
DG_BTILES(1, 1) DG_BTILES(2, 1) DG_BTILES(3, 1) DG_BTILES(4, 1) DG_BTILES(5, 1) DG_BTILES(6, 1)
DG_BTILES(7, 1) DG_BTILES(8, 1) DG_BTILES(9, 1) DG_BTILES(10, 1) DG_BTILES(11, 1) DG_BTILES(12, 1)
DG_BTILES(13, 1) DG_BTILES(14, 1) DG_BTILES(15, 1) DG_BTILES(16, 1) DG_BTILES(17, 1) DG_BTILES(18, 1)
DG_BTILES(19, 1) DG_BTILES(20, 1) DG_BTILES(21, 1) DG_BTILES(22, 1) DG_BTILES(23, 1) DG_BTILES(24, 1)

typedef void (*btile_fn)(long, const void *, long, const unsigned *, float, float *, long, int, float,
                         const float *, const float *, long);
#define BROW2(R) { btile_##R##x2_0, btile_##R##x2_1 }
#define BROW1(R) { btile_##R##x1_0, btile_##R##x1_1 }
static const btile_fn btiles32[13][2] = { { 0, 0 }, BROW2(1), BROW2(2), BROW2(3), BROW2(4), BROW2(5), BROW2(6),
                                          BROW2(7), BROW2(8), BROW2(9), BROW2(10), BROW2(11), BROW2(12) };
static const btile_fn btiles16[25][2] = { { 0, 0 }, BROW1(1), BROW1(2), BROW1(3), BROW1(4), BROW1(5), BROW1(6),
                                          BROW1(7), BROW1(8), BROW1(9), BROW1(10), BROW1(11), BROW1(12),
                                          BROW1(13), BROW1(14), BROW1(15), BROW1(16), BROW1(17), BROW1(18),
                                          BROW1(19), BROW1(20), BROW1(21), BROW1(22), BROW1(23), BROW1(24) };

// 16 pairs (lo[l], hi[l]) rounded to bf16: lane l = lo[l] | hi[l] << 16.
TGTBF static inline __m512i pairs16(__m512 lo, __m512 hi) {
    // 16-bit lane 2 l takes lo's value l (lane l of the conversion), lane 2 l + 1 hi's (lane l + 16).
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i interleave = _mm512_or_si512(lanes, _mm512_slli_epi32(_mm512_add_epi32(lanes, _mm512_set1_epi32(16)), 16));
    return _mm512_permutexvar_epi16(interleave, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}

// B(p0 + p, j0 + j), p < kc, j < n, as ceil(n / nr) panels of kp = ceil(kc / 2) x nr pairs (zero-padded
// past kc and n). f32 sources are packed panel by panel as the f32 product packs them (into tmp,
// kc x nr floats), then rounded; a bf16 weight read transposed (rs = 1: each column's k values are
// adjacent, i.e. already pairs) is moved as 32-bit pairs through 16 x 16 register transposes.
TGTBF static void pack_b_bf16(const dg_bsource *s, long p0, long kc, long j0, long n, long nr, unsigned *dst, float *tmp) {
    long panels = (n + nr - 1) / nr, kp = (kc + 1) / 2;
    for (long q = 0; q < panels; q++) {
        long jq = j0 + q * nr, cols = n - q * nr < nr ? n - q * nr : nr;
        unsigned *d = dst + q * kp * nr;
        if (!s->bf16) {
            pack_b(s, p0, kc, jq, cols, nr, tmp);
            for (long pp = 0; pp < kp; pp++) {
                const float *lo = tmp + 2 * pp * nr, *hi = lo + nr;
                int odd = 2 * pp + 1 == kc;   // the last k value has no partner: pair it with 0
                for (long g = 0; g < nr; g += 16)
                    _mm512_storeu_si512(d + pp * nr + g, pairs16(_mm512_loadu_ps(lo + g), odd ? _mm512_setzero_ps() : _mm512_loadu_ps(hi + g)));
            }
            continue;
        }
        const dg_bf16 *b16 = (const dg_bf16 *)s->b;
        if (s->rs == 1) {
            for (long g = 0; g < nr; g += 16) {
                long valid = cols - g;   // columns of this group inside B (may be <= 0)
                for (long pp = 0; pp < kp; pp += 16) {
                    long left = kc - 2 * pp;   // k values left from 2 pp
                    __mmask32 mk = left >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << left) - 1);
                    __m512 r[16];
                    for (int t = 0; t < 16; t++)
                        r[t] = t < valid ? (__m512)_mm512_maskz_loadu_epi16(mk, b16 + (jq + g + t) * s->cs + p0 + 2 * pp)
                                         : _mm512_setzero_ps();
                    transpose16(r);
                    long rows = kp - pp < 16 ? kp - pp : 16;
                    for (long u = 0; u < rows; u++) _mm512_storeu_ps((float *)(d + (pp + u) * nr + g), r[u]);
                }
            }
            continue;
        }
        for (long pp = 0; pp < kp; pp++) {   // any other layout, value by value
            long p = p0 + 2 * pp;
            for (long t = 0; t < nr; t++) {
                unsigned lo = 0, hi = 0;
                if (t < cols) {
                    lo = b16[p * s->rs + (jq + t) * s->cs];
                    if (2 * pp + 1 < kc) hi = b16[(p + 1) * s->rs + (jq + t) * s->cs];
                }
                d[pp * nr + t] = lo | hi << 16;
            }
        }
    }
}

// Slivers of A's rows i0..<i0+mc, k values p0..<p0+kc: sliver t holds pair (i, pp) of rows
// i0 + t MR + i at dst[t kp MR + pp MR + i] (rows past mc are left as they are: their tiles are not run).
TGTBF static void pack_a_bf16(const void *a, int aBF16, long ars, long aks, long i0, long mc, long p0, long kc, long MR, unsigned *dst) {
    long kp = (kc + 1) / 2;
    for (long t = 0; t * MR < mc; t++) {
        long rows = mc - t * MR < MR ? mc - t * MR : MR;
        unsigned *d = dst + t * kp * MR;
        long r0 = i0 + t * MR;
        if (!aBF16 && aks == 1) {   // f32 rows: 32 consecutive values -> 16 pairs, scattered MR apart
            const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                                   _mm512_set1_epi32((int)MR));
            for (long i = 0; i < rows; i++) {
                const float *src = (const float *)a + (r0 + i) * ars + p0;
                for (long pp = 0; pp < kp; pp += 16) {
                    long left = kc - 2 * pp;
                    __mmask16 m0 = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
                    __mmask16 m1 = left >= 32 ? (__mmask16)0xFFFF : left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
                    __m512 lo = _mm512_maskz_loadu_ps(m0, src + 2 * pp), hi = _mm512_maskz_loadu_ps(m1, src + 2 * pp + 16);
                    __m512i v = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);   // bf16 in k order: lane l = pair pp + l
                    long np = kp - pp < 16 ? kp - pp : 16;
                    _mm512_mask_i32scatter_epi32(d + pp * MR + i, (__mmask16)((1u << np) - 1), idx, v, 4);
                }
            }
        } else if (!aBF16 && ars == 1) {   // f32 columns (A transposed): 16 rows at a time
            for (long i = 0; i < rows; i += 16) {
                long nrow = rows - i < 16 ? rows - i : 16;
                __mmask16 mk = (__mmask16)((1u << nrow) - 1);
                for (long pp = 0; pp < kp; pp++) {
                    const float *lo = (const float *)a + r0 + i + (p0 + 2 * pp) * aks;
                    __m512 hi = 2 * pp + 1 < kc ? _mm512_maskz_loadu_ps(mk, lo + aks) : _mm512_setzero_ps();
                    _mm512_mask_storeu_epi32(d + pp * MR + i, mk, pairs16(_mm512_maskz_loadu_ps(mk, lo), hi));
                }
            }
        } else {   // bf16 values (or any other f32 layout), one by one
            for (long i = 0; i < rows; i++)
                for (long pp = 0; pp < kp; pp++) {
                    long p = p0 + 2 * pp, off = (r0 + i) * ars + p * aks;
                    unsigned lo, hi = 0;
                    if (aBF16) {
                        lo = ((const dg_bf16 *)a)[off];
                        if (2 * pp + 1 < kc) hi = ((const dg_bf16 *)a)[off + aks];
                    } else {
                        lo = to_bf16(((const float *)a)[off]);
                        if (2 * pp + 1 < kc) hi = to_bf16(((const float *)a)[off + aks]);
                    }
                    d[pp * MR + i] = lo | hi << 16;
                }
        }
    }
}

TGTBF static void gemm_bf16(long m, long n, long k, float alpha, const void *a, int aBF16, long ars, long aks,
                            const dg_bsource *b, long j0, float beta, float *c, long ldc,
                            const float *rowBias, const float *colBias) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) { gemm(m, n, k, alpha, 0, 1, 1, 0, b, j0, beta, c, ldc, rowBias, colBias); return; }   // C = beta C + biases
    // DG_B_PACKED (internal: the attention's P^T): bf16 pairs as pack_b_bf16 lays them out, panels of
    // width rs over all cs = k rows.
    int prepacked = b->kind == DG_B_PACKED;
    long nr = prepacked ? b->rs : dg_panel_width(n), MR = nr == 16 ? 24 : 12;
    const btile_fn(*tiles)[2] = nr == 16 ? btiles16 : btiles32;
    long ncMax = n < DG_NC ? (n + nr - 1) / nr * nr : DG_NC;
    long kcMax = k < DG_KC_BF16 ? k : DG_KC_BF16, kpMax = (kcMax + 1) / 2;
    long mcMax = m < DG_MC ? (m + MR - 1) / MR * MR : DG_MC;
    // A bf16 row-major A (a weight) is read in place, as pairs; with k even no pair runs past a row.
    // Rows a multiple of 2 KB apart are packed, as in the f32 product (they would share L1 sets).
    int inPlace = aBF16 && aks == 1 && k % 2 == 0 && !(MR > 12 && m > 12 && (ars * 2) % 2048 == 0);
    size_t bWords = prepacked ? 0 : (size_t)(kpMax * ncMax), tmpWords = prepacked ? 0 : (size_t)(kcMax * nr);
    size_t aWords = inPlace ? 0 : (size_t)(kpMax * mcMax);
    float *buffer = workspace(bWords + tmpWords + aWords + 1);   // + 1: never empty, so never NULL
    if (!buffer) abort();
    unsigned *packed = (unsigned *)buffer, *apack = (unsigned *)(buffer + bWords + tmpWords);
    float *tmp = buffer + bWords;
    for (long jc = 0; jc < n; jc += DG_NC) {
        long nc = n - jc < DG_NC ? n - jc : DG_NC;
        long panels = (nc + nr - 1) / nr;
        for (long p0 = 0; p0 < k; p0 += DG_KC_BF16) {
            long kc = k - p0 < DG_KC_BF16 ? k - p0 : DG_KC_BF16, kp = (kc + 1) / 2;
            int first = p0 == 0;
            if (!prepacked) pack_b_bf16(b, p0, kc, j0 + jc, nc, nr, packed, tmp);
            for (long i0 = 0; i0 < m; i0 += DG_MC) {
                long mc = m - i0 < DG_MC ? m - i0 : DG_MC;
                if (!inPlace) pack_a_bf16(a, aBF16, ars, aks, i0, mc, p0, kc, MR, apack);
                for (long q = 0; q < panels; q++) {
                    const unsigned *bq = prepacked ? (const unsigned *)b->b + (((j0 + jc) / nr + q) * ((b->cs + 1) / 2) + p0 / 2) * nr
                                                   : packed + q * kp * nr;
                    long jq = jc + q * nr, cols = nc - q * nr < nr ? nc - q * nr : nr;
                    for (long i = i0; i < i0 + mc; i += MR) {
                        long mr = i0 + mc - i < MR ? i0 + mc - i : MR;
                        const void *ai = inPlace ? (const void *)((const dg_bf16 *)a + i * ars + p0) : (const void *)(apack + (i - i0) * kp);
                        tiles[mr][inPlace](kp, ai, inPlace ? ars : MR, bq, alpha, c + i * ldc + jq, ldc, first, beta,
                                           rowBias ? rowBias + i : 0, colBias ? colBias + jq : 0, cols);
                    }
                }
            }
        }
    }
}

// MARK: attention in bf16

TGTBF static void round_row(const float *x, dg_bf16 *y, long n) {
    for (long j = 0; j < n; j += 16) {
        __mmask16 mk = tail_mask(n - j);
        _mm256_mask_storeu_epi16(y + j, mk, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mk, x + j)));
    }
}

// Rounded once per head rather than once per panel of 32 queries: K as bf16 rows and V transposed, the
// A operands both products then read in place (V^T with an even row length, so no pair runs past a row).
TGTBF static void attention_bf16_operands(long keys, long d, long dv, const float *k, long ldk, const float *v, long ldv,
                                          dg_bf16 *kb, dg_bf16 *vt, float *scratch) {
    for (long r = 0; r < keys; r++) round_row(k + r * ldk, kb + r * d, d);
    if (!vt) return;
    long ldvt = (keys + 1) / 2 * 2;
    transpose_avx512(v, keys, dv, ldv, scratch, ldvt);
    for (long t = 0; t < dv; t++) {
        if (keys < ldvt) scratch[t * ldvt + keys] = 0;
        round_row(scratch + t * ldvt, vt + t * ldvt, ldvt);
    }
}

// attention_panel_avx512 with both products through vdpbf16ps: Q, K, V and the probabilities rounded to
// bf16 at the products' inputs (as PyTorch's bf16 autocast rounds them), the scores, the softmax and
// the output's 1/sum in f32.
TGTBF static void attention_panel_bf16(long keys, long d, long dv, float scale, const float *q, long ldq, long nq,
                                       const dg_bf16 *kb, const dg_bf16 *vt, float *out, long ldo, float *lse,
                                       int causal, long qpos0, float *scratch) {
    long ldvt = (keys + 1) / 2 * 2;
    float *st = scratch, *ot = st + keys * 32;
    unsigned *pt = (unsigned *)(ot + dv * 32);
    if (causal && qpos0 + nq < keys) keys = qpos0 + nq;
    // The product writes nq columns; the softmax reads all 32 (their results are not used).
    if (nq < 32) memset(st, 0, (size_t)keys * 32 * sizeof(float));
    dg_bsource qs = { 0 };
    qs.kind = DG_B_MATRIX; qs.b = q; qs.rs = 1; qs.cs = ldq;
    gemm_bf16(keys, nq, d, scale, kb, 1, d, 1, &qs, 0, 0, st, 32, 0, 0);          // S^T [keys, 32]
    float inverse[32];
    panel_softmax(st, keys, nq, causal, qpos0, lse, inverse, pt);                  // P^T as bf16 pairs
    long keys2 = (keys + 1) / 2 * 2;   // even: V^T is read in place as pairs (its padding and P^T's are 0)
    dg_bsource ps = { 0 };
    ps.kind = DG_B_PACKED; ps.b = (const float *)pt; ps.rs = 32; ps.cs = keys2;
    gemm_bf16(dv, 32, keys2, 1, vt, 1, ldvt, 1, &ps, 0, 0, ot, 32, 0, 0);          // O^T [dv, 32]
    panel_output(ot, dv, nq, inverse, out, ldo);
}

static void require_bf16(const char *who) {
    if (!dg_has_avx512_bf16()) {
        fprintf(stderr, "dginstyle: %s needs the bf16 products (dg_has_avx512_bf16)\n", who);
        abort();
    }
}

void dg_attention_bf16_operands(long keys, long d, long dv, const float *k, long ldk, const float *v, long ldv,
                                unsigned short *kb, unsigned short *vt, float *scratch) {
    require_bf16(__func__);
    attention_bf16_operands(keys, d, dv, k, ldk, v, ldv, kb, vt, scratch);
}

void dg_attention_panel_bf16(long keys, long d, long dv, float scale, const float *q, long ldq, long nq,
                             const unsigned short *kb, const unsigned short *vt, float *out, long ldo, float *lse,
                             int causal, long qpos0, float *scratch) {
    require_bf16(__func__);
    attention_panel_bf16(keys, d, dv, scale, q, ldq, nq, kb, vt, out, ldo, lse, causal, qpos0, scratch);
}

void dg_gemm_bf16(long m, long n, long k, float alpha, const void *a, int a_bf16, long ars, long aks,
                  const dg_bsource *b, long j0, float beta, float *c, long ldc,
                  const float *rowBias, const float *colBias) {
    DG_REQUIRE_AVX512("dg_gemm_bf16");
    if (b->kind == DG_B_PACKED) {
        fprintf(stderr, "dginstyle: dg_gemm_bf16 takes no pre-packed f32 source\n");
        abort();
    }
    if (dg_has_avx512_bf16()) {
        gemm_bf16(m, n, k, alpha, a, a_bf16, ars, aks, b, j0, beta, c, ldc, rowBias, colBias);
    } else if (a_bf16) {   // f32 products, the bf16 operands widened as they are packed
        conv_t_source wide = { 0, 0, 0, 0, (const unsigned short *)a };
        gemm(m, n, k, alpha, 0, ars, aks, &wide, b, j0, beta, c, ldc, rowBias, colBias);
    } else {
        gemm(m, n, k, alpha, (const float *)a, ars, aks, 0, b, j0, beta, c, ldc, rowBias, colBias);
    }
}

// The exported entry points: plain (baseline x86-64) code that checks the switch, then the AVX-512 code.
void dg_transpose(const float *src, long rows, long cols, long lds, float *dst, long ldd) {
    DG_REQUIRE_AVX512("dg_transpose");
    transpose_avx512(src, rows, cols, lds, dst, ldd);
}
void dg_exp(const float *x, float *y, long n) {
    DG_REQUIRE_AVX512("dg_exp");
    exp_avx512(x, y, n);
}
void dg_attention_panel(long keys, long d, long dv, float scale, const float *q, long ldq, long nq,
                        const float *k, long ldk, const float *v, long ldv, float *out, long ldo, float *lse,
                        int causal, long qpos0, float *scratch) {
    DG_REQUIRE_AVX512("dg_attention_panel");
    attention_panel_avx512(keys, d, dv, scale, q, ldq, nq, k, ldk, v, ldv, out, ldo, lse, causal, qpos0, scratch);
}
void dg_attention_probabilities(long rows, long keys, float *s, long ld, const float *lse, int causal, long qpos0) {
    DG_REQUIRE_AVX512("dg_attention_probabilities");
    attention_probabilities_avx512(rows, keys, s, ld, lse, causal, qpos0);
}
void dg_attention_score_gradient(long rows, long keys, const float *p, float *dp, long ld, const float *delta) {
    DG_REQUIRE_AVX512("dg_attention_score_gradient");
    attention_score_gradient_avx512(rows, keys, p, dp, ld, delta);
}

#else

int dg_cpu_has_avx512(void) { return 0; }
int dg_cpu_is_amd(void) { return 0; }
int dg_cpu_has_avx512_bf16(void) { return 0; }
double dg_tsc_ghz(void) { return 0; }
int dg_bf16_dot_pays(void) { return 0; }
void dg_bf16_dot_rates(double *bf16, double *f32) { *bf16 = 0; *f32 = 0; }
void dg_gemm_bf16(long m, long n, long k, float alpha, const void *a, int a_bf16, long ars, long aks,
                  const dg_bsource *b, long j0, float beta, float *c, long ldc,
                  const float *rowBias, const float *colBias) {
    (void)m; (void)n; (void)k; (void)alpha; (void)a; (void)a_bf16; (void)ars; (void)aks; (void)b; (void)j0;
    (void)beta; (void)c; (void)ldc; (void)rowBias; (void)colBias;
    dg_refuse_avx512(__func__);
}
void dg_gemm_conv_t(long m, long n, long k, const float *w, long cin, long kk, long row0,
                    const dg_bsource *b, long j0, float *c, long ldc) {
    (void)m; (void)n; (void)k; (void)w; (void)cin; (void)kk; (void)row0; (void)b; (void)j0; (void)c; (void)ldc;
    dg_refuse_avx512(__func__);
}
void dg_transpose(const float *src, long rows, long cols, long lds, float *dst, long ldd) {
    (void)src; (void)rows; (void)cols; (void)lds; (void)dst; (void)ldd;
    dg_refuse_avx512(__func__);
}
static void pack_transposed_avx512(const float *b, long cs, long p0, long kc, long j0, long n, long nr, float *dst) {
    (void)b; (void)cs; (void)p0; (void)kc; (void)j0; (void)n; (void)nr; (void)dst; dg_refuse_avx512(__func__);
}
static void pack_transposed_bf16_avx512(const unsigned short *b, long cs, long p0, long kc, long j0, long n, long nr, float *dst) {
    (void)b; (void)cs; (void)p0; (void)kc; (void)j0; (void)n; (void)nr; (void)dst; dg_refuse_avx512(__func__);
}
static void pack_im2col_t_avx512(const dg_bsource *s, long p0, long kc, long j0, long n, long nr, float *dst) {
    (void)s; (void)p0; (void)kc; (void)j0; (void)n; (void)nr; (void)dst; dg_refuse_avx512(__func__);
}
static void pack_im2col_avx512(const dg_bsource *s, long p0, long kc, long j0, long n, long nr, float *dst) {
    (void)s; (void)p0; (void)kc; (void)j0; (void)n; (void)nr; (void)dst; dg_refuse_avx512(__func__);
}
void dg_exp(const float *x, float *y, long n) { (void)x; (void)y; (void)n; dg_refuse_avx512(__func__); }
void dg_attention_panel(long keys, long d, long dv, float scale, const float *q, long ldq, long nq,
                        const float *k, long ldk, const float *v, long ldv, float *out, long ldo, float *lse,
                        int causal, long qpos0, float *scratch) {
    (void)keys; (void)d; (void)dv; (void)scale; (void)q; (void)ldq; (void)nq; (void)k; (void)ldk; (void)v; (void)ldv;
    (void)out; (void)ldo; (void)lse; (void)causal; (void)qpos0; (void)scratch;
    dg_refuse_avx512(__func__);
}
void dg_attention_bf16_operands(long keys, long d, long dv, const float *k, long ldk, const float *v, long ldv,
                                unsigned short *kb, unsigned short *vt, float *scratch) {
    (void)keys; (void)d; (void)dv; (void)k; (void)ldk; (void)v; (void)ldv; (void)kb; (void)vt; (void)scratch;
    dg_refuse_avx512(__func__);
}
void dg_attention_panel_bf16(long keys, long d, long dv, float scale, const float *q, long ldq, long nq,
                             const unsigned short *kb, const unsigned short *vt, float *out, long ldo, float *lse,
                             int causal, long qpos0, float *scratch) {
    (void)keys; (void)d; (void)dv; (void)scale; (void)q; (void)ldq; (void)nq; (void)kb; (void)vt;
    (void)out; (void)ldo; (void)lse; (void)causal; (void)qpos0; (void)scratch;
    dg_refuse_avx512(__func__);
}
void dg_attention_probabilities(long rows, long keys, float *s, long ld, const float *lse, int causal, long qpos0) {
    (void)rows; (void)keys; (void)s; (void)ld; (void)lse; (void)causal; (void)qpos0;
    dg_refuse_avx512(__func__);
}
void dg_attention_score_gradient(long rows, long keys, const float *p, float *dp, long ld, const float *delta) {
    (void)rows; (void)keys; (void)p; (void)dp; (void)ld; (void)delta;
    dg_refuse_avx512(__func__);
}
void dg_gemm(long m, long n, long k, float alpha, const float *a, long ars, long aks,
             const dg_bsource *b, long j0, float beta, float *c, long ldc,
             const float *rowBias, const float *colBias) {
    (void)m; (void)n; (void)k; (void)alpha; (void)a; (void)ars; (void)aks; (void)b; (void)j0;
    (void)beta; (void)c; (void)ldc; (void)rowBias; (void)colBias;
    dg_refuse_avx512(__func__);
}

#endif
