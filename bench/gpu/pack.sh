#!/usr/bin/env bash
# Packs what a GPU-machine run needs into .carry/ (ignored by git; pass carry: [".carry"] to the device tool):
# the .NET runtime (the GPU machine has none), framework-dependent builds of the test projects and the benchmark,
# and the reference fixtures the GPU tests read (the F32 and sharded models stay behind: the 64 MiB limit).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .carry
dotnet_root=$(dirname "$(readlink -f "$(which dotnet)")")
if [ ! -f .carry/dotnet-runtime.tar.xz ]; then
  (cd "$dotnet_root" && tar cf - dotnet host shared/Microsoft.NETCore.App | xz -T2 -6) > .carry/dotnet-runtime.tar.xz
fi
if [ ! -f .carry/fixtures.tar.xz ]; then
  (cd ../shared && tar cf - fixtures/adapters fixtures/golden fixtures/README.md | xz -T2 -6) > .carry/fixtures.tar.xz
fi
dotnet build LoraEngine.sln -c Release -v q -nologo
tar cf - --exclude='*.pdb' --exclude='*/cs' --exclude='*/de' --exclude='*/es' --exclude='*/fr' --exclude='*/it' \
  --exclude='*/ja' --exclude='*/ko' --exclude='*/pl' --exclude='*/pt-BR' --exclude='*/ru' --exclude='*/tr' \
  --exclude='*/zh-Hans' --exclude='*/zh-Hant' \
  tests/{Tensors,Models,Lora,Engine}/bin/Release/net10.0 bench/bin/Release/net10.0 | xz -T1 -9 > .carry/bin.tar.xz
cp ../shared/peers/gpu/bench_torch_fast.py .carry/
# The tensor-core kernels' PTX, for run.sh's ptxas step (registers and spills of this build).
dotnet build bench/gpu/ptxcheck -c Release -v q -nologo
rm -rf /tmp/ptx && dotnet bench/gpu/ptxcheck/bin/Release/net10.0/ptxcheck.dll --out /tmp/ptx > /dev/null
tar cf .carry/ptx.tar -C /tmp ptx
# VARIANTS="NAME ...": each bench/gpu/pending/NAME.patch applied to HEAD in a worktree and built; its LoraEngine
# assemblies go to .carry/variant-NAME.tar.xz (run.sh's `use NAME` lays them over this build), its kernels' PTX to
# .carry/ptx-NAME.tar (run.sh's `ptxas` after `use NAME`).
for v in ${VARIANTS:-}; do
  wt=$(mktemp -d)/wt
  git worktree add -q --detach "$wt" HEAD
  (cd "$wt" && git am -q "$OLDPWD/bench/gpu/pending/$v.patch" && dotnet build LoraEngine.sln -c Release -v q -nologo > /dev/null \
    && find bench/bin/Release/net10.0 tests/{Tensors,Models,Lora,Engine}/bin/Release/net10.0 -maxdepth 1 -name 'LoraEngine.*.dll' \
    | tar cf - -T - | xz -T2 -6 > "$OLDPWD/.carry/variant-$v.tar.xz" \
    && rm -rf /tmp/ptx-$v && mkdir -p /tmp/ptx-$v \
    && dotnet "$OLDPWD/bench/gpu/ptxcheck/bin/Release/net10.0/ptxcheck.dll" --asm src/Tensors/bin/Release/net10.0/LoraEngine.Tensors.dll --out /tmp/ptx-$v/ptx > /dev/null \
    && tar cf "$OLDPWD/.carry/ptx-$v.tar" -C /tmp/ptx-$v ptx) || echo "variant $v failed"
  git worktree remove --force "$wt"
done
ls -la .carry
