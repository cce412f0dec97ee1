/* vkmoe.h compiles on its own, first and alone (no other include before it). */
#include "vkmoe.h"

int main(void)
{
    return vkmoe_status_string(VKMOE_OK)[0] == 's' ? 0 : 1;
}
