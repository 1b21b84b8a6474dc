// The weight gradient of a 3x3, stride-1, padding-1 convolution, read straight from the image and
// the output gradient; see include/dg_kernels.h.
//
// As a product, dW [Cout, Cin 9] = sum over samples of gy [Cout, HW] im2col(x)^T [HW, Cin 9] has a
// long k (every pixel) and a small m and n: packing the transposed im2col costs as much as the
// product when Cout is small (each packed value serves Cout rows), which left the weight gradient of
// a 16-channel convolution at 2.6x its forward's time. Here a tile of 3 output channels x the 9 taps
// of one input channel keeps 27 sums in registers over whole rows: per 16 pixels it loads 3 rows of
// gy and the 9 shifted rows of x (masked at the image's edges) for 27 fused multiply-adds.
#include "dg_kernels.h"

#if defined(__x86_64__)
#include "avx512.h"

// Rows oy0..<oy1 of one sample: dw[(o0 + i) * cin * 9 + c * 9 + tap] += the tile's sums, i < MR.
// g: the sample's gy [cout, h, w]; xc: the sample's channel c [h, w].
TGT static inline __attribute__((always_inline)) void tile(const int MR, long h, long w, long oy0, long oy1,
                                                           const float *g, long o0, const float *xc, float *dw, long ldw) {
    __m512 acc[3][9];
    for (int i = 0; i < MR; i++)
        for (int t = 0; t < 9; t++) acc[i][t] = _mm512_setzero_ps();
    const long plane = h * w;
    for (long oy = oy0; oy < oy1; oy++) {
        const float *grow = g + o0 * plane + oy * w;
        for (long ox = 0; ox < w; ox += 16) {
            __mmask16 m = lanes(w - ox);
            // Tap kj reads x at column ox + kj - 1: lane 0 falls off the left edge for kj = 0, the last
            // column's lane off the right edge for kj = 2.
            __mmask16 mk[3] = { ox == 0 ? (__mmask16)(m & 0xFFFE) : m, m, lanes(w - ox - 1) };
            __m512 gv[3];
            for (int i = 0; i < MR; i++) gv[i] = _mm512_maskz_loadu_ps(m, grow + i * plane + ox);
            for (int ki = 0; ki < 3; ki++) {
                long iy = oy + ki - 1;
                if (iy < 0 || iy >= h) continue;
                const float *xr = xc + iy * w + ox - 1;
                for (int kj = 0; kj < 3; kj++) {
                    __m512 xv = _mm512_maskz_loadu_ps(mk[kj], xr + kj);
                    for (int i = 0; i < MR; i++) acc[i][ki * 3 + kj] = _mm512_fmadd_ps(gv[i], xv, acc[i][ki * 3 + kj]);
                }
            }
        }
    }
    for (int i = 0; i < MR; i++)
        for (int t = 0; t < 9; t++) dw[i * ldw + t] += _mm512_reduce_add_ps(acc[i][t]);
}

TGT static void weight_gradient_avx512(long n, long cin, long cout, long h, long w, const float *x, const float *gy,
                                       float *dw, long tile0, long tile1) {
    const long plane = h * w, ldw = cin * 9;
    // Bands of rows small enough that the band's gy and x rows (every channel) stay in L2 while
    // the tiles go over them; fixed by the shape, so the sums' order does not depend on the threads.
    long band = (long)(128 * 1024) / ((cin + cout) * w);
    if (band < 1) band = 1;
    for (long s = 0; s < n; s++) {
        const float *xs = x + s * cin * plane, *gs = gy + s * cout * plane;
        for (long oy0 = 0; oy0 < h; oy0 += band) {
            long oy1 = oy0 + band < h ? oy0 + band : h;
            for (long t = tile0; t < tile1; t++) {
                long o0 = (t / cin) * 3, c = t % cin, mr = cout - o0 < 3 ? cout - o0 : 3;
                float *d = dw + o0 * ldw + c * 9;
                const float *xc = xs + c * plane;
                if (mr == 3) tile(3, h, w, oy0, oy1, gs, o0, xc, d, ldw);
                else if (mr == 2) tile(2, h, w, oy0, oy1, gs, o0, xc, d, ldw);
                else tile(1, h, w, oy0, oy1, gs, o0, xc, d, ldw);
            }
        }
    }
}

void dg_conv3x3_weight_gradient(long n, long cin, long cout, long h, long w, const float *x, const float *gy,
                                float *dw, long tile0, long tile1) {
    DG_REQUIRE_AVX512("dg_conv3x3_weight_gradient");
    weight_gradient_avx512(n, cin, cout, h, w, x, gy, dw, tile0, tile1);
}

#else

void dg_conv3x3_weight_gradient(long n, long cin, long cout, long h, long w, const float *x, const float *gy,
                                float *dw, long tile0, long tile1) {
    (void)n; (void)cin; (void)cout; (void)h; (void)w; (void)x; (void)gy; (void)dw; (void)tile0; (void)tile1;
    dg_refuse_avx512(__func__);
}

#endif
