#!/usr/bin/env python3
"""vkmoe-bench --back-to-back N: each timed submission records N forwards
of the same input (vkmoe_layer_record_forward), the figures are the last
forward's, and y, read back from the stream's own device buffers, passes
the reference check at 1 token and at a token count of no tile's multiple,
on the GEMV and register paths; without the flag a run says 1 and no
stream time."""
import json
import subprocess
import sys

bench = sys.argv[1]


def runs_of(*flags):
    out = subprocess.run([bench, '--experts', '12', '--topk', '3', '--dim', '72', '--ffn', '40',
                          '--tokens', '1,9', '--iters', '3', '--warmup', '1', '--json']
                         + list(flags), check=True, capture_output=True, text=True).stdout
    return json.loads(out)['runs']


for path in ('gemv', 'register'):
    runs = runs_of('--back-to-back', '5', '--gemm', path)
    assert [r['shape']['tokens'] for r in runs] == [1, 9], runs
    for r in runs:
        assert r['back_to_back'] == 5 and r['stream_ms'] > 0, r
        assert r['verified'] and r['verified_tokens'] > 0 and r['layer_ms'] > 0, r
        assert r['gemm_path'] == path, r
for r in runs_of():
    assert r['back_to_back'] == 1 and r['stream_ms'] == 0 and r['verified'], r
print('back to back: 5 forwards a submission verified at 1 and 9 tokens on gemv and register')
