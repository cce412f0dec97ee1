/* Before the router (timed with it): x's rows padded with zeros to ld_dim
 * elements in x_rows, where every GEMM reads them as whole texels
 * (shaders/input_rows.comp). */
#include "stages.h"

typedef struct input_rows_push {
    VkDeviceAddress x_rows;
    uint32_t tokens, dim, ld_dim, io_type;
} input_rows_push;
_Static_assert(sizeof(input_rows_push) == 24, "input_rows_push must mirror input_rows.comp");

/* Invocations per workgroup in input_rows.comp, each writing 4 elements. */
#define GROUP_SIZE 64u

void vkmoe_input_rows_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    input_rows_push push = {
        .x_rows = layer->work->x_rows.address,
        .tokens = tokens,
        .dim = layer->params.dim,
        .ld_dim = layer->plan.ld_dim,
        .io_type = (uint32_t)layer->params.io_type,
    };
    uint64_t quads = (uint64_t)tokens * layer->plan.ld_dim / 4;
    vkmoe_dispatch_1d(layer->ctx, cmd, layer->pipelines[VKMOE_SHADER_INPUT_ROWS], &push,
                      sizeof(push), vkmoe_div_up(quads, GROUP_SIZE));
}
