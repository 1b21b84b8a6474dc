// The transforms of a Winograd F(2x2, 3x3) convolution; see include/dg_kernels.h.
//
// A 3x3, stride-1, padding-1 convolution computed on 4x4 input tiles (stride 2) gives each 2x2 block
// of outputs from 16 products per (output, input) channel pair instead of 36: Y = A^T [(G g G^T) o
// (B^T d B)] A. The 16 elementwise products over all channel pairs are 16 matrix products
// U[xi] [cout, cin] x V[xi] [cin, tiles] (our GEMM), so the multiply-adds drop by 2.25x and the
// transforms around them are additions only (coefficients 0, +-1, +-1/2: rounding close to the
// direct sums'). F(4x4, 3x3) below trades more rounding for 4x fewer.
#include "dg_kernels.h"

#if defined(__x86_64__)
#include "avx512.h"

// 16 floats of row r from column s on, 0 outside columns [0, w).
TGT static inline __m512 load_row(const float *r, long s, long w) {
    long lo = s < 0 ? -s : 0;
    __mmask16 m = (__mmask16)(lanes(w - s) & ~lanes(lo));
    return _mm512_maskz_loadu_ps(m, r + s);
}

// 16 floats rounded to bf16 as vcvtneps2bf16 rounds them (nearest even; f32 denormals to signed 0, NaN
// stays a quiet NaN), without needing AVX512-BF16 in this function's target.
TGT static inline __m256i bf16_of(__m512 v) {
    const __m512i x = _mm512_castps_si512(v), high = _mm512_srli_epi32(x, 16);
    const __m512i exponent = _mm512_and_si512(x, _mm512_set1_epi32(0x7F800000));
    __m512i r = _mm512_srli_epi32(bf16_rounded_bits(x), 16);
    r = _mm512_mask_mov_epi32(r, _mm512_cmpeq_epi32_mask(exponent, _mm512_setzero_si512()),
                              _mm512_and_si512(high, _mm512_set1_epi32(0x8000)));
    __mmask16 nan = _mm512_cmpeq_epi32_mask(exponent, _mm512_set1_epi32(0x7F800000))
                  & _mm512_test_epi32_mask(x, _mm512_set1_epi32(0x7FFFFF));
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(high, _mm512_set1_epi32(0x40)));
    return _mm512_cvtepi32_epi16(r);
}

// u[off..<off + lanes m] = v, as f32 or (out_bf16) rounded to bf16.
TGT static inline void store_u(void *u, int out_bf16, long off, __mmask16 m, __m512 v) {
    if (out_bf16) _mm256_mask_storeu_epi16((unsigned short *)u + off, m, bf16_of(v));
    else _mm512_mask_storeu_ps((float *)u + off, m, v);
}

// The 9 taps of output channel r, input channels q0..<q0 + n (n <= 16) into gt[t][lane] (0 past n),
// the kernel turned by 180 degrees where flipped (tap t read from 8 - t).
static inline void gather_taps(const void *w, int bf16, long cin, long r, long q0, long n, int flipped, float gt[9][16]) {
    for (long l = 0; l < 16; l++) {
        long base = (r * cin + q0 + l) * 9;
        for (int t = 0; t < 9; t++) {
            float v = 0;
            long tap = base + (flipped ? 8 - t : t);
            if (l < n) {
                if (bf16) {
                    unsigned bits = (unsigned)((const unsigned short *)w)[tap] << 16;
                    __builtin_memcpy(&v, &bits, 4);
                } else {
                    v = ((const float *)w)[tap];
                }
            }
            gt[t][l] = v;
        }
    }
}

// The filter transform of output channel r, input channels q0..<q0 + 16 (fewer at the end): each
// one's 9 taps gathered into gt[t][lane], then G g G^T on 16 lanes and 16 contiguous stores (one per xi).
TGT static inline __attribute__((always_inline)) void filter16(const void *w, int bf16, long cout, long cin,
                                                               long r, long q0, int flipped, void *u, int out_bf16) {
    const long plane = cout * cin;
    const __m512 half = _mm512_set1_ps(0.5f);
    long n = cin - q0 < 16 ? cin - q0 : 16;
    float gt[9][16] __attribute__((aligned(64)));
    gather_taps(w, bf16, cin, r, q0, n, flipped, gt);
    // G g G^T, G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]: first the rows of g, then the columns.
    __m512 a[4][3];
    for (int j = 0; j < 3; j++) {
        __m512 g0 = _mm512_load_ps(gt[j]), g1 = _mm512_load_ps(gt[3 + j]), g2 = _mm512_load_ps(gt[6 + j]);
        __m512 s02 = _mm512_add_ps(g0, g2);
        a[0][j] = g0;
        a[1][j] = _mm512_mul_ps(half, _mm512_add_ps(s02, g1));
        a[2][j] = _mm512_mul_ps(half, _mm512_sub_ps(s02, g1));
        a[3][j] = g2;
    }
    __mmask16 m = lanes(n);
    long d = r * cin + q0;
    for (int i = 0; i < 4; i++) {
        __m512 g0 = a[i][0], g1 = a[i][1], g2 = a[i][2], s02 = _mm512_add_ps(g0, g2);
        store_u(u, out_bf16, d + (4 * i + 0) * plane, m, g0);
        store_u(u, out_bf16, d + (4 * i + 1) * plane, m, _mm512_mul_ps(half, _mm512_add_ps(s02, g1)));
        store_u(u, out_bf16, d + (4 * i + 2) * plane, m, _mm512_mul_ps(half, _mm512_sub_ps(s02, g1)));
        store_u(u, out_bf16, d + (4 * i + 3) * plane, m, g2);
    }
}

TGT static void filter_avx512(const void *w, int bf16, long cout, long cin, long r0, long r1, int flipped, void *u, int out_bf16) {
    for (long r = r0; r < r1; r++)
        for (long q0 = 0; q0 < cin; q0 += 16) filter16(w, bf16, cout, cin, r, q0, flipped, u, out_bf16);
}

// MARK: F(4x4, 3x3)
//
// 4x4 output blocks from 6x6 input tiles (stride 4): 36 products per (output, input) channel pair
// for 16 outputs instead of 144, 4x fewer multiply-adds (F(2x2, 3x3): 2.25x), and less transformed
// data per output. The interpolation points 0, 1, -1, 1/2, -2 (and infinity) keep the transforms'
// coefficients small (simulated in f32 against Double, their max error is ~3x below Lavin's 0, +-1,
// +-2; docs/PERFORMANCE.md, "F(4x4, 3x3)"); still the sums round ~5x more than F(2x2, 3x3)'s, so
// only f32 forward products take it (see Conv.swift). Each transform applies a 1-D one to rows, then to columns:
//   G (6x3):   [1 0 0; 1/3 1/3 1/3; -1/3 1/3 -1/3; -16/15 -8/15 -4/15; 1/15 -2/15 4/15; 0 0 1]
//   B^T (6x6): [1 -3/2 -2 3/2 1 0; 0 -1 1/2 5/2 1 0; 0 1 -5/2 1/2 1 0; 0 -2 -1 2 1 0;
//               0 1/2 -1 -1/2 1 0; 0 1 -3/2 -2 3/2 1]
//   A^T (4x6): [1 1 1 1 1 0; 0 1 -1 1/2 -2 0; 0 1 1 1/4 4 0; 0 1 -1 1/8 -8 1]

TGT static inline __attribute__((always_inline)) void g6(__m512 g0, __m512 g1, __m512 g2, __m512 o[6]) {
    const __m512 third = _mm512_set1_ps(1.0f / 3), fifteenth = _mm512_set1_ps(1.0f / 15);
    __m512 s02 = _mm512_add_ps(g0, g2);
    o[0] = g0;
    o[1] = _mm512_mul_ps(third, _mm512_add_ps(s02, g1));
    o[2] = _mm512_mul_ps(third, _mm512_sub_ps(g1, s02));
    // -(16 g0 + 8 g1 + 4 g2) / 15 and (g0 - 2 g1 + 4 g2) / 15
    o[3] = _mm512_mul_ps(_mm512_set1_ps(-4.0f / 15),
                         _mm512_fmadd_ps(_mm512_set1_ps(4), g0, _mm512_fmadd_ps(_mm512_set1_ps(2), g1, g2)));
    o[4] = _mm512_mul_ps(fifteenth, _mm512_fmadd_ps(_mm512_set1_ps(-2), g1, _mm512_fmadd_ps(_mm512_set1_ps(4), g2, g0)));
    o[5] = g2;
}

TGT static inline __attribute__((always_inline)) void bt6(const __m512 d[6], __m512 t[6]) {
    const __m512 half = _mm512_set1_ps(0.5f), one5 = _mm512_set1_ps(1.5f), two = _mm512_set1_ps(2), two5 = _mm512_set1_ps(2.5f);
    __m512 d31 = _mm512_sub_ps(d[3], d[1]), d42 = _mm512_sub_ps(d[4], d[2]);
    t[0] = _mm512_fmadd_ps(one5, d31, _mm512_fnmadd_ps(two, d[2], _mm512_add_ps(d[0], d[4])));
    t[1] = _mm512_fmadd_ps(two5, d[3], _mm512_fmadd_ps(half, d[2], _mm512_sub_ps(d[4], d[1])));
    t[2] = _mm512_fmadd_ps(half, d[3], _mm512_fnmadd_ps(two5, d[2], _mm512_add_ps(d[4], d[1])));
    t[3] = _mm512_fmadd_ps(two, d31, d42);
    t[4] = _mm512_fnmadd_ps(half, d31, d42);
    t[5] = _mm512_fmadd_ps(one5, d42, _mm512_fnmadd_ps(two, d[3], _mm512_add_ps(d[1], d[5])));
}

TGT static inline __attribute__((always_inline)) void at4(const __m512 m[6], __m512 y[4]) {
    __m512 s12 = _mm512_add_ps(m[1], m[2]), d12 = _mm512_sub_ps(m[1], m[2]);
    y[0] = _mm512_add_ps(_mm512_add_ps(s12, m[0]), _mm512_add_ps(m[3], m[4]));
    y[1] = _mm512_fmadd_ps(_mm512_set1_ps(-2), m[4], _mm512_fmadd_ps(_mm512_set1_ps(0.5f), m[3], d12));
    y[2] = _mm512_fmadd_ps(_mm512_set1_ps(4), m[4], _mm512_fmadd_ps(_mm512_set1_ps(0.25f), m[3], s12));
    y[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(-8), m[4], _mm512_fmadd_ps(_mm512_set1_ps(0.125f), m[3], d12)), m[5]);
}

// Row iy of 16 tiles of side + 2 columns from column s on (0 outside the image): d[b] lane l =
// x[iy, s + side l + b], b < side + 2.
TGT static inline __attribute__((always_inline)) void tile_row(const float *xc, long h, long w, long iy, long s,
                                                               int side, __m512 *d) {
    if (iy < 0 || iy >= h) {
        for (int b = 0; b < side + 2; b++) d[b] = _mm512_setzero_ps();
        return;
    }
    const float *row = xc + iy * w;
    if (side == 2) {
        const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
        __m512 lo = load_row(row, s, w), hi = load_row(row, s + 16, w), ex = load_row(row, s + 32, w);
        __m512 lo2 = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(hi), _mm512_castps_si512(lo), 2));
        __m512 hi2 = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(ex), _mm512_castps_si512(hi), 2));
        d[0] = _mm512_permutex2var_ps(lo, even, hi);
        d[1] = _mm512_permutex2var_ps(lo, odd, hi);
        d[2] = _mm512_permutex2var_ps(lo2, even, hi2);
        d[3] = _mm512_permutex2var_ps(lo2, odd, hi2);
        return;
    }
    // side 4: lanes 0-7 from (r0, r1), 8-15 from (r2, r3), element 4 l + b of the pair; columns 4 and
    // 5 are columns 0 and 1 one tile on.
    const __m512i quarter = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
    __m512 r0 = load_row(row, s, w), r1 = load_row(row, s + 16, w), r2 = load_row(row, s + 32, w);
    __m512 r3 = load_row(row, s + 48, w), r4 = load_row(row, s + 64, w);
    for (int b = 0; b < 4; b++) {
        __m512i pick = _mm512_add_epi32(quarter, _mm512_set1_epi32(b));
        d[b] = _mm512_mask_blend_ps(0xFF00, _mm512_permutex2var_ps(r0, pick, r1), _mm512_permutex2var_ps(r2, pick, r3));
    }
    __m512i r4i = _mm512_castps_si512(r4);
    d[4] = _mm512_castsi512_ps(_mm512_alignr_epi32(r4i, _mm512_castps_si512(d[0]), 1));
    d[5] = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_alignr_epi32(r4i, r4i, 1), _mm512_castps_si512(d[1]), 1));
}

// The input transform of F(side x side, 3x3), side 2 or 4 (see dg_winograd_input).
TGT static inline __attribute__((always_inline)) void input_tiles(const float *x, long h, long w, long c0, long c1,
                                                                  long ty0, long ty1, float *v, long xiStride,
                                                                  long ldv, int side) {
    const long tw = (w + side - 1) / side;
    for (long c = c0; c < c1; c++) {
        const float *xc = x + c * h * w;
        for (long ty = ty0; ty < ty1; ty++)
            for (long tx0 = 0; tx0 < tw; tx0 += 16) {
                // d[a][b]: lane l holds x[side ty - 1 + a, side (tx0 + l) - 1 + b] of 16 tiles.
                __m512 d[6][6];
                for (int a = 0; a < side + 2; a++) tile_row(xc, h, w, side * ty - 1 + a, side * tx0 - 1, side, d[a]);
                __mmask16 m = lanes(tw - tx0);
                float *o = v + c * ldv + (ty - ty0) * tw + tx0;
                if (side == 4) {
                    __m512 t[6][6];   // B^T down the rows, column by column
                    for (int b = 0; b < 6; b++) {
                        __m512 col[6], r[6];
                        for (int a = 0; a < 6; a++) col[a] = d[a][b];
                        bt6(col, r);
                        for (int i = 0; i < 6; i++) t[i][b] = r[i];
                    }
                    for (int i = 0; i < 6; i++) {
                        __m512 r[6];
                        bt6(t[i], r);
                        for (int l = 0; l < 6; l++) _mm512_mask_storeu_ps(o + (6 * i + l) * xiStride, m, r[l]);
                    }
                    continue;
                }
                // B^T d B, B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]: the rows, then the columns.
                __m512 t[4][4];
                for (int b = 0; b < 4; b++) {
                    t[0][b] = _mm512_sub_ps(d[0][b], d[2][b]);
                    t[1][b] = _mm512_add_ps(d[1][b], d[2][b]);
                    t[2][b] = _mm512_sub_ps(d[2][b], d[1][b]);
                    t[3][b] = _mm512_sub_ps(d[1][b], d[3][b]);
                }
                for (int i = 0; i < 4; i++) {
                    _mm512_mask_storeu_ps(o + (4 * i + 0) * xiStride, m, _mm512_sub_ps(t[i][0], t[i][2]));
                    _mm512_mask_storeu_ps(o + (4 * i + 1) * xiStride, m, _mm512_add_ps(t[i][1], t[i][2]));
                    _mm512_mask_storeu_ps(o + (4 * i + 2) * xiStride, m, _mm512_sub_ps(t[i][2], t[i][1]));
                    _mm512_mask_storeu_ps(o + (4 * i + 3) * xiStride, m, _mm512_sub_ps(t[i][1], t[i][3]));
                }
            }
    }
}

TGT static void input_avx512(const float *x, long h, long w, long c0, long c1, long ty0, long ty1,
                             float *v, long xiStride, long ldv) {
    input_tiles(x, h, w, c0, c1, ty0, ty1, v, xiStride, ldv, 2);
}

TGT static void input4_avx512(const float *x, long h, long w, long c0, long c1, long ty0, long ty1,
                              float *v, long xiStride, long ldv) {
    input_tiles(x, h, w, c0, c1, ty0, ty1, v, xiStride, ldv, 4);
}

// The output transform of F(side x side, 3x3), side 2 or 4 (see dg_winograd_output).
TGT static inline __attribute__((always_inline)) void output_tiles(const float *mm, long xiStride, long ldm, long c0, long c1,
                                                                   long ty0, long ty1, long h, long w, const float *bias,
                                                                   float *y, int side) {
    const long tw = (w + side - 1) / side;
    const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    const __m512i quads0 = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11), quads1 = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
    for (long c = c0; c < c1; c++) {
        __m512 b = _mm512_set1_ps(bias ? bias[c] : 0.0f);
        float *yc = y + c * h * w;
        for (long ty = ty0; ty < ty1; ty++)
            for (long tx0 = 0; tx0 < tw; tx0 += 16) {
                __mmask16 m = lanes(tw - tx0);
                const float *src = mm + c * ldm + (ty - ty0) * tw + tx0;
                if (side == 4) {
                    __m512 s[4][6];   // A^T down the rows, column by column
                    for (int j = 0; j < 6; j++) {
                        __m512 col[6], o[4];
                        for (int r = 0; r < 6; r++) col[r] = _mm512_maskz_loadu_ps(m, src + (6 * r + j) * xiStride);
                        at4(col, o);
                        for (int i = 0; i < 4; i++) s[i][j] = o[i];
                    }
                    for (int i = 0; i < 4; i++) {
                        long oy = 4 * ty + i;
                        if (oy >= h) break;
                        __m512 o[4];
                        at4(s[i], o);
                        for (int j = 0; j < 4; j++) o[j] = _mm512_add_ps(o[j], b);
                        // Lane l of o[j] is output column 4 (tx0 + l) + j: interleave the four.
                        __m512d u0 = _mm512_castps_pd(_mm512_permutex2var_ps(o[0], first, o[1]));
                        __m512d u1 = _mm512_castps_pd(_mm512_permutex2var_ps(o[0], second, o[1]));
                        __m512d v0 = _mm512_castps_pd(_mm512_permutex2var_ps(o[2], first, o[3]));
                        __m512d v1 = _mm512_castps_pd(_mm512_permutex2var_ps(o[2], second, o[3]));
                        float *row = yc + oy * w + 4 * tx0;
                        long left = w - 4 * tx0;
                        _mm512_mask_storeu_ps(row, lanes(left), _mm512_castpd_ps(_mm512_permutex2var_pd(u0, quads0, v0)));
                        _mm512_mask_storeu_ps(row + 16, lanes(left - 16), _mm512_castpd_ps(_mm512_permutex2var_pd(u0, quads1, v0)));
                        _mm512_mask_storeu_ps(row + 32, lanes(left - 32), _mm512_castpd_ps(_mm512_permutex2var_pd(u1, quads0, v1)));
                        _mm512_mask_storeu_ps(row + 48, lanes(left - 48), _mm512_castpd_ps(_mm512_permutex2var_pd(u1, quads1, v1)));
                    }
                    continue;
                }
                // A^T M A, A^T = [1 1 1 0; 0 1 -1 -1]: the rows, then the columns.
                __m512 s[2][4];
                for (int j = 0; j < 4; j++) {
                    __m512 m0 = _mm512_maskz_loadu_ps(m, src + (0 + j) * xiStride);
                    __m512 m1 = _mm512_maskz_loadu_ps(m, src + (4 + j) * xiStride);
                    __m512 m2 = _mm512_maskz_loadu_ps(m, src + (8 + j) * xiStride);
                    __m512 m3 = _mm512_maskz_loadu_ps(m, src + (12 + j) * xiStride);
                    s[0][j] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
                    s[1][j] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
                }
                for (int i = 0; i < 2; i++) {
                    long oy = 2 * ty + i;
                    if (oy >= h) break;
                    __m512 y0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s[i][0], s[i][1]), s[i][2]), b);
                    __m512 y1 = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(s[i][1], s[i][2]), s[i][3]), b);
                    float *row = yc + oy * w + 2 * tx0;
                    long left = w - 2 * tx0;
                    _mm512_mask_storeu_ps(row, lanes(left), _mm512_permutex2var_ps(y0, first, y1));
                    _mm512_mask_storeu_ps(row + 16, lanes(left - 16), _mm512_permutex2var_ps(y0, second, y1));
                }
            }
    }
}

TGT static void output_avx512(const float *mm, long xiStride, long ldm, long c0, long c1, long ty0, long ty1,
                              long h, long w, const float *bias, float *y) {
    output_tiles(mm, xiStride, ldm, c0, c1, ty0, ty1, h, w, bias, y, 2);
}

TGT static void output4_avx512(const float *mm, long xiStride, long ldm, long c0, long c1, long ty0, long ty1,
                               long h, long w, const float *bias, float *y) {
    output_tiles(mm, xiStride, ldm, c0, c1, ty0, ty1, h, w, bias, y, 4);
}

TGT static void filter4_avx512(const void *w, int bf16, long cout, long cin, long r0, long r1, int flipped, float *u) {
    const long plane = cout * cin;
    float gt[9][16] __attribute__((aligned(64)));
    for (long r = r0; r < r1; r++)
        for (long q0 = 0; q0 < cin; q0 += 16) {
            long n = cin - q0 < 16 ? cin - q0 : 16;
            gather_taps(w, bf16, cin, r, q0, n, flipped, gt);
            __m512 a[6][3];   // G applied down the kernel's rows, column by column
            for (int j = 0; j < 3; j++) {
                __m512 o[6];
                g6(_mm512_load_ps(gt[j]), _mm512_load_ps(gt[3 + j]), _mm512_load_ps(gt[6 + j]), o);
                for (int i = 0; i < 6; i++) a[i][j] = o[i];
            }
            __mmask16 m = lanes(n);
            float *d = u + r * cin + q0;
            for (int i = 0; i < 6; i++) {
                __m512 o[6];
                g6(a[i][0], a[i][1], a[i][2], o);
                for (int l = 0; l < 6; l++) _mm512_mask_storeu_ps(d + (6 * i + l) * plane, m, o[l]);
            }
        }
}

void dg_winograd_filter(const void *w, int bf16, long cout, long cin, long r0, long r1, int flipped, void *u, int out_bf16, int side) {
    DG_REQUIRE_AVX512("dg_winograd_filter");
    if (side == 4) filter4_avx512(w, bf16, cout, cin, r0, r1, flipped, (float *)u);
    else filter_avx512(w, bf16, cout, cin, r0, r1, flipped, u, out_bf16);
}

void dg_winograd_input(const float *x, long h, long w, long c0, long c1, long ty0, long ty1,
                       float *v, long xiStride, long ldv, int side) {
    DG_REQUIRE_AVX512("dg_winograd_input");
    if (side == 4) input4_avx512(x, h, w, c0, c1, ty0, ty1, v, xiStride, ldv);
    else input_avx512(x, h, w, c0, c1, ty0, ty1, v, xiStride, ldv);
}

void dg_winograd_output(const float *m, long xiStride, long ldm, long c0, long c1, long ty0, long ty1,
                        long h, long w, const float *bias, float *y, int side) {
    DG_REQUIRE_AVX512("dg_winograd_output");
    if (side == 4) output4_avx512(m, xiStride, ldm, c0, c1, ty0, ty1, h, w, bias, y);
    else output_avx512(m, xiStride, ldm, c0, c1, ty0, ty1, h, w, bias, y);
}

#else

void dg_winograd_filter(const void *w, int bf16, long cout, long cin, long r0, long r1, int flipped, void *u, int out_bf16, int side) {
    (void)w; (void)bf16; (void)cout; (void)cin; (void)r0; (void)r1; (void)flipped; (void)u; (void)out_bf16; (void)side;
    dg_refuse_avx512(__func__);
}
void dg_winograd_input(const float *x, long h, long w, long c0, long c1, long ty0, long ty1,
                       float *v, long xiStride, long ldv, int side) {
    (void)x; (void)h; (void)w; (void)c0; (void)c1; (void)ty0; (void)ty1; (void)v; (void)xiStride; (void)ldv; (void)side;
    dg_refuse_avx512(__func__);
}
void dg_winograd_output(const float *m, long xiStride, long ldm, long c0, long c1, long ty0, long ty1,
                        long h, long w, const float *bias, float *y, int side) {
    (void)m; (void)xiStride; (void)ldm; (void)c0; (void)c1; (void)ty0; (void)ty1; (void)h; (void)w; (void)bias; (void)y; (void)side;
    dg_refuse_avx512(__func__);
}

#endif
