/* Model-file loading, shared by model.c (opening, mapping, uploading) and
 * the per-format describers model_hf.c and model_gguf.c, which turn a
 * file's configuration into layer params and tensor names. */
#ifndef VKMOE_MODEL_H
#define VKMOE_MODEL_H

#include "json.h"
#include "layer.h"
#include "tensor_file.h"

#define MODEL_NAME_BYTES 192

/* One mapped file and its parsed tensors. */
typedef struct model_file {
    char *path;
    const uint8_t *data;
    uint64_t size;
    vkmoe_tensor_file tensors;
} model_file;

typedef struct model_source model_source;
typedef struct model_layout model_layout;

/* A file format the loader reads: a row of model.c's formats[]. Adding a
 * format is a row there and its describer (model_<format>.c). */
typedef struct model_format {
    const char *name;   /* for messages: "GGUF file", "Hugging Face checkpoint" */
    const char *config; /* where its hyper-parameters live, after the source's
                           path: "/config.json", or "" for the file itself */
    /* Whether a file beginning with these bytes (n of them, up to 16) is
     * of the format, or for a NULL head, whether a directory is. */
    bool (*detect)(const uint8_t *head, size_t n);
    /* Open path: map what is needed now, read the configuration. */
    vkmoe_status (*open)(model_source *source, const char *path);
    /* Parse one mapped file's tensors (tensor_file.h's contract). */
    bool (*parse)(const uint8_t *data, uint64_t size, vkmoe_tensor_file *out, char *error,
                  size_t error_size);
    /* Fill layout from the configuration for MoE block `layer`. */
    vkmoe_status (*describe)(model_source *source, uint32_t layer, model_layout *layout);
} model_format;

/* Progress of the uploads, for vkmoe_model_params.progress. */
typedef struct model_progress {
    vkmoe_progress_fn fn;
    void *user_data;
    uint64_t done, total; /* bytes of expert matrices */
} model_progress;

/* A model: its files (opened as their tensors are first needed, for a
 * sharded checkpoint) and its configuration. */
struct model_source {
    const vkmoe_context *ctx;
    char *directory;   /* Hugging Face: where config.json and the shards live */
    vkmoe_json config; /* Hugging Face: config.json */
    vkmoe_json index;  /* sharded checkpoints: model.safetensors.index.json */
    model_file *files;
    uint32_t file_count;
    const model_format *format;
    const char *path; /* as the caller gave it */
    const char *fn;   /* the API call, for messages */
    model_progress progress;
    /* A cached layer's experts may be read from the files' pages where
     * they lie (the model keeps the mappings: vkmoe_model_open), and were. */
    bool may_lend, lent;
};

/* The tensors of one layer, by name. Per-expert names hold one %u for the
 * expert; with `stacked`, one tensor [experts][rows][cols] holds all the
 * experts' matrices (GGUF) and its name has no %u. Empty: not present. */
struct model_layout {
    vkmoe_layer_params params;
    uint32_t layers; /* the model's layers, dense ones too; 0 if the file does not say */
    bool dense;      /* the layer is a dense one: no MoE block, no tensors named */
    bool stacked;
    char router[MODEL_NAME_BYTES], router_bias[MODEL_NAME_BYTES];
    char selection_bias[MODEL_NAME_BYTES], shared_gate[MODEL_NAME_BYTES];
    char expert[3][MODEL_NAME_BYTES], expert_bias[3][MODEL_NAME_BYTES];
    /* Where matrix m's rows sit in its tensor, for fused projections: the
     * tensor holds tensor_rows rows per expert (0: the matrix's own), and
     * row r of the matrix is its row row_first + r·row_step (step 0: 1).
     * Granite's input_linear: gate rows 0..F-1, up rows F..2F-1 of 2F. */
    uint32_t tensor_rows[3], row_first[3], row_step[3];
    /* The stacked expert tensors hold [E][cols][tensor_rows] (Llama 4):
     * matrix row r is the tensor's column row_first + r·row_step. f32,
     * f16 and bf16 only. */
    bool transposed;
    /* Hugging Face's MXFP4 experts (GPT-OSS): expert[m] + "_blocks", U8
     * [E][rows][cols/32][16] of E2M1 codes, element 2j in byte j's low
     * nibble and 2j+1 in its high one, and expert[m] + "_scales", U8
     * [E][rows][cols/32] of E8M0 exponents. */
    bool mxfp4_pairs;
    char shared[3][MODEL_NAME_BYTES];
};

/* Fill layout from config.json (model_hf.c) or the GGUF metadata
 * (model_gguf.c) for layer `layer`, or mark it dense; the weight type is
 * left to the loader. Failures are recorded with vkmoe_fail. */
vkmoe_status vkmoe_model_describe_hf(model_source *source, uint32_t layer, model_layout *layout);
vkmoe_status vkmoe_model_describe_gguf(model_source *source, uint32_t layer, model_layout *layout);

/* vkmoe_fail with the API call's name before the message. */
vkmoe_status vkmoe_model_fail(const model_source *s, vkmoe_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The tensor called name and the file holding it; VKMOE_ERROR_FILE_FORMAT
 * naming it when absent. */
vkmoe_status vkmoe_model_find(model_source *source, const char *name, const model_file **file,
                              const vkmoe_tensor **tensor);
/* Whether the model has a tensor of that name (opening shards as needed). */
bool vkmoe_model_has(model_source *source, const char *name);

#endif
