// Buffer-device-address views used by every stage. Addresses arrive as uvec2
// in push constants (GL_EXT_buffer_reference_uvec2), so no shader needs the
// shaderInt64 feature; weights and scratch may exceed maxStorageBufferRange.
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference_uvec2 : require

#include "constants.h"

const uint INVALID = VKMOE_INVALID;

layout(buffer_reference, std430, buffer_reference_align = 4) buffer UintArray { uint v[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) buffer FloatArray { float v[]; };
layout(buffer_reference, std430, buffer_reference_align = 16) buffer Vec4Array { vec4 v[]; };
// Four 16-bit values per element, as stored for VKMOE_WEIGHT_F16 and _BF16.
layout(buffer_reference, std430, buffer_reference_align = 8) buffer Half4Array { uvec2 v[]; };
layout(buffer_reference, std430, buffer_reference_align = 8) buffer AddressArray { uvec2 v[]; };

// base + 16·units: an array of a buffer given by its offset in 16-byte units.
uvec2 address_at(uvec2 base, uint units)
{
    uint carry;
    uint low = uaddCarry(base.x, units << 4, carry);
    return uvec2(low, base.y + (units >> 28) + carry);
}
