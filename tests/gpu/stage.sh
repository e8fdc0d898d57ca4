#!/usr/bin/env bash
# Stages the GPU run of tests/gpu/README.md on a machine with .NET and the npm registry:
#   1. publishes the GPU test app (tests/MLNet.Diffusion.GpuTests) and the benchmark harness
#      (tests/MLNet.Diffusion.Benchmarks) self-contained for linux-x64 (Release, not trimmed: ML.NET, MSTest and the
#      harness bind by reflection, which trimming breaks),
#   2. fetches the CUDA plugin execution-provider library with `npm pack` (ONNX Runtime 1.29.0 built for CUDA 13),
#      and, unless --no-ort129, builds ONNX Runtime 1.29 copies of both apps (the fallback of README.md section 3),
#   3. packs both into payload.tar.xz and splits it into parts of at most --part-mib MiB under
#      artifacts/gpu-stage/part-N/ (ignored by git), each with MANIFEST.txt (sha256 of every part and of the whole),
#   4. checks that the parts reassemble to the payload's sha256 and that the archive lists.
# Usage: tests/gpu/stage.sh [--out DIR] [--part-mib N] [--plugin-tgz FILE] [--no-ort129] [--keep-work]
set -euo pipefail

NPM_PACKAGE="com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9"
ORT129_PACKAGE="com.github.asus4.onnxruntime@0.4.9"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out="$repo/artifacts/gpu-stage"
part_mib=60
plugin_tgz=""
keep_work=0
ort129=1

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --part-mib) part_mib=$2; shift 2 ;;
    --plugin-tgz) plugin_tgz=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
    --keep-work) keep_work=1; shift ;;
    --no-ort129) ort129=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "stage.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
if [ "$part_mib" -gt 60 ] || [ "$part_mib" -lt 1 ]; then
  echo "stage.sh: --part-mib must be 1..60 (a device call carries at most 64 MiB with the working tree)" >&2; exit 2
fi
for tool in dotnet npm tar xz split sha256sum; do
  command -v "$tool" >/dev/null || { echo "stage.sh: '$tool' is required" >&2; exit 2; }
done

work="$out/.work"
payload="$work/payload"
rm -rf "$out"
mkdir -p "$payload/apps" "$payload/plugin"
step() { echo; echo "== stage.sh: $*"; }
started=$(date +%s)

step "1/4 publishing the GPU test app and the benchmark harness (self-contained linux-x64, Release)"
publish() {
  dotnet publish "$repo/$1" -c Release -r linux-x64 --self-contained true --nologo -v quiet \
    -p:PublishTrimmed=false -p:SatelliteResourceLanguages=en -o "$2"
}
publish tests/MLNet.Diffusion.GpuTests/MLNet.Diffusion.GpuTests.csproj "$payload/apps/gpu-tests"
publish tests/MLNet.Diffusion.Benchmarks/MLNet.Diffusion.Benchmarks.csproj "$payload/apps/benchmarks"
# Both carry the same .NET runtime and libraries: identical files become hard links, which tar stores once.
linked=0
while IFS= read -r -d '' f; do
  rel=${f#"$payload/apps/benchmarks/"}
  a="$payload/apps/gpu-tests/$rel"
  if [ -f "$a" ] && cmp -s "$a" "$f"; then ln -f "$a" "$f"; linked=$((linked + 1)); fi
done < <(find "$payload/apps/benchmarks" -type f -print0)
echo "apps: $(du -sh "$payload/apps" | cut -f1) on disk, $linked files shared by both"

step "2/4 fetching $NPM_PACKAGE"
if [ -z "$plugin_tgz" ]; then
  (cd "$work" && npm pack "$NPM_PACKAGE" --silent >/dev/null)
  plugin_tgz=$(ls "$work"/*.tgz)
fi
mkdir -p "$work/npm"
tar -xzf "$plugin_tgz" -C "$work/npm"
native="$work/npm/package/Plugins/Linux/x64"
cp "$native/libonnxruntime_providers_cuda.so" "$payload/plugin/"
[ -f "$native/libonnxruntime_providers_shared.so" ] && cp "$native/libonnxruntime_providers_shared.so" "$payload/plugin/"
if command -v nm >/dev/null; then
  nm -D --defined-only "$payload/plugin/libonnxruntime_providers_cuda.so" | grep -q ' CreateEpFactories' \
    || { echo "stage.sh: libonnxruntime_providers_cuda.so does not export CreateEpFactories: not a plugin EP library" >&2; exit 1; }
fi
ort_version=$(sed -n 's:.*<OnnxRuntimeVersion>\(.*\)</OnnxRuntimeVersion>.*:\1:p' "$repo/Directory.Packages.props")
if [ "$ort129" -eq 1 ]; then
  step "2b/4 the ONNX Runtime 1.29 fallback from $ORT129_PACKAGE (README.md section 3)"
  # Built in a temporary folder outside the repository: the repository's Directory.Build.props must not apply, and
  # nothing of the package is kept but the built assembly and the native libraries inside the payload.
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack "$ORT129_PACKAGE" --silent >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/Runtime package/Plugins/Linux/x64 package/LICENSE
  mkdir -p "$tmp/managed"
  {
    echo '<Project Sdk="Microsoft.NET.Sdk">'
    echo "  <!-- ONNX Runtime 1.29.0's managed layer, compiled from $ORT129_PACKAGE's package/Runtime sources (MIT). -->"
    echo '  <PropertyGroup>'
    echo '    <TargetFramework>net8.0</TargetFramework>'
    echo '    <AssemblyName>Microsoft.ML.OnnxRuntime</AssemblyName>'
    echo '    <AllowUnsafeBlocks>true</AllowUnsafeBlocks>'
    echo '    <Nullable>disable</Nullable>'
    echo '    <GenerateAssemblyInfo>false</GenerateAssemblyInfo>'
    echo '    <NoWarn>$(NoWarn);CS1591;CS0618;CA1416</NoWarn>'
    echo '  </PropertyGroup>'
    echo '  <ItemGroup>'
    echo "    <Compile Include=\"$tmp/package/Runtime/**/*.cs\" />"
    echo '    <PackageReference Include="System.Numerics.Tensors" Version="9.0.0" />'
    echo '  </ItemGroup>'
    echo '</Project>'
  } > "$tmp/managed/Microsoft.ML.OnnxRuntime.csproj"
  # The apps were compiled against Microsoft.ML.OnnxRuntime $ort_version: the same assembly version lets them bind.
  echo "[assembly: System.Reflection.AssemblyVersion(\"$ort_version.0\")]" > "$tmp/managed/Version.cs"
  echo 'global using System.Reflection;' > "$tmp/managed/Usings.cs"
  dotnet build "$tmp/managed/Microsoft.ML.OnnxRuntime.csproj" -c Release --nologo -v quiet -o "$tmp/managed/out" >/dev/null
  mkdir -p "$payload/apps-ort129"
  for app in gpu-tests benchmarks; do
    cp -al "$payload/apps/$app" "$payload/apps-ort129/$app"
    for f in Microsoft.ML.OnnxRuntime.dll libonnxruntime.so libonnxruntime_providers_shared.so; do
      rm -f "$payload/apps-ort129/$app/$f"
    done
    cp "$tmp/managed/out/Microsoft.ML.OnnxRuntime.dll" "$payload/apps-ort129/$app/"
    cp "$tmp/package/Plugins/Linux/x64/libonnxruntime.so" "$tmp/package/Plugins/Linux/x64/libonnxruntime_providers_shared.so" \
      "$payload/apps-ort129/$app/"
  done
  for f in Microsoft.ML.OnnxRuntime.dll libonnxruntime.so libonnxruntime_providers_shared.so; do
    ln -f "$payload/apps-ort129/gpu-tests/$f" "$payload/apps-ort129/benchmarks/$f"   # stored once, as above
  done
  echo "apps-ort129: copies of both apps on ONNX Runtime 1.29.0 (managed built from the package's sources, native from it)"
fi
commit=$(git -C "$repo" rev-parse HEAD)
dirty=$(git -C "$repo" status --porcelain --untracked-files=no | wc -l)
{
  echo "MLNet.Diffusion GPU stage (tests/gpu/README.md)"
  echo "commit: $commit$([ "$dirty" -gt 0 ] && echo " (+$dirty modified tracked files)")"
  echo "staged: $(date -u '+%Y-%m-%d %H:%M UTC') with .NET SDK $(dotnet --version)"
  echo "apps: gpu-tests (MSTest runner executable), benchmarks (MLNet.Diffusion.Benchmarks): self-contained linux-x64, managed and native ONNX Runtime $ort_version"
  if [ "$ort129" -eq 1 ]; then echo "apps-ort129: the same apps on ONNX Runtime 1.29.0 ($ORT129_PACKAGE: native library, managed layer built from its sources)"; fi
  echo "plugin: $NPM_PACKAGE ($(basename "$plugin_tgz"), sha256 $(sha256sum "$plugin_tgz" | cut -d' ' -f1)): ONNX Runtime 1.29.0 CUDA 13 provider"
  (cd "$payload/plugin" && sha256sum ./*.so)
} > "$payload/STAGE-INFO.txt"
cat "$payload/STAGE-INFO.txt"

step "3/4 packing (xz -6) and splitting into parts of at most $part_mib MiB"
tar -C "$payload" -cf - . | xz -6 -T2 > "$work/payload.tar.xz"
payload_sha=$(sha256sum "$work/payload.tar.xz" | cut -d' ' -f1)
payload_bytes=$(stat -c %s "$work/payload.tar.xz")
split -b "${part_mib}M" -d -a 2 "$work/payload.tar.xz" "$work/chunk."
n=0
for c in "$work"/chunk.*; do
  n=$((n + 1))
  mkdir -p "$out/part-$n"
  mv "$c" "$out/part-$n/payload.tar.xz.$(printf %02d "$n")"
done
{
  echo "# MLNet.Diffusion GPU stage: tests/gpu/README.md. Fields: kind index sha256 bytes name"
  echo "commit 0 $commit 0 -"
  echo "payload 0 $payload_sha $payload_bytes payload.tar.xz"
  for i in $(seq 1 "$n"); do
    f="$out/part-$i/payload.tar.xz.$(printf %02d "$i")"
    echo "part $i $(sha256sum "$f" | cut -d' ' -f1) $(stat -c %s "$f") $(basename "$f")"
  done
} > "$out/MANIFEST.txt"
for i in $(seq 1 "$n"); do cp "$out/MANIFEST.txt" "$out/part-$i/MANIFEST.txt"; done

step "4/4 checking that the parts reassemble"
re_sha=$(for i in $(seq 1 "$n"); do cat "$out/part-$i"/payload.tar.xz.*; done | sha256sum | cut -d' ' -f1)
[ "$re_sha" = "$payload_sha" ] || { echo "stage.sh: reassembled sha256 $re_sha != payload $payload_sha" >&2; exit 1; }
entries=$(for i in $(seq 1 "$n"); do cat "$out/part-$i"/payload.tar.xz.*; done | xz -dc | tar -tf - | wc -l)
echo "reassembled sha256 $re_sha matches; the archive lists $entries entries"
[ "$keep_work" -eq 1 ] || rm -rf "$work"

tree_bytes=$(git -C "$repo" ls-files -z | (cd "$repo" && xargs -0 stat -c %s 2>/dev/null) | awk '{s+=$1} END {print s+0}')
echo
echo "Staged $n parts in $out ($(( $(date +%s) - started )) s); payload $((payload_bytes / 1048576)) MiB, sha256 $payload_sha"
for i in $(seq 1 "$n"); do
  bytes=$(du -sb "$out/part-$i" | cut -f1)
  echo "  part-$i: $(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1048576}') MiB; with the tracked files ($((tree_bytes / 1024)) KiB) one device call carries $(awk -v b="$((bytes + tree_bytes))" 'BEGIN {printf "%.1f", b / 1048576}') of 64 MiB"
done
rel=${out#"$repo/"}
echo
echo "Device calls (tests/gpu/README.md), back to back so the machine stays warm:"
for i in $(seq 1 "$n"); do
  if [ "$i" -lt "$n" ]; then
    echo "  run carry=[\"$rel/part-$i\"] command=\"bash tests/gpu/run-on-device.sh receive\""
  else
    echo "  run carry=[\"$rel/part-$i\"] timeout_s=600 command=\"bash tests/gpu/run-on-device.sh receive unpack env tests bench-shapes\""
  fi
done
echo "  run timeout_s=600 command=\"bash tests/gpu/run-on-device.sh bench-sd-fp16\""
echo "  run timeout_s=600 command=\"bash tests/gpu/run-on-device.sh bench-sd-fp32\""
