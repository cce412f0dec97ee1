#!/usr/bin/env bash
# The GPU check, on the device tool's machine (./dev gpu-check there): the
# GPU test suite, then vkmoe-bench on a few presets at T = 1, 8, 64, 512,
# 4096 on every GEMM path, and the offload runs (a device budget with the
# copy queue, experts on the host), over build-gpu/ as `./dev gpu-check
# --prepare` built and packed it here (build-gpu-carry/; that machine has
# no glslc, Vulkan headers or cmocka).
# Everything goes to $OUT (build-gpu/out elsewhere), eight files (the
# device tool brings back eight at most): gpu-check.log, tests.log,
# bench.json (the vkmoe-bench --json objects, one after another), three
# bench-gemv-STEPS-COLUMNS.json, bench.err, and shader-stats.json (every
# pipeline's statistics from the GPU's own compiler, by its driver's
# names). Meant
# to end within 8 minutes: a run that would start after BUDGET seconds is
# skipped and said so.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-build-gpu/out}
mkdir -p "$out"
exec > >(tee "$out/gpu-check.log") 2>&1
BUDGET=${BUDGET:-300}
: >"$out/bench.json"
# The suites that need a device, run each on its own with a limit (the
# list --prepare packs): first those whose injected failures lost the
# H200's device (stop 45), traced.
gpu_tests=(expert_cache model_whole hostile context layer router bucketing memory expert_gemm combine params shared_expert statistics model cpu_experts threads run)

if [ ! -x build-gpu/bench/vkmoe-bench ] && [ -f build-gpu-carry/build-gpu.tar.xz ]; then
    tar -xJf build-gpu-carry/build-gpu.tar.xz 2>/dev/null ||
        python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall()' \
            build-gpu-carry/build-gpu.tar.xz
fi
[ -x build-gpu/bench/vkmoe-bench ] || {
    echo "gpu-check: no build-gpu/: run ./dev gpu-check --prepare here and carry build-gpu-carry"
    exit 2
}

# The Vulkan loader and the GL dispatch libraries NVIDIA's Vulkan driver
# loads, where the machine lacks them (the device tool's README).
for deb in build-gpu/debs/*.deb; do
    lib=$(dpkg-deb -c "$deb" | sed -n 's|.*/\(lib[^/]*\.so\.[0-9]*\)$|\1|p' | head -1)
    [ -n "$lib" ] && ldconfig -p | grep -q "$lib" && continue
    dpkg -x "$deb" /
done
ldconfig
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$nvidia_icd" ] && export VK_DRIVER_FILES=$nvidia_icd
echo "Vulkan: $(ldconfig -p | grep -oE 'lib(vulkan|GLdispatch|GLX|EGL)\.so\.[0-9]+' | sort -u |
    tr '\n' ' '); driver files ${VK_DRIVER_FILES:-none set}"
export LD_LIBRARY_PATH=$PWD/build-gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/vkmoe-runtime}
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem \
    --format=csv 2>/dev/null || true
# The SM clock while the bench runs, summed up after it: the H200 ran the
# bench's single decode forwards at 345 of its 1980 MHz (stop 46), so the
# decode and prefill runs record forwards back to back (--back-to-back).
clocks=$(mktemp)
nvidia-smi --query-gpu=clocks.sm --format=csv,noheader,nounits -lms 250 >"$clocks" 2>/dev/null &
clock_watch=$!
bench=build-gpu/bench/vkmoe-bench

# The suites' contexts ask for the validation layer, which that machine
# lacks (nothing installs vulkan-validationlayers there), and Debian 12's
# (1.3.239) predates VK_KHR_cooperative_matrix, which NVIDIA's drivers
# offer: it would report vkmoe's KHR structs and matrix-core modules as
# unknown. So the suites run without a layer there, unless one is found.
layer_found=false
for dir in /usr/share /usr/local/share /etc; do
    [ -f "$dir/vulkan/explicit_layer.d/VkLayer_khronos_validation.json" ] && layer_found=true
done
if ! $layer_found; then
    export VKMOE_TEST_VALIDATION=0
    echo "no validation layer: the suites run without it (VKMOE_TEST_VALIDATION=0)"
fi

failed=0

# Models larger than the GPU (first: short, decode): half the experts'
# bytes on the device under skewed routing (copies on the GPU's copy queue),
# a quarter with one-off experts on the host, every expert on the host.
offload_runs=(
    "--device-budget 50% --routing-skew 1.2"
    "--device-budget 25% --routing-skew 1.2 --cpu-cold-experts"
    "--cpu-experts 1"
)
for run in "${offload_runs[@]}"; do
    # shellcheck disable=SC2086 # run holds several flags
    timeout 120 "$bench" --preset qwen3-30b-a3b --scale 0.5 --weights f16 $run --tokens 1,8 \
        --warmup 20 --iters 40 --json >>"$out/bench.json" 2>>"$out/bench.err" ||
        { echo "bench offload $run: failed"; tail -3 "$out/bench.err"; }
done

# Decode at a real layer's full size (issue 15's target: the expert GEMMs
# at 70% of the read peak on the selected experts' bytes, f16 and Q4_K):
# Qwen3-30B-A3B's 8 experts of 128 move 75 MB in f16 and 21 MB in Q4_K a
# token, where the half-size layers below move a quarter of that. Q5_K
# (16-byte texels like Q4_K's since stop 47), Q6_K (Q4_K_M files' down
# projections) and Q8_0 after them: no GPU had timed them.
for weights in f16 q4_k q5_k q6_k q8_0; do
    timeout 120 "$bench" --preset qwen3-30b-a3b --weights $weights --gemm gemv --tokens 1,8 \
        --warmup 20 --iters 30 --back-to-back 64 --json >>"$out/bench.json" 2>>"$out/bench.err" ||
        { echo "bench decode $weights: failed"; tail -3 "$out/bench.err"; }
done
# The GEMV path's shape, one token: its depth steps in flight (the
# library's default: 1, since stop 46's run) and output columns a workgroup
# (default 4, one a subgroup; 8 before stop 46): which this GPU decodes
# fastest with, for the defaults. A file a shape,
# bench-gemv-STEPS-COLUMNS.json.
for shape in 2:4 4:4 1:8; do
    steps=${shape%%:*} columns=${shape##*:}
    for weights in f16 q4_k; do
        VKMOE_GEMV_STEPS=$steps VKMOE_GEMV_COLUMNS=$columns timeout 90 "$bench" \
            --preset qwen3-30b-a3b --weights $weights --gemm gemv --tokens 1 --warmup 20 \
            --iters 30 --back-to-back 64 --json >>"$out/bench-gemv-$steps-$columns.json" \
            2>>"$out/bench.err" ||
            { echo "bench decode $weights, GEMV $steps steps $columns columns: failed"
              tail -3 "$out/bench.err"; }
    done
done

# The bench: each preset and weight type on every path.
runs=(
    "--preset mixtral-8x7b --scale 0.5"
    "--preset qwen3-30b-a3b --scale 0.5"
    "--preset gpt-oss-20b --scale 0.5"
    "--preset deepseek-v3 --scale 0.125"
)
for run in "${runs[@]}"; do
    for weights_path in f16:register f16:gemv f16:tiled f16:coopmat q4_k:register q4_k:gemv \
        q4_k:tiled q4_k:coopmat; do
        if [ $SECONDS -gt "$BUDGET" ]; then
            echo "bench $run ${weights_path}: skipped, past ${BUDGET} s"
            continue
        fi
        # shellcheck disable=SC2086 # run holds several flags
        timeout 120 "$bench" $run --weights "${weights_path%%:*}" --gemm "${weights_path##*:}" \
            --tokens 1,8,64,512,4096 --warmup 2 --iters 5 --back-to-back 8 --json >>"$out/bench.json" \
            2>>"$out/bench.err" || { echo "bench $run $weights_path: failed"; tail -3 "$out/bench.err"; }
    done
done

kill "$clock_watch" 2>/dev/null
sort -n "$clocks" | awk '{v[NR] = $1} END {if (NR) printf "SM clock during the bench: %d samples, min %d, median %d, max %d MHz\n", NR, v[1], v[int((NR + 1) / 2)], v[NR]}'
rm -f "$clocks"

# The GPU test suites: after the measurements (on the H200 on 2026-12-04
# they took all of a 540 s run, and the bench none), each skipped past
# SUITES_BUDGET seconds.
SUITES_BUDGET=${SUITES_BUDGET:-520}
for test in "${gpu_tests[@]}"; do
    if [ $SECONDS -gt "$SUITES_BUDGET" ]; then
        echo "test $test: skipped, past ${SUITES_BUDGET} s"
        continue
    fi
    args=()
    [ "$test" = run ] && args=(build-gpu/run/vkmoe-run)
    t0=$SECONDS
    echo "=== test_$test" >>"$out/tests.log"
    # Each injected Vulkan failure a line (the expert cache's lost the
    # device on the H200 where lavapipe recovers: which one?).
    if VKMOE_TEST_TRACE_FAULTS=1 timeout 150 "build-gpu/tests/test_$test" "${args[@]}" \
        >"$out/test.log" 2>&1; then
        echo "test $test: ok ($((SECONDS - t0)) s)"
    else
        echo "test $test: FAILED ($((SECONDS - t0)) s); its log:"
        tail -30 "$out/test.log"
        failed=1
    fi
    cat "$out/test.log" >>"$out/tests.log"
    rm -f "$out/test.log"
done
timeout 60 build-gpu/examples/vkmoe-example >/dev/null 2>&1 && echo "readme example: ok" ||
    { echo "readme example: FAILED"; failed=1; }



# The GPU compiler's own figures for every pipeline vkmoe creates: last,
# after the measurements, as compiling some 1200 pipelines may take the
# driver minutes.
timeout 100 build-gpu/bench/vkmoe-shader-stats --all-statistics --json >"$out/shader-stats.json" \
    2>>"$out/bench.err" && echo "shader-stats: $(grep -c '"name"' "$out/shader-stats.json") pipelines" ||
    echo "shader-stats: failed or cut short (bench.err)"

# A line a run: what the README and the note quote.
python3 - "$out"/bench*.json <<'EOF'
import json, sys
for name in sys.argv[1:]:
    print("== %s" % name.rsplit("/", 1)[-1])
    text, at, decoder = open(name).read(), 0, json.JSONDecoder()
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            break
        d, at = decoder.raw_decode(text, at)
        peak = d.get("peak") or {}
        read = peak.get("read_gbps") or 0
        for r in d["runs"]:
            s = r["shape"]
            print("%-14s %-5s %-8s T=%-5d %9.3f ms %8.1f GB/s (%3.0f%% of read) %9.1f GFLOP/s %s%s" % (
                r.get("preset") or "-", s["weights"], r.get("gemm_path", r["path"]), s["tokens"],
                r["layer_ms"], r["gbps"], 100 * r["gbps"] / read if read else 0, r["gflops"],
                "ok" if r["verified"] else "NOT VERIFIED",
                "; back to back x%d, %.3f ms a forward" % (r["back_to_back"], r["stream_ms"])
                if r.get("back_to_back", 1) > 1 else ""))
            # The expert GEMMs alone (issue 15's decode target; with the shared
            # expert's where it ran beside them: gemm_up+shared) and the floor
            # of the forward's dispatches (what fusing stages would save).
            gemms = [g for g in r.get("stages", [])
                     if g["name"].split("+")[0] in ("gemm_up", "gemm_down")]
            ms = sum(g["ms"] for g in gemms)
            gbps = sum(g["gbps"] * g["ms"] for g in gemms) / ms if ms > 0 else 0
            print("    expert GEMMs %.3f ms, %.1f GB/s (%.0f%% of read); %d dispatches, floor %.3f ms" % (
                ms, gbps, 100 * gbps / read if read else 0, r.get("dispatches", 0),
                r.get("dispatch_floor_ms", 0)))
            # Every stage that ran: where a decode forward's time goes besides
            # the experts (the router's logits, the bucketing, combine).
            print("    stages ms: " + ", ".join("%s %.3f" % (g["name"], g["ms"])
                                             for g in r.get("stages", []) if g["ms"] > 0))
            o = r.get("offload")
            if o:
                print("    offload: hit rate %.1f%%, %.2f MB to the device, %.3f ms hidden, host experts"
                      " %.3f ms (%.1f GB/s), resident %.3f ms, all on the host %.3f ms" % (
                          100 * o["hit_rate"], o["bytes_to_device"] / 1e6, o["hidden_ms"],
                          o["cpu_expert_ms"], o["cpu_expert_gbps"], o["resident_layer_ms"],
                          o["cpu_only_layer_ms"]))
        print("peaks: %s" % json.dumps(peak))
EOF
echo "gpu-check: $SECONDS s, tests $([ $failed = 0 ] && echo passed || echo FAILED)"
exit $failed
