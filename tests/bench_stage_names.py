#!/usr/bin/env python3
"""vkmoe-bench's stage names and work where a stage's time covers others'
(shared/BENCH.md): at 1 token the router buckets the slots, at 8 the scan
does count's and scatter's work, and a shared expert's GEMMs run in the
routed experts' stages; at 300 tokens (the layer's max_tokens) each stage
is its own; on the GEMV path gemm_down does one token's combine too. A
stage whose work ran elsewhere counts none of it."""
import json
import subprocess
import sys

bench = sys.argv[1]


def runs_of(*flags):
    out = subprocess.run([bench, '--preset', 'deepseek-v3', '--scale', '0.0625', '--iters', '2',
                          '--warmup', '1', '--json'] + list(flags),
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)['runs']


runs = runs_of('--tokens', '1,8,300') + runs_of('--tokens', '1', '--gemm', 'gemv')
expected = {
    1: ['router+count+scan+scatter', 'count', 'scan', 'scatter', 'gemm_up+shared',
        'gemm_down+shared', 'shared', 'combine'],
    8: ['router', 'count', 'scan+count+scatter', 'scatter', 'gemm_up+shared', 'gemm_down+shared',
        'shared', 'combine'],
    300: ['router', 'count', 'scan', 'scatter', 'gemm_up', 'gemm_down', 'shared', 'combine'],
    'gemv': ['router+count+scan+scatter', 'count', 'scan', 'scatter', 'gemm_up+shared',
             'gemm_down+shared+combine', 'shared', 'combine'],
}
assert len(runs) == 4, runs
for run, tokens in zip(runs, (1, 8, 300, 'gemv')):
    names = [s['name'] for s in run['stages']]
    assert names == expected[tokens], (tokens, names)
    for s in run['stages']:
        covered_elsewhere = any(s['name'] != n and s['name'] in n.split('+') for n in names)
        assert not covered_elsewhere or (s['gflops'] == 0 and s['gbps'] == 0), (tokens, s)
    # every FLOP is counted once, wherever it ran: the stages' sum the layer's
    stage_flops = sum(s['gflops'] * s['ms'] for s in run['stages'])
    layer_flops = run['gflops'] * run['layer_ms']
    assert abs(stage_flops - layer_flops) <= 1e-4 * layer_flops, (tokens, stage_flops, layer_flops)
print('stage names as expected at 1, 8 and 300 tokens, and 1 on the GEMV path')
