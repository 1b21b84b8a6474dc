// What every AVX-512 kernel file shares (x86-64 only): the target attribute of functions that may use
// AVX-512 (the binary itself is compiled for baseline x86-64; see include/dg_kernels.h) and the mask of
// the first `left` lanes of a 16-float vector.
#ifndef DG_AVX512_H
#define DG_AVX512_H
#include <immintrin.h>

#define TGT __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma,avx2,avx")))

// Lanes 0..<left (none for left <= 0, all 16 from 16 on).
TGT static inline __mmask16 lanes(long left) {
    return left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
}

// f32 bits rounded to nearest even at bit 16: the bf16 value in the high half (finite normal values;
// callers that may see others mask them).
TGT static inline __m512i bf16_rounded_bits(__m512i x) {
    return _mm512_add_epi32(x, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF),
                                                _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1))));
}

#endif
