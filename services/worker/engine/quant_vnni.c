/* quant_vnni.c — the 32-value block types' products (Q4_0, Q5_0, Q8_0, Q4_1, Q5_1) with AVX-512
 * VNNI: quant_bk.h compiled with BK_VNNI, so each pair's four-product sums come from vpdpbusd
 * (on 256-bit vectors, AVX-512 VL) instead of maddubs and madd. The integers are the same and
 * every later step is shared, so the results are bit-identical to quant_avx2.c's (test_quant
 * checks this wherever the CPU has VNNI).
 *
 * Threading: pure functions, no state. Compiled with the AVX2 flags plus -mavx512vnni
 * -mavx512vl; quant.c installs these over the AVX2 ones only after qt_vnni_usable(). */
#define BK_VNNI 1
#include "quant_bk.h"

bool qt_vnni_usable(void)
{
    __builtin_cpu_init();
    return qt_avx2_usable() && __builtin_cpu_supports("avx512vnni") &&
           __builtin_cpu_supports("avx512vl");
}

BK_FNS(q4_0, BK_Q4_0, QK4_0)
BK_FNS(q5_0, BK_Q5_0, QK5_0)
BK_FNS(q8_0, BK_Q8_0, QK8_0)
BK_FNS(q4_1, BK_Q4_1, QK4_1)
BK_FNS(q5_1, BK_Q5_1, QK5_1)

void qt_vnni_install(qt_traits tab[QT_NTYPES], qt_mm_fn mm[QT_NTYPES])
{
    tab[GGML_Q4_0].dot = dot_q4_0;
    mm[GGML_Q4_0] = mm_q4_0;
    tab[GGML_Q5_0].dot = dot_q5_0;
    mm[GGML_Q5_0] = mm_q5_0;
    tab[GGML_Q8_0].dot = dot_q8_0;
    mm[GGML_Q8_0] = mm_q8_0;
    tab[GGML_Q4_1].dot = dot_q4_1;
    mm[GGML_Q4_1] = mm_q4_1;
    tab[GGML_Q5_1].dot = dot_q5_1;
    mm[GGML_Q5_1] = mm_q5_1;
}
