/* The README's API example: one Mixtral-style layer (softmax top-2,
 * renormalised, SwiGLU experts), weights from host arrays, one forward. */
#include <stdio.h>
#include <stdlib.h>

#include <vkmoe.h>

#define CHECK(call)                                                                                \
    do {                                                                                           \
        vkmoe_status s_ = (call);                                                                  \
        if (s_ != VKMOE_OK) {                                                                      \
            fprintf(stderr, "%s: %s\n", vkmoe_status_string(s_), vkmoe_last_error());              \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

int main(void)
{
    enum { DIM = 256, FFN = 512, EXPERTS = 8, TOP_K = 2, TOKENS = 16 };

    vkmoe_context *ctx;
    CHECK(vkmoe_context_create(NULL, &ctx)); /* the best device there is */

    vkmoe_layer_params params = {
        .dim = DIM,
        .ffn_dim = FFN,
        .experts = EXPERTS,
        .top_k = TOP_K,
        .max_tokens = TOKENS,
        .weight_type = VKMOE_WEIGHT_F32,
        .normalize_topk = true,
    };
    vkmoe_layer *layer;
    CHECK(vkmoe_layer_create(ctx, &params, &layer));

    /* Hugging Face layout: router [E][D], gate/up [F][D], down [D][F]. */
    float *router = calloc(EXPERTS * DIM, sizeof(float));
    float *matrix = calloc(FFN * DIM, sizeof(float));
    for (int i = 0; i < EXPERTS * DIM; i++)
        router[i] = (float)(((unsigned)i * 7919u) % 13u) / 13.0f - 0.5f;
    for (int i = 0; i < FFN * DIM; i++)
        matrix[i] = (float)(((unsigned)i * 104729u) % 17u) / 170.0f - 0.05f;
    CHECK(vkmoe_layer_set_router(layer, router, EXPERTS * DIM * sizeof(float)));
    for (uint32_t e = 0; e < EXPERTS; e++) {
        CHECK(vkmoe_layer_set_expert(layer, e, VKMOE_EXPERT_GATE, matrix, FFN * DIM * 4));
        CHECK(vkmoe_layer_set_expert(layer, e, VKMOE_EXPERT_UP, matrix, FFN * DIM * 4));
        CHECK(vkmoe_layer_set_expert(layer, e, VKMOE_EXPERT_DOWN, matrix, FFN * DIM * 4));
    }

    float *x = calloc(TOKENS * DIM, sizeof(float)), *y = calloc(TOKENS * DIM, sizeof(float));
    for (int i = 0; i < TOKENS * DIM; i++)
        x[i] = (float)(i % 29) / 29.0f - 0.5f;
    CHECK(vkmoe_layer_forward(layer, TOKENS, x, y));

    uint32_t counts[EXPERTS];
    CHECK(vkmoe_layer_expert_counts(layer, counts, EXPERTS));
    printf("y[0][0] = %g; tokens per expert:", y[0]);
    for (int e = 0; e < EXPERTS; e++)
        printf(" %u", counts[e]);
    printf("\n");

    free(router);
    free(matrix);
    free(x);
    free(y);
    vkmoe_layer_destroy(&layer);
    vkmoe_context_destroy(&ctx);
    return 0;
}
