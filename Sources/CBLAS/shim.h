#include <cblas.h>

/* LAPACK's divide-and-conquer SVD, which libopenblas carries (no lapacke header needed); used by
   `lora extract`. Fortran calling convention: every argument by reference, and the hidden length
   of the character argument last (gfortran's ABI). */
#include <stddef.h>
void sgesdd_(const char *jobz, const blasint *m, const blasint *n, float *a, const blasint *lda, float *s, float *u,
             const blasint *ldu, float *vt, const blasint *ldvt, float *work, const blasint *lwork, blasint *iwork,
             blasint *info, size_t jobz_len);
