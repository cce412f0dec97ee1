/* The expert cache: which experts the device slots hold, the replacement
 * policy, and the rounds of copies and GEMMs a forward records. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "copy_queue.h"
#include "expert_cache.h"
#include "stages.h"

/* VKMOE_CACHE_FREQUENCY's score: a forward that needs an expert adds 1,
 * every forward first multiplies all scores by this, so a need counts half
 * after about 7 forwards: hot experts survive bursts of cold ones, and a
 * drift of the hot set is followed within tens of forwards. */
#define SCORE_DECAY 0.9

/* A pool of `slots` empty slots, its arrays not yet made. */
static vkmoe_status pool_create(vkmoe_layer *layer, uint32_t slots, vkmoe_slot_pool **out)
{
    vkmoe_slot_pool *pool = *out = vkmoe_calloc(1, sizeof(*pool));
    if (!pool)
        return vkmoe_fail(layer->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    pool->slots = slots;
    pool->first = layer;
    pool->owner = vkmoe_calloc(slots, sizeof(*pool->owner));
    pool->expert = vkmoe_malloc(slots * sizeof(uint32_t));
    pool->pinned = vkmoe_calloc(slots, 1);
    if (!pool->owner || !pool->expert || !pool->pinned)
        return vkmoe_fail(layer->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    return VKMOE_OK;
}

/* A member leaves; the last frees the pool, and its slots' memory once
 * every copy into it is done (each member waited for its own). */
static void pool_leave(vkmoe_context *ctx, vkmoe_expert_cache *c)
{
    vkmoe_slot_pool *pool = c->pool;
    for (uint32_t s = 0; s < pool->slots && pool->owner; s++)
        if (pool->owner[s] == c)
            pool->owner[s] = NULL;
    if (--pool->members > 0)
        return;
    for (uint32_t m = 0; m < 3; m++)
        vkmoe_expert_array_destroy(ctx, &pool->arrays[m]);
    free(pool->owner);
    free(pool->expert);
    free(pool->pinned);
    free(pool);
}

vkmoe_status vkmoe_expert_cache_create(vkmoe_layer *layer, uint32_t slots, uint64_t expert_bytes,
                                       vkmoe_slot_pool **shared)
{
    vkmoe_context *ctx = layer->ctx;
    uint32_t experts = layer->params.experts;
    vkmoe_expert_cache *c = layer->weights.cache = vkmoe_calloc(1, sizeof(*c));
    if (!c)
        return vkmoe_fail(ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    vkmoe_slot_pool *pool = shared ? *shared : NULL;
    vkmoe_status made = pool ? VKMOE_OK : pool_create(layer, slots, &pool);
    if (pool) { /* left with the cache, whatever follows */
        c->pool = pool;
        c->member = pool->members++;
    }
    VKMOE_TRY(made);
    if (shared)
        *shared = pool;
    c->experts = experts;
    c->policy = layer->params.cache_policy;
    c->expert_bytes = expert_bytes;
    c->stats = (vkmoe_cache_stats){.slots = pool->slots, .expert_bytes = expert_bytes};
    c->expert_slot = vkmoe_malloc(experts * sizeof(uint32_t));
    c->score = vkmoe_calloc(experts, sizeof(double));
    c->last_used = vkmoe_calloc(experts, sizeof(uint64_t));
    c->plan_slot = vkmoe_malloc(experts * sizeof(uint32_t));
    c->plan_round = vkmoe_malloc(experts * sizeof(uint32_t));
    c->round_map = vkmoe_malloc(experts * sizeof(uint32_t));
    c->loads = vkmoe_malloc(experts * sizeof(vkmoe_cache_load));
    c->prefetched = vkmoe_calloc(experts, 1);
    if (!c->expert_slot || !c->score || !c->last_used || !c->plan_slot || !c->plan_round ||
        !c->round_map || !c->loads || !c->prefetched)
        return vkmoe_fail(ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    memset(c->expert_slot, 0xff, experts * sizeof(uint32_t));
    VKMOE_TRY(vkmoe_buffer_create(ctx, 4ull * experts, VKMOE_MEMORY_DEVICE, &c->map));
    VKMOE_TRY(vkmoe_buffer_create(ctx, 4ull * experts, VKMOE_MEMORY_HOST_CACHED, &c->counts));
    const vkmoe_layer_params *p = &layer->params;
    c->async = ctx->copies && !p->cpu_experts;
    if (!p->cpu_experts && !p->cpu_cold_experts)
        return VKMOE_OK;
    uint32_t max_slots = layer->plan.max_slots;
    c->cpu_all = p->cpu_experts;
    c->cpu_cold = !p->cpu_experts;
    c->copy_cost = 1e-9 / p->host_to_device_gbps;
    c->read_cost = 1e-9 / p->host_read_gbps;
    c->flop_cost = 1e-9 / p->cpu_expert_gflops;
    c->expert_flops = 2.0 * p->dim * p->ffn_dim * (vkmoe_params_gated(p) ? 3 : 2);
    c->on_cpu = vkmoe_malloc(experts);
    c->cpu_copies = vkmoe_malloc(max_slots * sizeof(VkBufferCopy));
    if (!c->on_cpu || !c->cpu_copies)
        return vkmoe_fail(ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    memset(c->on_cpu, c->cpu_all, experts);
    VKMOE_TRY(vkmoe_cpu_scratch_create(layer, &c->cpu));
    VKMOE_TRY(vkmoe_buffer_create(ctx, 12ull * max_slots, VKMOE_MEMORY_HOST_CACHED, &c->routes));
    return vkmoe_buffer_create(ctx, 4ull * max_slots * layer->params.dim, VKMOE_MEMORY_HOST,
                               &c->cpu_out);
}

void vkmoe_expert_cache_destroy(vkmoe_context *ctx, vkmoe_expert_cache **cache)
{
    vkmoe_expert_cache *c = *cache;
    if (!c)
        return;
    /* Copies still running read the host arrays and write the slots. */
    vkmoe_copy_queue_wait(ctx, c->copies_ready);
    vkmoe_buffer *buffers[] = {&c->map, &c->counts, &c->routes, &c->cpu_out};
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(buffers); i++)
        vkmoe_buffer_destroy(ctx, buffers[i]);
    vkmoe_cpu_scratch_destroy(&c->cpu);
    if (c->pool)
        pool_leave(ctx, c);
    free(c->on_cpu);
    free(c->cpu_copies);
    void *arrays[] = {c->expert_slot, c->score,     c->last_used, c->plan_slot,
                      c->plan_round,  c->round_map, c->loads,     c->prefetched};
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(arrays); i++)
        free(arrays[i]);
    free(c);
    *cache = NULL;
}

void vkmoe_expert_cache_forget(vkmoe_expert_cache *c, uint32_t expert)
{
    uint32_t slot = c->expert_slot[expert];
    if (slot == VKMOE_INVALID)
        return;
    c->pool->owner[slot] = NULL;
    c->held--;
    c->expert_slot[expert] = VKMOE_INVALID;
    c->prefetched[expert] = 0;
}

void vkmoe_expert_cache_record_counts(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    vkmoe_context *ctx = layer->ctx;
    vkmoe_expert_cache *c = layer->weights.cache;
    const vkmoe_scratch_layout *l = &layer->plan.layout;
    vkmoe_barrier(ctx, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                  VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT);
    VkBufferCopy region = {.srcOffset = l->expert_count, .size = 4ull * c->experts};
    ctx->vk.vkCmdCopyBuffer(cmd, layer->work->scratch.buffer, c->counts.buffer, 1, &region);
    if (c->on_cpu) {
        VkDeviceSize slots = (VkDeviceSize)tokens * layer->params.top_k * 4,
                     max = 4ull * layer->plan.max_slots;
        VkBufferCopy routes[3] = {
            {l->ids, 0, slots}, {l->slot_row, max, slots}, {l->topk_weight, 2 * max, slots}};
        ctx->vk.vkCmdCopyBuffer(cmd, layer->work->scratch.buffer, c->routes.buffer, 3, routes);
    }
    vkmoe_barrier(ctx, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                  VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
}

/* Whether slot a's expert should be evicted before slot b's: an empty slot
 * first, then by the policy (the members' scores and times compare: each
 * member decays its scores once a forward, and a model runs every layer
 * once a token), then the least recently needed, then the first member's,
 * then the lowest expert index. */
static bool evict_before(const vkmoe_slot_pool *pool, uint32_t a, uint32_t b)
{
    const vkmoe_expert_cache *ca = pool->owner[a], *cb = pool->owner[b];
    if (!ca || !cb)
        return !ca && cb;
    uint32_t ea = pool->expert[a], eb = pool->expert[b];
    if (ca->policy == VKMOE_CACHE_FREQUENCY && ca->score[ea] != cb->score[eb])
        return ca->score[ea] < cb->score[eb];
    if (ca->last_used[ea] != cb->last_used[eb])
        return ca->last_used[ea] < cb->last_used[eb];
    if (ca != cb)
        return ca->member < cb->member;
    return ea < eb;
}

/* A member's share of its pool's slots: an equal part, the first members
 * one more where they do not divide. */
static uint32_t share_of(const vkmoe_expert_cache *c)
{
    const vkmoe_slot_pool *pool = c->pool;
    return pool->slots / pool->members + (c->member < pool->slots % pool->members);
}

/* Whether slot s is kept from member c: another member holds it, holds no
 * more than its share, and has run since c's forward before this one. So
 * layers that all run each token keep their shares (on recorded Mixtral
 * routing, where every layer needs k experts a token, letting the policy
 * rank all slots together hit up to 12 points less often than each layer's
 * own share: README), and what a layer leaves unused of its share, or holds
 * beyond it, goes to whichever needs it; a layer running alone takes the
 * slots of those that have not run since its previous forward. */
static bool kept_from(const vkmoe_expert_cache *c, uint32_t s)
{
    const vkmoe_expert_cache *owner = c->pool->owner[s];
    return owner && owner != c && owner->held <= share_of(owner) && owner->last_forward > c->since;
}

/* Whether slot s holds an expert that another member than c needed in its
 * latest forward: likely needed again, perhaps by the forward about to
 * run (a prefetch for the next layer comes before the current one's). */
static bool held_for_another(const vkmoe_expert_cache *c, uint32_t s)
{
    const vkmoe_expert_cache *owner = c->pool->owner[s];
    return owner && owner != c && owner->last_used[c->pool->expert[s]] == owner->last_forward;
}

/* The slot to evict among those not pinned (computing in this round) nor
 * kept_from c, and for a prefetch, not held_for_another; VKMOE_INVALID
 * when none (never after the pins are cleared: if no slot is empty and c
 * holds none, another member holds more than its share). */
static uint32_t victim(const vkmoe_expert_cache *c, bool prefetch)
{
    const vkmoe_slot_pool *pool = c->pool;
    uint32_t best = VKMOE_INVALID;
    for (uint32_t s = 0; s < pool->slots; s++) {
        if (pool->pinned[s] || kept_from(c, s) || (prefetch && held_for_another(c, s)))
            continue;
        if (best == VKMOE_INVALID || evict_before(pool, s, best))
            best = s;
    }
    return best;
}

/* Update the policy's view of the experts with this forward's needs. */
static void note_needs(vkmoe_expert_cache *c, const uint32_t *counts)
{
    c->since = c->last_forward;
    uint64_t now = c->last_forward = ++c->pool->clock;
    for (uint32_t e = 0; e < c->experts; e++) {
        c->score[e] *= SCORE_DECAY;
        if (counts[e]) {
            c->score[e] += 1;
            c->last_used[e] = now;
        }
    }
}

/* A frequency score of at least this (needed twice of late) lets a cold
 * expert into the cache when the host would compute it faster. */
#define ADMIT_SCORE 1.5

/* Whether missing expert e, routed `rows` rows, runs on the host this
 * forward (cpu_cold_experts): it is no hotter than what it would evict, and
 * computing it there costs less than copying it in. */
static bool stays_on_host(const vkmoe_expert_cache *c, uint32_t e, uint32_t rows)
{
    const vkmoe_slot_pool *pool = c->pool;
    uint32_t slot = victim(c, false);
    const vkmoe_expert_cache *owner = slot == VKMOE_INVALID ? NULL : pool->owner[slot];
    double rival = owner ? owner->score[pool->expert[slot]] : 0;
    if (slot != VKMOE_INVALID && c->score[e] >= ADMIT_SCORE && c->score[e] > rival)
        return false;
    double read = c->expert_bytes * c->read_cost, compute = rows * c->expert_flops * c->flop_cost;
    return (read > compute ? read : compute) < c->expert_bytes * c->copy_cost;
}

/* Expert e into slot from now on; whatever the slot held leaves. Another
 * member's copies into it (a prefetch's) may still run: c's copies and
 * GEMMs then wait for them too. */
static void occupy(vkmoe_expert_cache *c, uint32_t slot, uint32_t e)
{
    vkmoe_slot_pool *pool = c->pool;
    vkmoe_expert_cache *was = pool->owner[slot];
    if (was) {
        was->held--;
        was->expert_slot[pool->expert[slot]] = VKMOE_INVALID;
        was->prefetched[pool->expert[slot]] = 0;
        if (was->copies_ready > c->copies_ready)
            c->copies_ready = was->copies_ready;
    }
    pool->owner[slot] = c;
    c->held++;
    pool->expert[slot] = e;
    c->expert_slot[e] = slot;
    pool->pinned[slot] = 1;
}

/* Round 0 runs the needed experts already on the device and as many of
 * the others as the remaining slots take; each further round evicts what
 * earlier rounds ran. With a copy queue, the hits have round 0 to
 * themselves, computing while the copies of round 1's first experts run
 * beside them (into slots no earlier round reads); later rounds copy
 * inline, after the GEMMs of the rounds whose slots they take. */
static void plan_slots(vkmoe_expert_cache *c)
{
    const uint32_t *counts = c->counts.mapped;
    vkmoe_slot_pool *pool = c->pool;
    memset(pool->pinned, 0, pool->slots);
    c->rounds = 1;
    for (uint32_t e = 0; e < c->experts; e++) {
        uint32_t slot = counts[e] ? c->expert_slot[e] : VKMOE_INVALID;
        c->plan_slot[e] = slot;
        c->plan_round[e] = slot != VKMOE_INVALID ? 0 : VKMOE_INVALID;
        if (slot != VKMOE_INVALID) {
            pool->pinned[slot] = 1;
            c->hits++;
            c->prefetch_hits += c->prefetched[e];
        }
        c->prefetched[e] = 0;
    }
    uint32_t first_miss_round = c->async && c->hits ? 1 : 0;
    bool reused = false; /* a slot of an earlier round was taken */
    for (uint32_t e = 0; e < c->experts; e++) {
        if (!counts[e] || c->plan_round[e] == 0)
            continue;
        if (c->cpu_cold && stays_on_host(c, e, counts[e])) {
            c->on_cpu[e] = 1;
            c->cpu_runs++;
            continue;
        }
        uint32_t slot = victim(c, false);
        if (slot == VKMOE_INVALID) {
            memset(pool->pinned, 0, pool->slots);
            c->rounds++;
            reused = true;
            slot = victim(c, false);
        }
        if (c->rounds <= first_miss_round)
            c->rounds = first_miss_round + 1;
        occupy(c, slot, e);
        c->plan_slot[e] = slot;
        c->plan_round[e] = c->rounds - 1;
        bool async = c->async && !reused;
        c->async_loads += async;
        c->loads[c->load_count++] = (vkmoe_cache_load){e, slot, c->rounds - 1, async};
    }
    /* The rounds before the first with a copy on the copy queue wait for
     * nothing of this forward's (inline copies are recorded with them). */
    c->early_rounds = c->rounds;
    for (uint32_t i = 0; i < c->load_count; i++)
        if (c->loads[i].on_copy_queue && c->loads[i].round < c->early_rounds)
            c->early_rounds = c->loads[i].round;
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

vkmoe_status vkmoe_expert_cache_run_cpu(vkmoe_layer *layer, uint32_t tokens, const void *x)
{
    vkmoe_expert_cache *c = layer->weights.cache;
    if (!c->cpu_runs)
        return VKMOE_OK;
    uint32_t max = layer->plan.max_slots, dim = layer->params.dim;
    const uint32_t *routes = c->routes.mapped;
    double start = now_ms();
    VKMOE_TRY(vkmoe_cpu_inputs(layer, &c->cpu, x, tokens));
    vkmoe_cpu_batch batch = {
        .x = c->cpu.x,
        .tokens = tokens,
        .ids = routes,
        .slot_row = routes + max,
        .topk_weight = (const float *)(routes + 2 * max),
        .on_cpu = c->on_cpu,
        .out = c->cpu_out.mapped,
    };
    uint32_t computed;
    VKMOE_TRY(vkmoe_cpu_experts_run(layer, &c->cpu, &batch, &computed));
    for (uint32_t i = 0; i < computed; i++) {
        uint32_t slot = c->cpu.order[i], row = batch.slot_row[slot];
        c->cpu_copies[i] = (VkBufferCopy){4ull * slot * dim, 4ull * row * dim, 4ull * dim};
    }
    c->cpu_copy_count = computed;
    c->cpu_ms = now_ms() - start;
    return VKMOE_OK;
}

void vkmoe_expert_cache_plan(vkmoe_layer *layer)
{
    vkmoe_expert_cache *c = layer->weights.cache;
    note_needs(c, c->counts.mapped);
    c->load_count = c->hits = c->rounds = c->cpu_copy_count = c->cpu_runs = 0;
    c->async_loads = c->early_rounds = c->next_round = c->prefetch_hits = 0;
    c->cpu_ms = 0;
    if (c->cpu_all) {
        for (uint32_t e = 0; e < c->experts; e++)
            c->cpu_runs += ((const uint32_t *)c->counts.mapped)[e] > 0;
        return;
    }
    if (c->cpu_cold)
        memset(c->on_cpu, 0, c->experts);
    plan_slots(c);
}

bool vkmoe_expert_cache_splits(const vkmoe_expert_cache *c)
{
    return c->early_rounds > 0 && (c->async_loads || c->cpu_runs);
}

/* Copy expert e's matrices from host memory into slot s. */
static void record_load(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t e, uint32_t s)
{
    vkmoe_context *ctx = layer->ctx;
    for (uint32_t m = 0; m < 3; m++) {
        const vkmoe_expert_array *from = &layer->weights.host[m], *to = &layer->weights.experts[m];
        if (!from->chunks)
            continue; /* ReLU experts have no gate */
        VkBufferCopy region = {
            .srcOffset = vkmoe_expert_array_offset(from, e),
            .dstOffset = (s % to->per_chunk) * to->matrix_bytes,
            .size = from->matrix_bytes,
        };
        ctx->vk.vkCmdCopyBuffer(cmd, from->chunks[vkmoe_expert_array_chunk(from, e)].buffer,
                                to->chunks[s / to->per_chunk].buffer, 1, &region);
    }
}

/* Record copies of the loads on or off the copy queue in `round`. */
static void record_loads(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t round, bool copy_queue)
{
    vkmoe_expert_cache *c = layer->weights.cache;
    for (uint32_t i = 0; i < c->load_count; i++)
        if (c->loads[i].on_copy_queue == copy_queue && (copy_queue || c->loads[i].round == round))
            record_load(layer, cmd, c->loads[i].expert, c->loads[i].slot);
}

vkmoe_status vkmoe_expert_cache_submit_copies(vkmoe_layer *layer)
{
    vkmoe_expert_cache *c = layer->weights.cache;
    if (!c->async_loads)
        return VKMOE_OK;
    VkCommandBuffer cmd;
    VKMOE_TRY(vkmoe_copy_queue_begin(layer->ctx, &cmd));
    record_loads(layer, cmd, 0, true);
    return vkmoe_copy_queue_submit(layer->ctx, &c->copies_ready);
}

void vkmoe_expert_cache_record_until(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens,
                                     uint32_t end)
{
    vkmoe_context *ctx = layer->ctx;
    vkmoe_expert_cache *c = layer->weights.cache;
    for (uint32_t r = c->next_round; r < end; r++) {
        /* The previous round's GEMMs (perhaps of the early submission,
         * earlier on the queue) read the slots and the map rewritten now. */
        if (r > 0)
            vkmoe_barrier(ctx, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT,
                          VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT);
        record_loads(layer, cmd, r, false);
        for (uint32_t e = 0; e < c->experts; e++)
            c->round_map[e] = c->plan_round[e] == r ? c->plan_slot[e] : VKMOE_INVALID;
        ctx->vk.vkCmdUpdateBuffer(cmd, c->map.buffer, 0, 4ull * c->experts, c->round_map);
        vkmoe_barrier(ctx, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                      VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT);
        vkmoe_gemm_up_record(layer, cmd, tokens);
        vkmoe_barrier_compute(ctx, cmd);
        vkmoe_gemm_down_record(layer, cmd, tokens);
    }
    if (end > c->next_round)
        c->next_round = end;
    if (end == c->rounds && c->cpu_copy_count) {
        ctx->vk.vkCmdCopyBuffer(cmd, c->cpu_out.buffer, layer->work->expert_out.buffer,
                                c->cpu_copy_count, c->cpu_copies);
        vkmoe_barrier(ctx, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                      VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT);
    }
}

void vkmoe_expert_cache_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    vkmoe_expert_cache_record_until(layer, cmd, tokens, layer->weights.cache->rounds);
}

vkmoe_status vkmoe_expert_cache_prefetch(vkmoe_layer *layer)
{
    vkmoe_expert_cache *c = layer->weights.cache;
    vkmoe_slot_pool *pool = c->pool;
    const uint32_t *counts = c->counts.mapped;
    memset(pool->pinned, 0, pool->slots);
    for (uint32_t e = 0; e < c->experts; e++)
        if (counts[e] && c->expert_slot[e] != VKMOE_INVALID)
            pool->pinned[c->expert_slot[e]] = 1;
    c->load_count = c->async_loads = 0;
    for (uint32_t e = 0; e < c->experts; e++) {
        if (!counts[e] || c->expert_slot[e] != VKMOE_INVALID)
            continue;
        uint32_t slot = victim(c, true);
        if (slot == VKMOE_INVALID)
            break; /* every slot holds a predicted expert */
        occupy(c, slot, e);
        c->prefetched[e] = 1;
        c->loads[c->load_count++] = (vkmoe_cache_load){e, slot, 0, true};
        c->async_loads++;
    }
    vkmoe_status status = vkmoe_expert_cache_submit_copies(layer);
    if (status != VKMOE_OK) {
        vkmoe_expert_cache_finish(layer, false);
        return status;
    }
    c->stats.prefetched += c->load_count;
    c->stats.bytes_to_device += c->load_count * c->expert_bytes;
    c->load_count = c->async_loads = 0;
    return VKMOE_OK;
}

void vkmoe_expert_cache_finish(vkmoe_layer *layer, bool ok)
{
    vkmoe_expert_cache *c = layer->weights.cache;
    if (!ok) {
        /* A copy may still be writing a slot about to be forgotten, which
         * the next forward would fill again. */
        vkmoe_copy_queue_wait(layer->ctx, c->copies_ready);
        for (uint32_t i = 0; i < c->load_count; i++)
            vkmoe_expert_cache_forget(c, c->loads[i].expert);
        c->load_count = 0;
        return;
    }
    c->stats.forwards++;
    c->stats.hits += c->hits;
    c->stats.misses += c->load_count;
    c->stats.bytes_to_device += c->load_count * c->expert_bytes;
    c->stats.rounds += c->rounds;
    c->stats.cpu_slots += c->cpu_copy_count;
    c->stats.cpu_experts += c->cpu_runs;
    c->stats.cpu_ms += c->cpu_ms;
    c->stats.prefetch_hits += c->prefetch_hits;
    c->load_count = 0;
}
