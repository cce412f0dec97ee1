/* The expert cache of a layer with a device budget (expert_cache.c): every
 * routed expert's matrices in host memory (weights.h's host arrays), a few
 * device slots (the device arrays, one matrix per slot), and which expert
 * each slot holds. A forward reads the routing's per-expert counts back
 * after scatter, plans which experts to copy into which slots, and records
 * the expert GEMMs in rounds: each round copies its experts in, writes the
 * expert→slot map the GEMMs read (gemm.h's expert_slot) and runs gemm_up
 * and gemm_down for the tiles of the experts it holds. One round when the
 * experts a forward needs fit the slots; more when they do not. */
#ifndef VKMOE_EXPERT_CACHE_H
#define VKMOE_EXPERT_CACHE_H

#include "cpu_experts.h"
#include "layer.h"

/* The device slots of one expert cache, or of the caches of a model's
 * layers whose experts have one shape (vkmoe_model_params.shared_cache):
 * the slots' matrices, which the member layers' device arrays borrow, and
 * whose expert each slot holds. The last member destroys it. Its members
 * run one at a time (a model's layers share their scratch), so a slot a
 * forward takes from another member was last read by a forward that has
 * completed; only a prefetch's copy may still be writing it (the copy
 * queue orders its copies, and the forward then waits for them). */
typedef struct vkmoe_slot_pool {
    uint32_t slots, members;
    vkmoe_expert_array arrays[3]; /* device memory, `slots` matrices each */
    vkmoe_expert_cache **owner;   /* [slots]: whose expert a slot holds, or NULL */
    uint32_t *expert;             /* [slots]: which of its experts */
    uint8_t *pinned;              /* [slots]: computing in the round being planned */
    uint64_t clock;               /* forwards its members planned */
    const vkmoe_layer *first;     /* the member that made it: counts its memory */
} vkmoe_slot_pool;

/* One expert copied into one slot in a round: on the copy queue, or
 * inline, before the round's GEMMs. */
typedef struct vkmoe_cache_load {
    uint32_t expert, slot, round;
    bool on_copy_queue;
} vkmoe_cache_load;

struct vkmoe_expert_cache {
    uint32_t experts;
    vkmoe_slot_pool *pool; /* the slots, its own or shared */
    uint32_t member;       /* its place among the pool's members: ties go to the first */
    vkmoe_cache_policy policy;
    uint64_t expert_bytes; /* device bytes of one expert's matrices */
    vkmoe_buffer map;      /* u32 [experts] on the device: the GEMMs' expert_slot */
    vkmoe_buffer counts;   /* u32 [experts] in host memory: the routing read back */
    uint32_t *expert_slot; /* [experts]: the slot holding an expert, or VKMOE_INVALID */
    double *score;         /* [experts]: frequency with recency (VKMOE_CACHE_FREQUENCY) */
    uint64_t *last_used;   /* [experts]: the pool's forward that last needed it; 0: never */
    uint64_t last_forward; /* the pool's forward that was its latest */
    uint64_t since;        /* the one before it: who has run since is in use */
    uint32_t held;         /* slots of the pool it holds */
    /* The plan of the forward being recorded, for each needed expert: */
    uint32_t *plan_slot;     /* [experts]: the slot it computes in, or VKMOE_INVALID */
    uint32_t *plan_round;    /* [experts]: the round it computes in, or VKMOE_INVALID */
    vkmoe_cache_load *loads; /* [experts]: the copies, in round order */
    uint32_t load_count, rounds, hits;
    uint32_t *round_map; /* [experts]: one round's map, while recording */
    /* With a copy queue (ctx->copies): the first misses' copies run there
     * while the round of the hits computes; the GEMMs that read slots wait
     * for copies_ready, the timeline value of the last copies into them. */
    bool async;
    uint64_t copies_ready;
    uint32_t async_loads;    /* this forward's loads on the copy queue */
    uint32_t early_rounds;   /* leading rounds that need no copy of this forward */
    uint32_t next_round;     /* the first round not yet recorded */
    uint8_t *prefetched;     /* [experts]: copied in by a prefetch, not yet needed */
    uint32_t prefetch_hits;  /* this forward's */
    vkmoe_cache_stats stats; /* of the forwards that completed */
    /* Experts on the host (params.cpu_experts): every needed expert runs
     * there, from the host arrays; no slot is ever filled. */
    bool cpu_all;
    /* Or only the cold experts where that is cheaper (cpu_cold_experts). */
    bool cpu_cold;
    uint8_t *on_cpu;   /* [experts]: which run on the host this forward */
    uint32_t cpu_runs; /* how many: this forward's */
    vkmoe_cpu_scratch cpu;
    vkmoe_buffer routes;      /* u32 ids, u32 slot_row, f32 topk_weight, [max_slots] each */
    vkmoe_buffer cpu_out;     /* f32 [max_slots][dim]: the CPU experts' outputs */
    VkBufferCopy *cpu_copies; /* [max_slots]: their rows into expert_out */
    uint32_t cpu_copy_count;
    double cpu_ms; /* of the forward being recorded */
    /* seconds a byte takes copied in, a byte read and a FLOP on the host */
    double copy_cost, read_cost, flop_cost, expert_flops;
};

/* The cache of a layer whose experts need more than its budget, with
 * `slots` experts on the device out of params.experts: in *shared's pool
 * where that is set (the caller made sure its slots fit this layer's
 * experts), else in a new one, which *shared (where not NULL) then names.
 * The pool's arrays are the caller's to make where they are not yet
 * (pool->arrays[VKMOE_EXPERT_DOWN].chunks NULL). */
vkmoe_status vkmoe_expert_cache_create(vkmoe_layer *layer, uint32_t slots, uint64_t expert_bytes,
                                       vkmoe_slot_pool **shared);
void vkmoe_expert_cache_destroy(vkmoe_context *ctx, vkmoe_expert_cache **cache);

/* An expert's matrices were set again: whatever slot holds it is stale. */
void vkmoe_expert_cache_forget(vkmoe_expert_cache *cache, uint32_t expert);

/* After scatter: copy the per-expert counts where the host reads them,
 * and with CPU experts each slot's expert, row and weight. */
void vkmoe_expert_cache_record_counts(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
/* Once those are on the host: choose the slots, the rounds and the
 * experts computed on the host. */
void vkmoe_expert_cache_plan(vkmoe_layer *layer);
/* Submit the planned copies that run on the copy queue, if any. */
vkmoe_status vkmoe_expert_cache_submit_copies(vkmoe_layer *layer);
/* Whether the rounds up to early_rounds go in a submission of their own:
 * there are some, and copies or host experts they need not wait for. */
bool vkmoe_expert_cache_splits(const vkmoe_expert_cache *cache);
/* Run the planned host experts on x (the forward's input, io_type). */
vkmoe_status vkmoe_expert_cache_run_cpu(vkmoe_layer *layer, uint32_t tokens, const void *x);
/* Record the planned rounds up to `end` not yet recorded (GEMMs, inline
 * copies, map), and after the last, the host experts' rows into expert_out. */
void vkmoe_expert_cache_record_until(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens,
                                     uint32_t end);
/* The same to the last round: gemm_up's stage. */
void vkmoe_expert_cache_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
/* After a prefetch's routing was read back: copy in, on the copy queue,
 * the experts it predicts that are not on the device, as slots allow. */
vkmoe_status vkmoe_expert_cache_prefetch(vkmoe_layer *layer);
/* The planned forward completed (ok) or failed: count it, or empty the
 * slots it was filling, whose contents are now unknown. */
void vkmoe_expert_cache_finish(vkmoe_layer *layer, bool ok);

#endif /* VKMOE_EXPERT_CACHE_H */
