// Count and scatter walk slots in priority order q = j·tokens + t (choice j
// of token t), the order in which a capacity keeps them: every token's first
// choice before any second choice. Slots are stored token-major, t·top_k + j.
uint priority_slot(uint q, uint tokens, uint top_k)
{
    uint j = q / tokens;
    return (q - j * tokens) * top_k + j;
}
