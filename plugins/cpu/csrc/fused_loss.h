/* Fused softmax cross-entropy and multi-tensor optimizer steps (fused_loss.c). */
#ifndef NEEDLE_CPU_FUSED_LOSS_H
#define NEEDLE_CPU_FUSED_LOSS_H
#include "needle_cpu.h"

/* -1 when done; otherwise the first row whose label is not a class index (nothing written) */
nd_i64 nd_softmax_xent_f32(const float *z, const float *lab, float *loss, nd_i64 rows, nd_i64 cls);
nd_i64 nd_softmax_xent_f64(const double *z, const double *lab, double *loss, nd_i64 rows, nd_i64 cls);
nd_i64 nd_softmax_xent_grad_f32(const float *z, const float *lab, const float *g, float *out,
                                nd_i64 rows, nd_i64 cls);
nd_i64 nd_softmax_xent_grad_f64(const double *z, const double *lab, const double *g, double *out,
                                nd_i64 rows, nd_i64 cls);
/* u / u_out entries NULL when momentum is 0 */
void nd_sgd_step_f32(nd_i64 n, const nd_i64 *size, const float *const *p, const float *const *g,
                     const float *const *u, float *const *p_out, float *const *u_out,
                     float lr, float mom, float c, float wd);
void nd_adam_step_f32(nd_i64 n, const nd_i64 *size, const float *const *p, const float *const *g,
                      const float *const *m, const float *const *v, float *const *p_out,
                      float *const *m_out, float *const *v_out, float b1, float c1, float b2, float c2, float wd,
                      float k_scale, float eps_s, int frozen);
#endif
