// Process-wide settings and the AVX-512 switch; see include/dg_kernels.h.
#include "dg_kernels.h"
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

static _Atomic long settings[DG_SETTING_COUNT];

long dg_setting(int which) { return atomic_load(&settings[which]); }
void dg_set_setting(int which, long value) { atomic_store(&settings[which], value); }
long dg_add_setting(int which, long delta) { return atomic_fetch_add(&settings[which], delta) + delta; }
long dg_init_setting(int which, long expected, long value) {
    atomic_compare_exchange_strong(&settings[which], &expected, value);
    return expected;
}

// MARK: the AVX-512 switch

int dg_cpu_has_avx512(void);   // gemm.c: CPU and OS support, cached

// -1: not decided yet (DGINSTYLE_GEMM is read on the first question), else 0 or 1.
static _Atomic int avx512_allowed = -1;

static int allowed(void) {
    int a = atomic_load_explicit(&avx512_allowed, memory_order_relaxed);
    if (__builtin_expect(a >= 0, 1)) return a;
    const char *e = getenv("DGINSTYLE_GEMM");
    int expected = -1;
    atomic_compare_exchange_strong(&avx512_allowed, &expected, (e && strcasecmp(e, "openblas") == 0) ? 0 : 1);
    return atomic_load(&avx512_allowed);
}

int dg_has_avx512(void) { return allowed() && dg_cpu_has_avx512(); }

void dg_allow_avx512(int allowed_) {
    (void)allowed();   // the environment's say comes first, so a later first question cannot undo this
    atomic_store(&avx512_allowed, allowed_ ? 1 : 0);
}

// MARK: the bf16 switch (under the AVX-512 one)

int dg_cpu_has_avx512_bf16(void);   // gemm.c
int dg_bf16_dot_pays(void);         // gemm.c

// -1: not decided yet (DGINSTYLE_BF16 is read on the first question); 0 off, 1 on, 2 auto (on where
// vdpbf16ps out-runs the f32 FMAs on this CPU, measured once).
static _Atomic int bf16_mode = -1;

static int bf16_mode_now(void) {
    int a = atomic_load_explicit(&bf16_mode, memory_order_relaxed);
    if (__builtin_expect(a >= 0, 1)) return a;
    const char *e = getenv("DGINSTYLE_BF16");
    int mode = !e || strcasecmp(e, "auto") == 0 ? 2 : strcasecmp(e, "off") == 0 ? 0 : 1;
    int expected = -1;
    atomic_compare_exchange_strong(&bf16_mode, &expected, mode);
    return atomic_load(&bf16_mode);
}

int dg_has_avx512_bf16(void) {
    if (!dg_has_avx512() || !dg_cpu_has_avx512_bf16()) return 0;
    int mode = bf16_mode_now();
    return mode == 1 || (mode == 2 && dg_bf16_dot_pays());
}

void dg_allow_avx512_bf16(int allowed_) {
    (void)bf16_mode_now();
    atomic_store(&bf16_mode, allowed_ ? 1 : 0);
}

void dg_refuse_avx512(const char *who) {
    if (!dg_cpu_has_avx512())
        fprintf(stderr, "dginstyle: %s needs AVX-512, which this CPU (or its OS) does not support; "
                        "callers must check GEMM.vectorized and take the portable path\n", who);
    else
        fprintf(stderr, "dginstyle: %s called with the AVX-512 kernels switched off (DGINSTYLE_GEMM=openblas or "
                        "GEMM.vectorized = false); callers must check GEMM.vectorized\n", who);
    fflush(stderr);
    abort();
}
