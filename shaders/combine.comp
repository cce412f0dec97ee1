#version 450
// Combine: y[t] = Σ_j w[t][j]·z[slot_row[t·k + j]] (j in order; dropped slots
// add nothing) + g[t]·shared_out[t], no atomics. g[t] is the shared gate
// sigmoid(x·ws) when shared_scale is set, else 1. An invocation makes SPAN
// consecutive elements of a row. On CPU devices (GROUP 1, SPAN 16:
// combine_in_turn) it takes the slots one at a time, each slot's row and
// weight loaded once for 16 elements (CPU drivers load even lane-uniform
// values lane by lane). On GPUs (GROUP 8, SPAN 4: combine_grouped) it takes
// them 8 at a time, their rows, then their weights and elements, all loaded
// before any is summed: at decode a token's row was one workgroup waiting
// for two loads in turn per slot; now dim/4 invocations have a group's
// loads in flight together. The grouped form measured slower on llvmpipe
// (Qwen3 x0.25, T=256: 1.7-2.6 ms against 1.4-1.7, noisy), so each keeps
// its own. Either way each element sums the same products in slot order.
// With z_texels set (dim a multiple of 4), z and shared_out are read as
// RGBA32F texels (a vector gather on llvmpipe, where address loads go lane
// by lane) and y is written four elements a store.
// y may be f16 or bf16 (io_type, dim even): rounded to nearest even, two
// values a 32-bit store, never a word shared with another invocation.
//   binding 1: y [tokens][dim] of io_type (a vkmoe_weight_type: f32, f16, bf16)
//   set 1: binding 0 expert_out, binding 1 shared_out, as texels (z_texels)
//   push: topk_weight f32 [slots]; slot_row u32 [slots]; expert_out f32 [rows][dim];
//         shared_out f32 [tokens][dim] or 0; shared_scale f32 [tokens] or 0;
//         tokens, dim, top_k, z_texels, io_type
#extension GL_GOOGLE_include_directive : require
#include "common/buffers.glsl"
#include "common/dispatch.glsl"
#include "public_enums.glsl"
#include "common/output_rows.glsl"

layout(local_size_x = 256) in;
layout(constant_id = 0) const uint SPAN = 16; // elements of a row per invocation, a multiple of 4
layout(constant_id = 1) const uint GROUP = 1; // slots loaded before they are summed
const uint QUADS = SPAN / 4;
layout(set = 1, binding = 0) uniform samplerBuffer z_texels;
layout(set = 1, binding = 1) uniform samplerBuffer shared_texels;
layout(push_constant) uniform Push {
    uvec2 topk_weight, slot_row, expert_out, shared_out, shared_scale;
    uint tokens, dim, top_k, z_texels, io_type;
    uint unit_weights; // the weights scaled the experts' inputs (Llama 4): sum unweighted
} pc;


// z[start + i] for the i < n valid of four; 0 past them.
vec4 load4(FloatArray z, uint start, uint n)
{
    vec4 v = vec4(0.0);
    for (uint i = 0; i < 4; i++)
        if (i < n)
            v[i] = z.v[start + i];
    return v;
}

// Elements d .. d + 3 of row `row` of a [rows][dim] matrix at `address`, or
// its texel view; zeros past dim.
vec4 quad(samplerBuffer texels, uvec2 address, uint row, uint d)
{
    if (d >= pc.dim)
        return vec4(0.0);
    if (pc.z_texels != 0)
        return texelFetch(texels, int((row * pc.dim + d) / 4));
    return load4(FloatArray(address), row * pc.dim + d, min(4, pc.dim - d));
}

// y[token][d .. d + 3], as one vector store where rows are whole texels.
void store(uint token, uint d, vec4 v)
{
    if (d >= pc.dim)
        return;
    uint first = token * pc.dim + d;
    if (pc.io_type != WEIGHT_F32) { // dim and d even: whole words of this row
        for (uint i = 0; i < min(4, pc.dim - d); i += 2)
            y16[(first + i) / 2] = pack16(pc.io_type, v[i], v[i + 1]);
        return;
    }
    if (pc.z_texels != 0) {
        y4[first / 4] = v;
        return;
    }
    for (uint i = 0; i < min(4, pc.dim - d); i++)
        y[first + i] = v[i];
}

// CPU devices: 16 elements (SPAN must be 16), a slot at a time.
void combine_in_turn()
{
    uint spans = (pc.dim + SPAN - 1) / SPAN;
    uint s = flat_group_id() * 256 + gl_LocalInvocationID.x;
    uint token = s / spans;
    if (token >= pc.tokens)
        return;
    uint d = (s - token * spans) * SPAN;
    FloatArray weights = FloatArray(pc.topk_weight);
    UintArray slot_row = UintArray(pc.slot_row);
    vec4 acc0 = vec4(0.0), acc1 = vec4(0.0), acc2 = vec4(0.0), acc3 = vec4(0.0);
    for (uint j = 0; j < pc.top_k; j++) {
        uint slot = token * pc.top_k + j;
        uint row = slot_row.v[slot];
        if (row == INVALID)
            continue;
        float w = pc.unit_weights != 0 ? 1.0 : weights.v[slot];
        acc0 += w * quad(z_texels, pc.expert_out, row, d);
        acc1 += w * quad(z_texels, pc.expert_out, row, d + 4);
        acc2 += w * quad(z_texels, pc.expert_out, row, d + 8);
        acc3 += w * quad(z_texels, pc.expert_out, row, d + 12);
    }
    if (pc.shared_out != uvec2(0)) {
        float g = pc.shared_scale != uvec2(0) ? FloatArray(pc.shared_scale).v[token] : 1.0;
        acc0 += g * quad(shared_texels, pc.shared_out, token, d);
        acc1 += g * quad(shared_texels, pc.shared_out, token, d + 4);
        acc2 += g * quad(shared_texels, pc.shared_out, token, d + 8);
        acc3 += g * quad(shared_texels, pc.shared_out, token, d + 12);
    }
    store(token, d, acc0);
    store(token, d + 4, acc1);
    store(token, d + 8, acc2);
    store(token, d + 12, acc3);
}

// GPUs: SPAN elements, GROUP slots' loads in flight together.
void combine_grouped()
{
    uint spans = (pc.dim + SPAN - 1) / SPAN;
    uint s = flat_group_id() * 256 + gl_LocalInvocationID.x;
    uint token = s / spans;
    if (token >= pc.tokens)
        return;
    uint d = (s - token * spans) * SPAN;
    FloatArray weights = FloatArray(pc.topk_weight);
    UintArray slot_row = UintArray(pc.slot_row);
    vec4 acc[QUADS];
    for (uint q = 0; q < QUADS; q++)
        acc[q] = vec4(0.0);
    for (uint j0 = 0; j0 < pc.top_k; j0 += GROUP) {
        uint row[GROUP];
        for (uint i = 0; i < GROUP; i++)
            row[i] = j0 + i < pc.top_k ? slot_row.v[token * pc.top_k + j0 + i] : INVALID;
        float w[GROUP];
        vec4 z[GROUP][QUADS];
        for (uint i = 0; i < GROUP; i++) {
            if (row[i] == INVALID)
                continue;
            w[i] = pc.unit_weights != 0 ? 1.0 : weights.v[token * pc.top_k + j0 + i];
            for (uint q = 0; q < QUADS; q++)
                z[i][q] = quad(z_texels, pc.expert_out, row[i], d + 4 * q);
        }
        for (uint i = 0; i < GROUP; i++)
            if (row[i] != INVALID) // dropped slots add nothing
                for (uint q = 0; q < QUADS; q++)
                    acc[q] += w[i] * z[i][q];
    }
    if (pc.shared_out != uvec2(0)) {
        float g = pc.shared_scale != uvec2(0) ? FloatArray(pc.shared_scale).v[token] : 1.0;
        for (uint q = 0; q < QUADS; q++)
            acc[q] += g * quad(shared_texels, pc.shared_out, token, d + 4 * q);
    }
    for (uint q = 0; q < QUADS; q++)
        store(token, d + 4 * q, acc[q]);
}

void main()
{
    if (GROUP == 1)
        combine_in_turn();
    else
        combine_grouped();
}
