#!/usr/bin/env bash
# Runs on the GPU machine (device tool) over a tree carried with .carry/ (bench/gpu/pack.sh):
#   bash bench/gpu/run.sh [tests] [bench ARGS...] [peer ARGS...] [ptxas]   (bench ARGS may quote: "serving --only 'bs1 base,bs32 base'")
# Steps named on the command line run in order; logs go to $OUT. `use NAME` makes the later steps run the build of
# bench/gpu/pending/NAME.patch (packed by `VARIANTS=NAME bash bench/gpu/pack.sh`), `use main` the tree's own build:
#   bash bench/gpu/run.sh bench "serving --only 'bs1 base'" use rope-kv test Tensors "*AttentionKernelsTests" bench "serving --only 'bs1 base'"
set -uo pipefail
root=$PWD; out=${OUT:-/tmp/out}; mkdir -p "$out"
work=/tmp/le; mkdir -p $work/dotnet $work/fx
[ -x $work/dotnet/dotnet ] || tar xJf .carry/dotnet-runtime.tar.xz -C $work/dotnet
[ -d $work/fx/fixtures ] || { tar xJf .carry/fixtures.tar.xz -C $work/fx; mkdir -p $work/fx/fixtures/models; cp -r models/vim-tiny-bf16 $work/fx/fixtures/models/; }
tar xJf .carry/bin.tar.xz -C "$root"
export DOTNET_ROOT=$work/dotnet PATH=$work/dotnet:$PATH LORAENGINE_FIXTURES=$work/fx/fixtures DOTNET_CLI_TELEMETRY_OPTOUT=1
export LORAENGINE_DEVICE=cuda LORAENGINE_TEST_MODEL=vim-tiny-bf16
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm,clocks.mem --format=csv,noheader
tag=""
while [ $# -gt 0 ]; do
  step=$1; shift
  case $step in
    use)  # use NAME|main: a variant's LoraEngine assemblies over a copy of this build, or this build again
      if [ "$1" = main ]; then cd "$root"; tag=""
      else
        v=/tmp/v-$1; rm -rf $v; mkdir -p $v/tests $v/bench; cp -r "$root/bench/bin" $v/bench/
        for p in Tensors Models Lora Engine; do mkdir -p $v/tests/$p; cp -r "$root/tests/$p/bin" $v/tests/$p/; done
        tar xJf "$root/.carry/variant-$1.tar.xz" -C $v; cd $v; tag="-$1"
      fi
      echo "== use $1"; shift ;;
    set)  # set VAR VALUE: exported for the later steps (e.g. set NCU_EXTRA "-k regex:SplitAttention")
      export "$1=$2"; echo "== set $1=$2"; shift 2 ;;
    opencl)  # the Tensors tests on pocl's CPU OpenCL device
      echo "== tests Tensors (opencl)"; (cd tests/Tensors/bin/Release/net10.0 && LORAENGINE_DEVICE=opencl timeout 400 dotnet LoraEngine.Tensors.Tests.dll 2>&1 | tail -60) | tee "$out/tests-opencl.log" | grep -E "Total:|\[FAIL\]" | head -20 ;;
    tests)
      for p in Tensors Models Lora Engine; do
        # The whole log comes back (a failure's reason is in it, not in its last lines).
        echo "== tests $p"; (cd tests/$p/bin/Release/net10.0 && timeout ${TESTS_TIMEOUT:-400} dotnet LoraEngine.$p.Tests.dll 2>&1) > "$out/tests-$p$tag.log"
        grep -E "Total:|\[FAIL\]" "$out/tests-$p$tag.log" | head -30
      done ;;
    test)  # test PROJECT FILTER...
      p=$1; shift; echo "== test $p $1"; (cd tests/$p/bin/Release/net10.0 && timeout ${TESTS_TIMEOUT:-400} dotnet LoraEngine.$p.Tests.dll -class "$1" 2>&1 | tail -60) | tee -a "$out/test-$p$tag.log"; shift ;;
    testm)  # testm PROJECT METHOD-FILTER: one test method (xunit's -method)
      p=$1; shift; echo "== testm $p $1"; (cd tests/$p/bin/Release/net10.0 && timeout ${TESTS_TIMEOUT:-400} dotnet LoraEngine.$p.Tests.dll -method "$1" 2>&1 | tail -30) | tee -a "$out/test-$p$tag.log"; shift ;;
    bench)  # bench "ARGS"
      echo "== bench $1"; (eval timeout 500 dotnet bench/bin/Release/net10.0/LoraEngine.Bench.dll $1 --out "$out/bench$tag" 2>&1) | tee -a "$out/bench.log" | tail -40; shift ;;
    peer)  # peer "ARGS"
      echo "== peer $1"; (PYTHONUNBUFFERED=1 timeout 500 python3 "$root/.carry/bench_torch_fast.py" "$out/peer.json" $1 2>&1) | tee -a "$out/peer.log" | tail -25; shift ;;
    ncu)  # ncu SKIP COUNT "BENCH ARGS": per-kernel GPU time of launches SKIP..SKIP+COUNT of a benchmark run
      n=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu | head -1)
      echo "== ncu $1 $2 $3"; eval timeout 400 $n --clock-control none --target-processes all --launch-skip $1 --launch-count $2 \
        --metrics gpu__time_duration.sum --print-summary per-kernel ${NCU_EXTRA:-} dotnet bench/bin/Release/net10.0/LoraEngine.Bench.dll $3 --out /tmp/ncu-bench \
        > "$out/ncu-$1.log" 2>&1; grep -E "Kernel_|gpu__time_duration" "$out/ncu-$1.log" | paste - - | awk '{print}' | head -60; shift 3 ;;
    ncusec)  # ncusec SKIP "BENCH ARGS": ncu's SpeedOfLight, occupancy, warp-state and workload sections of launch SKIP (NCU_EXTRA="-k regex:NAME": of that kernel's launches)
      n=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu | head -1)
      echo "== ncusec $1 $2"; eval timeout 300 $n --clock-control none --launch-skip $1 --launch-count 1 --section SpeedOfLight --section Occupancy \
        --section LaunchStats --section WarpStateStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis ${NCU_EXTRA:-} \
        dotnet bench/bin/Release/net10.0/LoraEngine.Bench.dll $2 --out /tmp/ncu-bench > "$out/ncusec-$1-${2// /_}.log" 2>&1
      grep -vE "^\s*$|----|^==PROF==|^    [A-Z]{3,}|Section:" "$out/ncusec-$1-${2// /_}.log" | grep -E "Kernel|Throughput|Duration|Registers|Occupancy|Stall|Issued|Warp Cycles|Eligible|Active Warps|Pipe|Hit|Busy|Block Limit|Executed Ipc" | head -70; shift 2 ;;
    ptxas)  # registers, spills and stack of the tensor-core kernels of the build in use (ptxas 12, from triton)
      p="$root/.carry/ptx$tag.tar"; [ -f "$p" ] || p="$root/.carry/ptx.tar"; rm -rf /tmp/ptx; tar xf "$p" -C /tmp; pt=$(python3 -c "import triton,os;print(os.path.dirname(triton.__file__))")/backends/nvidia/bin/ptxas
      for f in /tmp/ptx/*.ptx; do a=sm_90; grep -q wgmma "$f" && { sed -i "s/\.target sm_[0-9]*/.target sm_90a/" "$f"; a=sm_90a; }; echo "== ptxas $f"; $pt -v -arch=$a "$f" -o /tmp/x.cubin 2>&1 | grep -E "registers|spill|stack|error" | head -4; done ;;
  esac
done
