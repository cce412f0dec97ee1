/* vkmoe.h compiles on its own, first and alone (no other include before it),
 * and names kept for compatibility still mean what they meant. */
#include "vkmoe.h"

/* The deprecated stage name: an array of negative size if it drifts. */
typedef char stage_count_is_histogram[VKMOE_STAGE_COUNT == VKMOE_STAGE_HISTOGRAM ? 1 : -1];

int main(void)
{
    return vkmoe_status_string(VKMOE_OK)[0] == 's' && vkmoe_stage_name(VKMOE_STAGE_COUNT)[0] == 'c'
               ? 0
               : 1;
}
