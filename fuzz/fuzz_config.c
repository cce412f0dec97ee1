/* libFuzzer target for a checkpoint's config.json as the loader reads it:
 * JSON parsed, then described as every MoE layer index a file might ask
 * for (model_hf.c: model_type, nested text_config, sizes, routing, groups,
 * shared experts, the lists and ranges of MoE layers, fused experts).
 * On arbitrary bytes it must return, free all it allocated, and describe
 * only params within vkmoe's bounds. */
#include <stdlib.h>

#include "model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    model_source source = {.directory = "fuzz", .fn = "fuzz_config"};
    char error[256];
    if (!vkmoe_json_parse((const char *)data, size, &source.config, error, sizeof(error)))
        return 0;
    for (uint32_t layer = 0; layer < 3; layer++) {
        model_layout layout = {0};
        if (vkmoe_model_describe_hf(&source, layer, &layout) != VKMOE_OK)
            continue;
        const vkmoe_layer_params *p = &layout.params;
        if (p->experts > VKMOE_MAX_EXPERTS || p->top_k > VKMOE_MAX_TOP_K ||
            p->expert_groups > VKMOE_MAX_GROUPS || p->topk_groups > VKMOE_MAX_GROUPS)
            abort();
    }
    vkmoe_json_free(&source.config);
    return 0;
}
