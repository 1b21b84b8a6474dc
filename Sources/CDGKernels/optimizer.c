// Blockwise 8-bit AdamW: see include/dg_kernels.h. The AVX-512 path and the portable one perform
// the same IEEE operations in the same order (no fused multiply-adds), so they give the same bits
// and a run resumes exactly on either.
#include "dg_kernels.h"
#include <math.h>
#include <stdint.h>
#include <string.h>

enum { BLOCK = DG_ADAM8_BLOCK };

// The nearest code to x in [-1, 1]: the lookup gives the last code at or below the lower end of x's
// 2^-8-wide bucket, and no two codes are that close, so the code at or below x is that one or the
// next; then the nearer of it and the one above (ties to the lower, as bitsandbytes' bucketize
// against the midpoints). code[256] is +inf, so index 255 needs no test.
unsigned char dg_nearest_code(float x, const float *code, const unsigned char *lut) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    int c = lut[bits >> 15];
    if (code[c + 1] <= x) c++;
    if (code[c + 1] - x < x - code[c]) c++;
    return (unsigned char)c;
}

static inline float clamp1(float x) { return x < -1.0f ? -1.0f : (x > 1.0f ? 1.0f : x); }

static void block_portable(long j0, long len, float *p, const float *g, unsigned char *q1, unsigned char *q2,
                           float *absmax1, float *absmax2, long b, const float *code1, const float *code2,
                           const unsigned char *lut1, const unsigned char *lut2, float beta1, float omb1,
                           float beta2, float omb2, float eps, float step_size, float bias2_sqrt, float decay) {
    float m[BLOCK], v[BLOCK];
    float s1 = absmax1[b], s2 = absmax2[b], max1 = 0.0f, max2 = 0.0f;
    for (long j = 0; j < len; j++) {
        float gj = g[j0 + j];
        // bitsandbytes' order: m b1 + (1 - b1) g, v b2 + (1 - b2) g², decay, then the step.
        float mj = code1[q1[j0 + j]] * s1 * beta1 + omb1 * gj;
        float vj = code2[q2[j0 + j]] * s2 * beta2 + omb2 * gj * gj;
        float denom = sqrtf(vj) / bias2_sqrt + eps;
        p[j0 + j] = p[j0 + j] * decay + step_size * mj / denom;
        m[j] = mj;
        v[j] = vj;
        max1 = fmaxf(max1, fabsf(mj));
        max2 = fmaxf(max2, fabsf(vj));
    }
    absmax1[b] = max1;
    absmax2[b] = max2;
    // A block of zeros has maxima 0: its codes become those of 0.
    float r1 = max1 > 0.0f ? 1.0f / max1 : 0.0f, r2 = max2 > 0.0f ? 1.0f / max2 : 0.0f;
    for (long j = 0; j < len; j++) {
        q1[j0 + j] = dg_nearest_code(clamp1(m[j] * r1), code1, lut1);
        q2[j0 + j] = dg_nearest_code(clamp1(v[j] * r2), code2, lut2);
    }
}

#if defined(__x86_64__)
#include "avx512.h"

TGT static inline __m512i nearest_codes(__m512 x, const float *code, const unsigned char *lut) {
    __m512i idx = _mm512_srli_epi32(_mm512_castps_si512(x), 15);
    // Four bytes from each lane's index (the table has three bytes of padding), the first kept.
    __m512i c = _mm512_and_si512(_mm512_i32gather_epi32(idx, (const void *)lut, 1), _mm512_set1_epi32(0xFF));
    const __m512i one = _mm512_set1_epi32(1);
    __m512i up = _mm512_add_epi32(c, one);
    __m512 hi = _mm512_i32gather_ps(up, code, 4);
    __mmask16 at_or_below = _mm512_cmp_ps_mask(hi, x, _CMP_LE_OQ);
    c = _mm512_mask_mov_epi32(c, at_or_below, up);
    __m512 lo = _mm512_i32gather_ps(c, code, 4);
    up = _mm512_add_epi32(c, one);
    hi = _mm512_i32gather_ps(up, code, 4);
    __mmask16 nearer = _mm512_cmp_ps_mask(_mm512_sub_ps(hi, x), _mm512_sub_ps(x, lo), _CMP_LT_OQ);
    return _mm512_mask_mov_epi32(c, nearer, up);
}

TGT static void block_avx512(long j0, long len, float *p, const float *g, unsigned char *q1, unsigned char *q2,
                             float *absmax1, float *absmax2, long b, const float *code1, const float *code2,
                             const unsigned char *lut1, const unsigned char *lut2, float beta1, float omb1,
                             float beta2, float omb2, float eps, float step_size, float bias2_sqrt, float decay) {
    float m[BLOCK], v[BLOCK];
    const __m512 s1 = _mm512_set1_ps(absmax1[b]), s2 = _mm512_set1_ps(absmax2[b]);
    const __m512 vb1 = _mm512_set1_ps(beta1), vomb1 = _mm512_set1_ps(omb1), vb2 = _mm512_set1_ps(beta2),
                 vomb2 = _mm512_set1_ps(omb2), veps = _mm512_set1_ps(eps), vstep = _mm512_set1_ps(step_size),
                 vbias2 = _mm512_set1_ps(bias2_sqrt), vdecay = _mm512_set1_ps(decay);
    __m512 max1 = _mm512_setzero_ps(), max2 = _mm512_setzero_ps();
    for (long j = 0; j < len; j += 16) {
        __mmask16 k = lanes(len - j);
        __m512 gj = _mm512_maskz_loadu_ps(k, g + j0 + j);
        __m512 c1 = _mm512_i32gather_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, q1 + j0 + j)), code1, 4);
        __m512 c2 = _mm512_i32gather_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, q2 + j0 + j)), code2, 4);
        __m512 mj = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(c1, s1), vb1), _mm512_mul_ps(vomb1, gj));
        __m512 vj = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(c2, s2), vb2), _mm512_mul_ps(_mm512_mul_ps(vomb2, gj), gj));
        __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vj), vbias2), veps);
        __m512 pj = _mm512_maskz_loadu_ps(k, p + j0 + j);
        pj = _mm512_add_ps(_mm512_mul_ps(pj, vdecay), _mm512_div_ps(_mm512_mul_ps(vstep, mj), denom));
        _mm512_mask_storeu_ps(p + j0 + j, k, pj);
        _mm512_mask_storeu_ps(m + j, k, mj);
        _mm512_mask_storeu_ps(v + j, k, vj);
        max1 = _mm512_mask_max_ps(max1, k, max1, _mm512_abs_ps(mj));
        max2 = _mm512_mask_max_ps(max2, k, max2, _mm512_abs_ps(vj));
    }
    float mx1 = _mm512_reduce_max_ps(max1), mx2 = _mm512_reduce_max_ps(max2);
    absmax1[b] = mx1;
    absmax2[b] = mx2;
    const __m512 r1 = _mm512_set1_ps(mx1 > 0.0f ? 1.0f / mx1 : 0.0f), r2 = _mm512_set1_ps(mx2 > 0.0f ? 1.0f / mx2 : 0.0f);
    const __m512 lo = _mm512_set1_ps(-1.0f), hi = _mm512_set1_ps(1.0f);
    for (long j = 0; j < len; j += 16) {
        __mmask16 k = lanes(len - j);
        __m512 x1 = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, m + j), r1), lo), hi);
        __m512 x2 = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, v + j), r2), lo), hi);
        _mm512_mask_cvtepi32_storeu_epi8(q1 + j0 + j, k, nearest_codes(x1, code1, lut1));
        _mm512_mask_cvtepi32_storeu_epi8(q2 + j0 + j, k, nearest_codes(x2, code2, lut2));
    }
}
#endif

void dg_adamw_8bit(long block0, long block1, long n, float *p, const float *g,
                   unsigned char *q1, unsigned char *q2, float *absmax1, float *absmax2,
                   const float *code1, const float *code2, const unsigned char *lut1, const unsigned char *lut2,
                   float beta1, float one_minus_beta1, float beta2, float one_minus_beta2, float eps,
                   float step_size, float bias2_sqrt, float decay) {
#if defined(__x86_64__)
    int vector = dg_has_avx512();
#endif
    for (long b = block0; b < block1; b++) {
        long j0 = b * BLOCK, len = n - j0 < BLOCK ? n - j0 : BLOCK;
#if defined(__x86_64__)
        if (vector) {
            block_avx512(j0, len, p, g, q1, q2, absmax1, absmax2, b, code1, code2, lut1, lut2, beta1, one_minus_beta1,
                         beta2, one_minus_beta2, eps, step_size, bias2_sqrt, decay);
            continue;
        }
#endif
        block_portable(j0, len, p, g, q1, q2, absmax1, absmax2, b, code1, code2, lut1, lut2, beta1, one_minus_beta1,
                       beta2, one_minus_beta2, eps, step_size, bias2_sqrt, decay);
    }
}
