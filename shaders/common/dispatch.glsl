// Workgroup index of a 1-D grid that the host folded into x and y so that
// more than 65535 groups fit (vkmoe_dispatch_1d).
uint flat_group_id()
{
    return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
}
