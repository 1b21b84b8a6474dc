// Element-wise and reduction kernels with AVX-512 code; see include/dg_kernels.h. Each computes
// exactly what its portable Swift counterpart in Sources/DGTensor/Kernels computes (same operations
// in the same order, no fused multiply-adds), so both paths give the same bits.
#include "dg_kernels.h"
#include <stdlib.h>

#if defined(__x86_64__)
#include "avx512.h"

// Kernels.exp: Cody-Waite reduction and the Cephes polynomial, in Swift's order of operations.
TGT static inline __m512 exp_exact(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.33654f);
    __m512 xc = _mm512_min_ps(_mm512_max_ps(x, lo), _mm512_set1_ps(88.0f));
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    __m512 n = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)), magic), magic);
    __m512 r = _mm512_add_ps(_mm512_sub_ps(xc, _mm512_mul_ps(n, _mm512_set1_ps(0.693359375f))),
                             _mm512_mul_ps(n, _mm512_set1_ps(2.12194440e-4f)));
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(p, _mm512_mul_ps(r, r)), r), _mm512_set1_ps(1.0f));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    __m512 y = _mm512_mul_ps(p, _mm512_castsi512_ps(e));
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, lo, _CMP_NLT_UQ), y);   // x < -87.33654 -> 0
}

TGT static inline __m512 sigmoid_exact(__m512 v) {   // 1 / (1 + exp(-v))
    const __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(one, _mm512_add_ps(one, exp_exact(_mm512_sub_ps(_mm512_setzero_ps(), v))));
}

// Kernels.erfcParts: (t, P(t)) with t = 1 / (1 + z/2).
TGT static inline __m512 erfc_poly(__m512 z, __m512 *t) {
    const __m512 one = _mm512_set1_ps(1.0f);
    *t = _mm512_div_ps(one, _mm512_add_ps(one, _mm512_mul_ps(_mm512_set1_ps(0.5f), z)));
    static const float c[10] = { 0.17087277f, -0.82215223f, 1.48851587f, -1.13520398f, 0.27886807f,
                                 -0.18628806f, 0.09678418f, 0.37409196f, 1.00002368f, -1.26551223f };
    __m512 p = _mm512_set1_ps(c[0]);
    for (int i = 1; i < 10; i++) p = _mm512_add_ps(_mm512_mul_ps(p, *t), _mm512_set1_ps(c[i]));
    return p;
}

// Kernels.normalCDF.
TGT static inline __m512 normal_cdf(__m512 x) {
    const __m512 half = _mm512_set1_ps(0.5f);
    __m512 z = _mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(0.7071067811865476f));
    __m512 t, p = erfc_poly(z, &t);
    __m512 h = _mm512_mul_ps(_mm512_mul_ps(half, t), exp_exact(_mm512_sub_ps(p, _mm512_mul_ps(_mm512_mul_ps(half, x), x))));
    __mmask16 pos = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
    return _mm512_mask_blend_ps(pos, h, _mm512_sub_ps(_mm512_set1_ps(1.0f), h));
}

// MARK: reductions (Kernels.sum, sumSquaredDeviations, dot)

TGT static inline double lanes_sum(__m512 v) {
    float l[16];
    _mm512_storeu_ps(l, v);
    double t = 0;
    for (int i = 0; i < 16; i++) t += l[i];
    return t;
}

TGT static double sum_avx512(const float *p, long n) {
    double total = 0;
    long i = 0, vn = n & ~15L;
    while (i < vn) {
        long end = vn < i + 512 ? vn : i + 512;
        __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
        while (i + 32 <= end) {
            a = _mm512_add_ps(a, _mm512_loadu_ps(p + i));
            b = _mm512_add_ps(b, _mm512_loadu_ps(p + i + 16));
            i += 32;
        }
        if (i < end) { a = _mm512_add_ps(a, _mm512_loadu_ps(p + i)); i += 16; }
        total += lanes_sum(_mm512_add_ps(a, b));
    }
    for (; i < n; i++) total += (double)p[i];
    return total;
}

TGT static double sum_sq_dev_avx512(const float *p, long n, float c) {
    double total = 0;
    long i = 0, vn = n & ~15L;
    __m512 cv = _mm512_set1_ps(c);
    while (i < vn) {
        long end = vn < i + 512 ? vn : i + 512;
        __m512 a = _mm512_setzero_ps();
        for (; i < end; i += 16) {
            __m512 d = _mm512_sub_ps(_mm512_loadu_ps(p + i), cv);
            a = _mm512_add_ps(a, _mm512_mul_ps(d, d));
        }
        total += lanes_sum(a);
    }
    for (; i < n; i++) { double d = (double)p[i] - (double)c; total += d * d; }
    return total;
}

TGT static double dot_avx512(const float *p, const float *q, long n) {
    double total = 0;
    long i = 0, vn = n & ~15L;
    while (i < vn) {
        long end = vn < i + 512 ? vn : i + 512;
        __m512 a = _mm512_setzero_ps();
        for (; i < end; i += 16) a = _mm512_add_ps(a, _mm512_mul_ps(_mm512_loadu_ps(p + i), _mm512_loadu_ps(q + i)));
        total += lanes_sum(a);
    }
    for (; i < n; i++) total += (double)p[i] * (double)q[i];
    return total;
}

// MARK: element-wise

TGT static void affine_avx512(const float *x, float *y, long n, float a, float b, int silu) {
    __m512 av = _mm512_set1_ps(a), bv = _mm512_set1_ps(b);
    for (long i = 0; i < n; i += 16) {
        __mmask16 m = lanes(n - i);
        __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), av), bv);
        if (silu) v = _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), exp_exact(_mm512_sub_ps(_mm512_setzero_ps(), v))));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

// g sg (1 + v (1 - sg)), sg = sigmoid(v): the SiLU's backward at v.
TGT static inline __m512 silu_grad(__m512 g, __m512 v) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 sg = sigmoid_exact(v);
    return _mm512_mul_ps(_mm512_mul_ps(g, sg), _mm512_add_ps(one, _mm512_mul_ps(v, _mm512_sub_ps(one, sg))));
}

TGT static void affine_silu_backward_avx512(const float *x, const float *g, float *out, long n, float a, float b) {
    __m512 av = _mm512_set1_ps(a), bv = _mm512_set1_ps(b);
    for (long i = 0; i < n; i += 16) {
        __mmask16 m = lanes(n - i);
        __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), av), bv);
        _mm512_mask_storeu_ps(out + i, m, silu_grad(_mm512_maskz_loadu_ps(m, g + i), v));
    }
}

TGT static void norm_backward_row_avx512(const float *g, const float *x, float *d, long n, float a, float b, float c, float mean) {
    __m512 av = _mm512_set1_ps(a), bv = _mm512_set1_ps(b), cv = _mm512_set1_ps(c), mv = _mm512_set1_ps(mean);
    for (long i = 0; i < n; i += 16) {
        __mmask16 m = lanes(n - i);
        __m512 r = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(av, _mm512_maskz_loadu_ps(m, g + i)),
                                               _mm512_mul_ps(bv, _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), mv))), cv);
        _mm512_mask_storeu_ps(d + i, m, r);
    }
}

TGT static void silu_avx512(const float *x, float *y, long n) {
    for (long i = 0; i < n; i += 16) {
        __mmask16 m = lanes(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        v = _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), exp_exact(_mm512_sub_ps(_mm512_setzero_ps(), v))));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

TGT static void silu_backward_avx512(const float *g, const float *x, float *dx, long n) {
    for (long i = 0; i < n; i += 16) {
        __mmask16 m = lanes(n - i);
        _mm512_mask_storeu_ps(dx + i, m, silu_grad(_mm512_maskz_loadu_ps(m, g + i), _mm512_maskz_loadu_ps(m, x + i)));
    }
}

TGT static void geglu_avx512(const float *h, float *y, long rows, long d) {
    for (long r = 0; r < rows; r++) {
        const float *a = h + r * 2 * d, *g = a + d;
        float *o = y + r * d;
        for (long i = 0; i < d; i += 16) {
            __mmask16 m = lanes(d - i);
            __m512 v = _mm512_maskz_loadu_ps(m, g + i);
            __m512 gelu = _mm512_mul_ps(v, normal_cdf(v));
            _mm512_mask_storeu_ps(o + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, a + i), gelu));
        }
    }
}

TGT static void geglu_backward_avx512(const float *gy, const float *h, float *dh, long rows, long d) {
    const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
    for (long r = 0; r < rows; r++) {
        const float *a = h + r * 2 * d, *g = a + d, *go = gy + r * d;
        float *da = dh + r * 2 * d, *dg = da + d;
        for (long i = 0; i < d; i += 16) {
            __mmask16 m = lanes(d - i);
            __m512 v = _mm512_maskz_loadu_ps(m, g + i), gov = _mm512_maskz_loadu_ps(m, go + i);
            __m512 z = _mm512_mul_ps(_mm512_abs_ps(v), _mm512_set1_ps(0.7071067811865476f));
            __m512 t, p = erfc_poly(z, &t);
            __m512 ez = exp_exact(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(-0.5f), v), v));
            __m512 h2 = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(half, t), ez), exp_exact(p));
            __mmask16 pos = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GE_OQ);
            __m512 cdf = _mm512_mask_blend_ps(pos, h2, _mm512_sub_ps(one, h2));
            _mm512_mask_storeu_ps(da + i, m, _mm512_mul_ps(gov, _mm512_mul_ps(v, normal_cdf(v))));
            __m512 deriv = _mm512_add_ps(cdf, _mm512_mul_ps(_mm512_mul_ps(v, _mm512_set1_ps(0.3989422804014327f)), ez));
            _mm512_mask_storeu_ps(dg + i, m, _mm512_mul_ps(_mm512_mul_ps(gov, _mm512_maskz_loadu_ps(m, a + i)), deriv));
        }
    }
}

// The exported entry points: plain (baseline x86-64) code that checks the switch, then the AVX-512 code.
double dg_sum(const float *p, long n) { DG_REQUIRE_AVX512("dg_sum"); return sum_avx512(p, n); }
double dg_sum_sq_dev(const float *p, long n, float c) { DG_REQUIRE_AVX512("dg_sum_sq_dev"); return sum_sq_dev_avx512(p, n, c); }
double dg_dot(const float *p, const float *q, long n) { DG_REQUIRE_AVX512("dg_dot"); return dot_avx512(p, q, n); }
void dg_affine(const float *x, float *y, long n, float a, float b, int silu) { DG_REQUIRE_AVX512("dg_affine"); affine_avx512(x, y, n, a, b, silu); }
void dg_affine_silu_backward(const float *x, const float *g, float *out, long n, float a, float b) { DG_REQUIRE_AVX512("dg_affine_silu_backward"); affine_silu_backward_avx512(x, g, out, n, a, b); }
void dg_norm_backward_row(const float *g, const float *x, float *d, long n, float a, float b, float c, float mean) { DG_REQUIRE_AVX512("dg_norm_backward_row"); norm_backward_row_avx512(g, x, d, n, a, b, c, mean); }
void dg_silu(const float *x, float *y, long n) { DG_REQUIRE_AVX512("dg_silu"); silu_avx512(x, y, n); }
void dg_silu_backward(const float *g, const float *x, float *dx, long n) { DG_REQUIRE_AVX512("dg_silu_backward"); silu_backward_avx512(g, x, dx, n); }
void dg_geglu(const float *h, float *y, long rows, long d) { DG_REQUIRE_AVX512("dg_geglu"); geglu_avx512(h, y, rows, d); }
void dg_geglu_backward(const float *gy, const float *h, float *dh, long rows, long d) { DG_REQUIRE_AVX512("dg_geglu_backward"); geglu_backward_avx512(gy, h, dh, rows, d); }

#else

double dg_sum(const float *p, long n) { (void)p; (void)n; dg_refuse_avx512(__func__); }
double dg_sum_sq_dev(const float *p, long n, float c) { (void)p; (void)n; (void)c; dg_refuse_avx512(__func__); }
double dg_dot(const float *p, const float *q, long n) { (void)p; (void)q; (void)n; dg_refuse_avx512(__func__); }
void dg_affine(const float *x, float *y, long n, float a, float b, int silu) { (void)x; (void)y; (void)n; (void)a; (void)b; (void)silu; dg_refuse_avx512(__func__); }
void dg_affine_silu_backward(const float *x, const float *g, float *out, long n, float a, float b) { (void)x; (void)g; (void)out; (void)n; (void)a; (void)b; dg_refuse_avx512(__func__); }
void dg_norm_backward_row(const float *g, const float *x, float *d, long n, float a, float b, float c, float mean) { (void)g; (void)x; (void)d; (void)n; (void)a; (void)b; (void)c; (void)mean; dg_refuse_avx512(__func__); }
void dg_silu(const float *x, float *y, long n) { (void)x; (void)y; (void)n; dg_refuse_avx512(__func__); }
void dg_silu_backward(const float *g, const float *x, float *dx, long n) { (void)g; (void)x; (void)dx; (void)n; dg_refuse_avx512(__func__); }
void dg_geglu(const float *h, float *y, long rows, long d) { (void)h; (void)y; (void)rows; (void)d; dg_refuse_avx512(__func__); }
void dg_geglu_backward(const float *gy, const float *h, float *dh, long rows, long d) { (void)gy; (void)h; (void)dh; (void)rows; (void)d; dg_refuse_avx512(__func__); }

#endif
