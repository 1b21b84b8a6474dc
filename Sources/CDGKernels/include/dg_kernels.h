#ifndef DG_KERNELS_H
#define DG_KERNELS_H

/// Single-precision matrix-multiply kernels with AVX-512 code chosen at run time.
///
/// Swift compiles for baseline x86-64 (SSE2) and has no per-function target attribute, so the vector
/// code that needs AVX-512 lives here, in functions marked `__attribute__((target("avx512f,...")))`,
/// and runs only after `dg_has_avx512()` said that the CPU and the OS support it. The binary still
/// runs on any x86-64 machine (callers then use OpenBLAS), and elsewhere this file compiles to stubs.
///
/// C = alpha A B + beta C, C row-major. A is read in place through strides, never copied:
/// A(i, p) = a[i * ars + p * aks], with aks == 1 (row-major) or ars == 1 (column-major, e.g. a
/// transposed matrix). B comes from a source (a strided matrix, or the implicit im2col matrix of a
/// convolution) and is packed block by block into a per-thread buffer that stays in cache.
///
/// Every element of C is computed in the same order whatever part of C a call computes: k in
/// blocks of 256 from 0, each block's products summed in order, the blocks added to C in order.
/// So callers may split C across threads in any way and get bit-identical results.

#ifdef __cplusplus
extern "C" {
#endif

enum { DG_B_MATRIX = 0, DG_B_IM2COL = 1, DG_B_IM2COL_T = 2, DG_B_PACKED = 3 };

/// Where B comes from.
/// - DG_B_MATRIX: B(p, j) = b[p * rs + j * cs].
/// - DG_B_IM2COL: the im2col matrix of one sample x = b [cin, h, w] of a convolution:
///   B(r, j) with r = (c kh + ki) kw + kj, j = oy wout + ox, is x[c, oy s - pad + ki, ox s - pad + kj]
///   (0 outside the image); k = cin kh kw rows, hout wout columns.
/// - DG_B_IM2COL_T: its transpose, B(j, r) (k = hout wout rows, cin kh kw columns).
/// - DG_B_PACKED: a B packed beforehand by `dg_pack`: b the panels, rs their width nr, cs their
///   row count k. Column offsets (j0, and the caller's column splits) must be multiples of nr.
/// bf16: b holds bfloat16 values (uint16), not floats: a weight stored in bf16, which only
/// `dg_gemm_bf16` reads (DG_B_MATRIX only; the f32 entry points refuse such a source).
typedef struct {
    int kind;
    int bf16;
    const float *b;
    long rs, cs;
    long cin, h, w, kh, kw, stride, pad, hout, wout;
} dg_bsource;

/// Packs all of B (k rows, columns j0..<j0+n) into ceil(n / nr) panels of k x nr floats, the
/// layout DG_B_PACKED reads; nr is 16 or 32 (`dg_panel_width(n)` matches what `dg_gemm` would use).
void dg_pack(const dg_bsource *b, long k, long j0, long n, long nr, float *dst);
/// Rows p0..<p0+kc only: ceil(n / nr) panels of kc x nr floats. With nr = n this is the block
/// B[p0..<p0+kc, j0..<j0+n] as a plain row-major matrix (the OpenBLAS fallback uses that).
void dg_pack_block(const dg_bsource *b, long p0, long kc, long j0, long n, long nr, float *dst);
long dg_panel_width(long n);

/// The one switch: 1 when the AVX-512 kernels may run, i.e. the CPU and the OS support them (checked
/// once, cached) and they are not switched off. They start off when DGINSTYLE_GEMM=openblas, read
/// on the first call of anything here, so that setting turns every AVX-512 path off from the first
/// call. Atomic: any thread may ask while another switches.
int dg_has_avx512(void);
/// Whether the CPU is an AMD one (CPUID vendor "AuthenticAMD"), for the rules measured to differ
/// between the CPU families the project runs on (`Kernels.defaultWinogradTiles`).
int dg_cpu_is_amd(void);
/// Switches the AVX-512 code off (0) or back on (1; no effect where the CPU lacks it), for tests of
/// the portable paths and for `GEMM.vectorized`.
void dg_allow_avx512(int allowed);

// MARK: the thread pool (pool.c)

typedef void (*dg_task_fn)(void *ctx, long i);
/// Calls fn(ctx, i) for i in 0..<iterations on up to `threads` threads (the caller's among them) and
/// returns when every call has returned. Idle workers spin DGINSTYLE_SPIN_US microseconds (default
/// 200) before they sleep, so a loop that follows another within that time starts at once. A call
/// from inside a job, or while another thread's loop holds the pool, runs its iterations serially on
/// its own thread. Callers make each iteration's work independent of which thread runs it.
void dg_parallel_for(long iterations, long threads, dg_task_fn fn, void *ctx);
/// Sets the spin time (microseconds; 0: sleep at once), for benchmarks of it.
void dg_set_spin_microseconds(long us);
long dg_spin_microseconds(void);

/// Every exported function below that uses AVX-512 (the ones marked "needs AVX-512", and dg_gemm,
/// dg_gemm_conv_t, dg_transpose) checks `dg_has_avx512()` itself on entry and, when it says 0,
/// prints which function was called and why it may not run (CPU without AVX-512, or switched off)
/// and aborts, instead of executing an illegal instruction or bypassing the switch. Callers still
/// check `GEMM.vectorized` first and take their portable path. dg_pack, dg_pack_block and
/// dg_panel_width are portable (they use AVX-512 internally only when the switch is on).

/// Prints why `who` may not run AVX-512 code and aborts (used by the entry points' checks).
void dg_refuse_avx512(const char *who) __attribute__((noreturn, cold));
#define DG_REQUIRE_AVX512(who) do { if (__builtin_expect(!dg_has_avx512(), 0)) dg_refuse_avx512(who); } while (0)

/// Process-wide settings of the Swift layer that tests change (atomic loads and stores, so a
/// change made on one thread is seen whole by kernels running on others).
/// DG_SETTING_DIRECT_WEIGHT_GRADIENT: the most output channels a 3x3 convolution's weight gradient
/// is taken straight from the image for (0: the measured default; negative: never).
/// DG_SETTING_FLOPS: a running count of the forward matrix products' flops (`Kernels.countFlops`).
/// DG_SETTING_ATTENTION_BACKWARD_KEYS: keys per block of the attention backward (0: the measured default).
/// DG_SETTING_WINOGRAD_TILES: the fewest output tiles per sample a 3x3 convolution goes to Winograd with
/// (0: the measured default; negative: never). DG_SETTING_WINOGRAD_BAND: bytes of transformed input
/// and products per band of tile rows (0: the default). DG_SETTING_WINOGRAD_FILTER: bytes of
/// transformed filter per block of the weight's rows (0: the default). DG_SETTING_WINOGRAD4_TILES: the
/// fewest 4x4 output tiles per sample a Winograd forward with f32 products takes F(4x4, 3x3) from (0:
/// the measured default; negative: never).
enum { DG_SETTING_THREADS = 0, DG_SETTING_SERIAL = 1, DG_SETTING_COLUMN_BUDGET = 2, DG_SETTING_ATTENTION_BLOCK = 3,
       DG_SETTING_FLOPS = 4, DG_SETTING_DIRECT_WEIGHT_GRADIENT = 5, DG_SETTING_ATTENTION_BACKWARD_KEYS = 6,
       DG_SETTING_WINOGRAD_TILES = 7, DG_SETTING_WINOGRAD_BAND = 8, DG_SETTING_WINOGRAD_FILTER = 9,
       DG_SETTING_WINOGRAD4_TILES = 10, DG_SETTING_COUNT = 11 };
long dg_setting(int which);
void dg_set_setting(int which, long value);
/// Adds delta atomically and returns the new value.
long dg_add_setting(int which, long delta);
/// Stores value if the setting still holds expected; returns the value it held.
long dg_init_setting(int which, long expected, long value);

/// C[i, j] for i < m, j < n (row stride ldc) =
///   alpha sum_p A(i, p) B(p, j0 + j) + beta C[i, j] + rowBias[i] + colBias[j]
/// with beta C read only when beta != 0 and the biases optional (NULL). Single-threaded.
void dg_gemm(long m, long n, long k, float alpha, const float *a, long ars, long aks,
             const dg_bsource *b, long j0, float beta, float *c, long ldc,
             const float *rowBias, const float *colBias);

/// The same product with bf16 operands (a_bf16: A holds uint16 bfloat16 values; B: any f32 source but
/// DG_B_PACKED, or a bf16 DG_B_MATRIX). Needs AVX-512. Where `dg_has_avx512_bf16()`: in bfloat16, A and
/// B rounded to bf16 (round to nearest even, as the hardware converts; f32 denormals become 0) as
/// they are packed, or read as they are where stored in bf16, products summed in f32 by `vdpbf16ps`
/// (each product of two bf16 values is exact in f32), k in blocks of DG_KC_BF16 (512) from 0, pairs of
/// k values in order within a block. Elsewhere: dg_gemm's f32 product, the bf16 operands widened as
/// they are packed (the same bits as dg_gemm on their f32 copies). Either way every element of C comes
/// out the same whatever part of C a call computes. Single-threaded.
void dg_gemm_bf16(long m, long n, long k, float alpha, const void *a, int a_bf16, long ars, long aks,
                  const dg_bsource *b, long j0, float beta, float *c, long ldc,
                  const float *rowBias, const float *colBias);

/// The bf16 product's blocking: k values per block, rows of A per block, columns of B per block
/// (what `dginstyle bench sgemm` prints).
void dg_gemm_bf16_blocking(long *kc, long *mc, long *nc);

/// 1 when the bf16 kernel runs: the AVX-512 switch is on, the CPU has AVX512-BF16 (checked once,
/// cached), and DGINSTYLE_BF16 (read on the first question) is "on", or unset / "auto" and
/// vdpbf16ps does at least 1.5x the multiply-adds per cycle of vfmadd231ps on this CPU (timed once,
/// ~0.1 ms: 2x where it is a full-rate instruction, as on AMD Zen 4; on Intel Sapphire / Emerald Rapids
/// it issues at half the FMA rate, so bf16 products would be slower than f32 ones). "off" switches it
/// off. Where it says 0, callers compute bf16 weights in f32.
int dg_has_avx512_bf16(void);
/// 1: on (where the CPU has AVX512-BF16), whatever the timing says; 0: off. For tests and
/// `GEMM.bf16`.
void dg_allow_avx512_bf16(int allowed);
/// vdpbf16ps's and vfmadd231ps's multiply-adds per cycle on this CPU, as timed for the "auto" choice
/// (0 where the CPU lacks AVX512-BF16); `dginstyle bench sgemm` prints them.
void dg_bf16_dot_rates(double *bf16, double *f32);
/// The time-stamp counter's rate in GHz (the unit of `dg_bf16_dot_rates`' cycles), timed against the
/// monotonic clock over ~20 ms on the first call; 0 where there is no TSC.
double dg_tsc_ghz(void);

/// The input gradient of a stride-1 convolution with weights w [cout, cin, kh, kw] (kk = kh kw), as
/// dg_gemm with A(i, p) = w[(o cin + row0 + i) kk + kk - 1 - t] for p = o kk + t: the kernel flipped
/// and transposed, read in place (no flipped copy). m rows from cin row row0 on; alpha 1, beta 0.
void dg_gemm_conv_t(long m, long n, long k, const float *w, long cin, long kk, long row0,
                    const dg_bsource *b, long j0, float *c, long ldc);

/// The weight gradient of a 3x3 convolution with stride 1 and padding 1 (needs AVX-512), for x
/// [n, cin, h, w] and the output gradient gy [n, cout, h, w]: adds sum over samples and pixels of
/// gy[s, o, oy, ox] x[s, c, oy + ki - 1, ox + kj - 1] into dw[o, c, ki, kj] for the tiles tile0..<tile1
/// of ceil(cout / 3) x cin (tile t: output channels 3 (t / cin) ..< +3, input channel t % cin). Tiles
/// write disjoint parts of dw, and each tile's sums run in an order fixed by the shape: split between
/// threads, the result does not depend on the split.
void dg_conv3x3_weight_gradient(long n, long cin, long cout, long h, long w, const float *x, const float *gy,
                                float *dw, long tile0, long tile1);

/// Winograd F(2x2, 3x3) (side 2) or F(4x4, 3x3) (side 4) for a 3x3, stride-1, padding-1 convolution
/// (winograd.c): the output's side x side blocks ("tiles", ceil(h / side) x ceil(w / side) of them, row
/// by row) from (side + 2)² products U[xi] [rows, cols] x V[xi] [cols, tiles].
/// The filter transform (needs AVX-512): u[xi cout cin + o cin + c] = (G w[o, c] G^T)[xi] for output
/// channels r0..<r1 of the weight w [cout, cin, 3, 3] (bf16: uint16 bfloat16 values), each w[o, c]
/// turned by 180 degrees where flipped: the input gradient's convolution (the kernel turned and
/// transposed) reads that u transposed. With side 2, out_bf16 asks for u in bf16 (rounded to nearest
/// even), for the bf16 products; side 4: f32 u only.
void dg_winograd_filter(const void *w, int bf16, long cout, long cin, long r0, long r1, int flipped, void *u, int out_bf16, int side);
/// The input transform (needs AVX-512) of channels c0..<c1 of x [c, h, w] (one sample), tile rows
/// ty0..<ty1: tile t = (ty - ty0) ceil(w / side) + tx of channel c goes to v[xi xiStride + c ldv + t].
void dg_winograd_input(const float *x, long h, long w, long c0, long c1, long ty0, long ty1,
                       float *v, long xiStride, long ldv, int side);
/// The output transform (needs AVX-512): channels c0..<c1 of y [c, h, w] (one sample) in tile rows
/// ty0..<ty1 from m[xi xiStride + c ldm + t] (t as in dg_winograd_input), plus bias[c] (optional).
void dg_winograd_output(const float *m, long xiStride, long ldm, long c0, long c1, long ty0, long ty1,
                        long h, long w, const float *bias, float *y, int side);

/// dst[j ldd + i] = src[i lds + j] for i < rows, j < cols (AVX-512, 16 x 16 blocks).
void dg_transpose(const float *src, long rows, long cols, long lds, float *dst, long ldd);

/// Attention for up to 32 queries (nq) of one head (needs AVX-512): out = softmax(scale q k^T
/// [causal]) v, lse[i] = log-sum-exp of query i's scaled scores. q: query i at q + i ldq (d floats);
/// key r at k + r ldk, value r at v + r ldv (read in place); out: query i at out + i ldo.
/// causal: query i sees keys 0...qpos0 + i. Computed transposed (see gemm.c).
/// scratch: (keys + d + dv) * 32 floats.
void dg_attention_panel(long keys, long d, long dv, float scale, const float *q, long ldq, long nq,
                        const float *k, long ldk, const float *v, long ldv, float *out, long ldo, float *lse,
                        int causal, long qpos0, float *scratch);

/// dg_attention_panel with both products in bfloat16 (needs `dg_has_avx512_bf16()`): Q, K, V and the
/// probabilities rounded to bf16 at the products' inputs, f32 accumulation; scores, softmax and lse
/// in f32. K and V come as `dg_attention_bf16_operands` made them for the head (all its keys, also
/// where causal masks later ones). scratch: (keys + (keys + 1) / 2 + dv) * 32 floats.
void dg_attention_panel_bf16(long keys, long d, long dv, float scale, const float *q, long ldq, long nq,
                             const unsigned short *kb, const unsigned short *vt, float *out, long ldo, float *lse,
                             int causal, long qpos0, float *scratch);
/// One head's K (key r at k + r ldk) and V (value r at v + r ldv) rounded to bf16 for
/// dg_attention_panel_bf16: kb [keys, d] and vt = V^T [dv, keys rounded up to even] (padding 0; vt
/// NULL: K only). scratch: dv * (keys + 1) floats (NULL with vt).
void dg_attention_bf16_operands(long keys, long d, long dv, const float *k, long ldk, const float *v, long ldv,
                                unsigned short *kb, unsigned short *vt, float *scratch);

/// Row helpers for the attention backward (need AVX-512), over a rows x keys block s (row stride ld):
/// s[i, j] = exp(s[i, j] - lse[i]) for the keys row i sees (0 after them, causal).
void dg_attention_probabilities(long rows, long keys, float *s, long ld, const float *lse, int causal, long qpos0);
/// dp[i, j] = p[i, j] (dp[i, j] - delta[i]).
void dg_attention_score_gradient(long rows, long keys, const float *p, float *dp, long ld, const float *delta);

/// exp(x) for n floats (AVX-512; Cody-Waite reduction and a degree-6 polynomial, about 2 ulp;
/// 0 below -87.3). y may equal x.
void dg_exp(const float *x, float *y, long n);

// MARK: element-wise kernels (need AVX-512: callers check dg_has_avx512()). Each computes exactly what
// its portable Swift counterpart computes, in the same order (same bits): the C is compiled with
// -ffp-contract=off (Package.swift), so no a * b + c is fused into an fma the Swift code does not do.

/// Kernels.sum / sumSquaredDeviations / dot: float lanes over runs of 512, runs added in double.
double dg_sum(const float *p, long n);
double dg_sum_sq_dev(const float *p, long n, float c);
double dg_dot(const float *p, const float *q, long n);
/// y = a x + b, then silu when `silu`.
void dg_affine(const float *x, float *y, long n, float a, float b, int silu);
/// out = g silu'(a x + b).
void dg_affine_silu_backward(const float *x, const float *g, float *out, long n, float a, float b);
/// d = a g + b (x - mean) + c.
void dg_norm_backward_row(const float *g, const float *x, float *d, long n, float a, float b, float c, float mean);
void dg_silu(const float *x, float *y, long n);
void dg_silu_backward(const float *g, const float *x, float *dx, long n);
/// y[r, i] = h[r, i] gelu(h[r, d + i]) (erf GELU), and its backward into dh [rows, 2 d].
void dg_geglu(const float *h, float *y, long rows, long d);
void dg_geglu_backward(const float *gy, const float *h, float *dh, long rows, long d);


#define DG_ADAM8_BLOCK 256

/// Blockwise 8-bit AdamW state (bitsandbytes' 8-bit optimizers): the moments of elements
/// [256 b, 256 (b + 1)) are codes into the dynamic maps code1 (signed) and code2 (unsigned) times the
/// block's largest magnitude absmax[b]. For blocks [block0, block1) of an n-element parameter:
/// dequantize, one AdamW step as bitsandbytes computes it (step_size negative: -lr / bias correction),
/// new maxima, quantize to the nearest code. code1/code2 hold 257 values (the last +inf); lut1/lut2,
/// for a float's top 17 bits, the last code at or below that bucket's lower end (plus 3 bytes of
/// padding for gathers). AVX-512 where `dg_has_avx512()`, else portable C: the same bits.
void dg_adamw_8bit(long block0, long block1, long n, float *p, const float *g,
                   unsigned char *q1, unsigned char *q2, float *absmax1, float *absmax2,
                   const float *code1, const float *code2, const unsigned char *lut1, const unsigned char *lut2,
                   float beta1, float one_minus_beta1, float beta2, float one_minus_beta2, float eps,
                   float step_size, float bias2_sqrt, float decay);
/// The portable path's nearest code to x (what the AVX-512 path computes 16 at a time).
unsigned char dg_nearest_code(float x, const float *code, const unsigned char *lut);

#ifdef __cplusplus
}
#endif

#endif
