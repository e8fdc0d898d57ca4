#!/usr/bin/env bash
# Device side of tests/gpu/README.md: runs in the repository root of the device machine's copy of the working tree.
# Steps run in the order given; each prints what it did, results go under $OUT (the device tool's result folder).
#   receive        move the carried artifacts/gpu-stage/part-N/ chunks (sha256-checked) to $MLNET_GPU_STAGE/parts
#   status         list the parts present and missing, and whether the payload is unpacked
#   unpack         reassemble the parts, check the payload's sha256, extract it to $MLNET_GPU_STAGE/payload
#   env            CUDA/cuDNN libraries of the Python nvidia packages, the plugin's dependencies, the GPU as
#                  ONNX Runtime's device discovery sees it (/sys/class/drm) -> $OUT/env.txt
#   tests          the GPU tests (MSTest runner executable) -> $OUT/gpu-tests.log
#   bench-shapes | bench-shapes-fp16 | bench-sd-fp16 | bench-sd-fp32
#                  the benchmark's overhead ratio on CUDA -> $OUT/bench-*.log and the updated $OUT/benchmarks.md
# Environment: MLNET_GPU_STAGE (default /tmp/mlnet-gpu-stage, outside the synced tree so it survives between calls
# while the machine is warm), MLNET_DIFFUSION_CUDA_PLUGIN (default: the staged plugin), MLNET_GPU_APPS (default
# apps; apps-ort129 for the ONNX Runtime 1.29 fallback of README.md), MLNET_GPU_DRM_SHIM (auto|off, see run_app),
# BENCH_ARGS (extra benchmark options, e.g. "--reps 3").
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STAGE=${MLNET_GPU_STAGE:-/tmp/mlnet-gpu-stage}
OUT=${OUT:-$STAGE/out}
APPS="$STAGE/payload/${MLNET_GPU_APPS:-apps}"
incoming="$repo/artifacts/gpu-stage"
mkdir -p "$STAGE/parts" "$OUT"
log() { echo "[run-on-device] $*"; }

manifest_parts() { awk '$1 == "part" {print $2, $3, $5}' "$STAGE/MANIFEST.txt"; }

receive() {
  local got=0 d f name want have
  for d in "$incoming"/part-*/; do
    [ -f "$d/MANIFEST.txt" ] || continue
    cp -f "$d/MANIFEST.txt" "$STAGE/MANIFEST.txt"
    for f in "$d"/payload.tar.xz.*; do
      [ -f "$f" ] || continue
      name=$(basename "$f")
      want=$(awk -v n="$name" '$1 == "part" && $5 == n {print $3}' "$STAGE/MANIFEST.txt")
      have=$(sha256sum "$f" | cut -d' ' -f1)
      if [ "$have" != "$want" ]; then
        log "ERROR: $name has sha256 $have, the manifest says $want (a transfer broke: carry it again)"
        return 1
      fi
      mv -f "$f" "$STAGE/parts/$name"
      got=$((got + 1))
      log "received $name ($(( $(stat -c %s "$STAGE/parts/$name") / 1048576 )) MiB), sha256 ok"
    done
  done
  [ "$got" -gt 0 ] || log "no part under $incoming (carry artifacts/gpu-stage/part-N)"
  status
}

status() {
  if [ ! -f "$STAGE/MANIFEST.txt" ]; then log "no manifest yet: nothing received"; return 0; fi
  local missing=0 i sha name
  while read -r i sha name; do
    if [ -f "$STAGE/parts/$name" ]; then log "part $i present"; else log "part $i MISSING"; missing=$((missing + 1)); fi
  done < <(manifest_parts)
  [ -d "$STAGE/payload" ] && log "payload unpacked in $STAGE/payload: $(head -2 "$STAGE/payload/STAGE-INFO.txt" | tail -1)"
  log "$missing part(s) missing"
}

unpack() {
  [ -f "$STAGE/MANIFEST.txt" ] || { log "ERROR: no manifest: receive the parts first"; return 1; }
  local i sha name want
  while read -r i sha name; do
    [ -f "$STAGE/parts/$name" ] || { log "ERROR: part $i ($name) has not been received; carry it again"; return 1; }
  done < <(manifest_parts)
  want=$(awk '$1 == "payload" {print $3}' "$STAGE/MANIFEST.txt")
  while read -r i sha name; do cat "$STAGE/parts/$name"; done < <(manifest_parts | sort -n) > "$STAGE/payload.tar.xz"
  local have
  have=$(sha256sum "$STAGE/payload.tar.xz" | cut -d' ' -f1)
  [ "$have" = "$want" ] || { log "ERROR: reassembled payload sha256 $have != manifest $want"; return 1; }
  rm -rf "$STAGE/payload" && mkdir -p "$STAGE/payload"
  if command -v xz >/dev/null; then
    tar -xJf "$STAGE/payload.tar.xz" -C "$STAGE/payload" || return 1
  else
    python3 -m tarfile -e "$STAGE/payload.tar.xz" "$STAGE/payload" || return 1
  fi
  rm -f "$STAGE/payload.tar.xz"
  chmod +x "$STAGE"/payload/apps*/*/MLNet.Diffusion.* 2>/dev/null
  log "payload sha256 ok, unpacked: $(du -sh "$STAGE/payload" | cut -f1)"
  cat "$STAGE/payload/STAGE-INFO.txt"
}

# CUDA 13 and cuDNN 9 come with the Python environment's nvidia packages (nvidia-cublas, nvidia-cudnn-cu13, …):
# every folder under the nvidia namespace package that holds shared libraries goes on LD_LIBRARY_PATH.
cuda_env() {
  local dirs
  dirs=$(python3 - <<'PY'
import os
try:
    import nvidia
except ImportError:
    raise SystemExit(0)
found = set()
for base in list(nvidia.__path__):
    for root, _, files in os.walk(base):
        if any(f.startswith("lib") and ".so" in f for f in files):
            found.add(root)
print(":".join(sorted(found)))
PY
)
  local d
  for d in /usr/local/nvidia/lib64 /usr/local/cuda/lib64; do [ -d "$d" ] && dirs="$dirs:$d"; done
  export LD_LIBRARY_PATH="${dirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export MLNET_DIFFUSION_CUDA_PLUGIN="${MLNET_DIFFUSION_CUDA_PLUGIN-$STAGE/payload/plugin/libonnxruntime_providers_cuda.so}"
  # A self-contained .NET app needs libicu unless globalization is invariant; the image may not have it.
  if ! ldconfig -p 2>/dev/null | grep -q 'libicuuc\.so'; then export DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1; fi
}

env_report() {
  cuda_env
  local plugin="$STAGE/payload/plugin/libonnxruntime_providers_cuda.so" lib d found
  {
    echo "## nvidia-smi"; nvidia-smi 2>&1 | head -20
    echo; echo "## LD_LIBRARY_PATH"; echo "$LD_LIBRARY_PATH" | tr ':' '\n'
    echo; echo "## libraries the plugin needs (ldd), cuDNN (loaded at run time)"
    ldd "$plugin" 2>&1 | grep -E 'cu|not found'
    for lib in libcudnn.so.9 libcublasLt.so.13 libcublas.so.13 libcudart.so.13 libcurand.so.10 libcufft.so.12 libnvrtc.so.13; do
      found=""
      for d in $(echo "$LD_LIBRARY_PATH" | tr ':' ' '); do [ -e "$d/$lib" ] && found="$d/$lib" && break; done
      echo "$lib: ${found:-NOT FOUND on LD_LIBRARY_PATH}"
    done
    echo; echo "## GPUs as ONNX Runtime's Linux device discovery sees them (/sys/class/drm/card*/device/vendor; NVIDIA is 0x10de)"
    found=0
    for d in /sys/class/drm/card*; do
      [ -f "$d/device/vendor" ] || continue
      echo "$d: vendor $(cat "$d/device/vendor") device $(cat "$d/device/device" 2>/dev/null)"
      grep -qi 0x10de "$d/device/vendor" && found=1
    done
    if [ "$found" -eq 0 ]; then
      echo "no NVIDIA card under /sys/class/drm: ONNX Runtime would list no CUDA EP device; tests and benchmarks run with a"
      echo "private /sys/class/drm (run_app in run-on-device.sh) unless MLNET_GPU_DRM_SHIM=off"
    fi
    echo; echo "## .NET globalization: ${DOTNET_SYSTEM_GLOBALIZATION_INVARIANT:+invariant (no libicu)}${DOTNET_SYSTEM_GLOBALIZATION_INVARIANT:-libicu found}"
    echo; echo "## stage"; cat "$STAGE/payload/STAGE-INFO.txt"
  } 2>&1 | tee "$OUT/env.txt"
}

# ONNX Runtime lists a GPU for plugin execution providers only if /sys/class/drm/cardN/device/vendor says 0x10de
# (its Linux device discovery). A VM whose NVIDIA driver has no DRM node shows none, and GetEpDevices then has no
# CUDA device although CUDA works. Unless MLNET_GPU_DRM_SHIM=off, such a run gets a private mount namespace whose
# /sys/class/drm holds card0 with the GPU's vendor and device ids (from nvidia-smi): the real GPU, made visible.
nvidia_card_visible() {
  local d
  for d in /sys/class/drm/card*/device/vendor; do grep -qi 0x10de "$d" 2>/dev/null && return 0; done
  return 1
}
run_app() {
  if [ "${MLNET_GPU_DRM_SHIM:-auto}" = off ] || nvidia_card_visible || ! command -v nvidia-smi >/dev/null || ! command -v unshare >/dev/null; then
    "$@"
    return
  fi
  local pci bus dev target=/sys/class/drm
  pci=$(nvidia-smi --query-gpu=pci.device_id --format=csv,noheader 2>/dev/null | head -1)   # e.g. 0x233010DE
  bus=$(nvidia-smi --query-gpu=pci.bus_id --format=csv,noheader 2>/dev/null | head -1)      # e.g. 00000000:05:00.0
  dev="0x$(echo "${pci#0x}" | cut -c1-4 | tr 'A-F' 'a-f')"
  bus=$(echo "${bus:-00000000:00:00.0}" | sed 's/^0000\([0-9A-Fa-f]\{4\}:\)/\1/' | tr 'A-F' 'a-f')     # sysfs form 0000:05:00.0
  [[ $bus =~ ^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f]$ ]] || bus=0000:00:00.0
  [ -d "$target" ] || target=/sys/class
  log "no NVIDIA card under /sys/class/drm: running with a private /sys/class/drm/card0 -> $bus (vendor 0x10de, device $dev) so ONNX Runtime's device discovery lists the GPU"
  # As in sysfs, card0/device links to a folder named by the PCI address, holding vendor and device.
  unshare --mount -- bash -c 'mount -t tmpfs none "$1" && mkdir -p "/sys/class/drm/$3" /sys/class/drm/card0 \
    && echo 0x10de > "/sys/class/drm/$3/vendor" && echo "$2" > "/sys/class/drm/$3/device" \
    && ln -s "../$3" /sys/class/drm/card0/device && shift 3 && exec "$@"' \
    shim "$target" "$dev" "$bus" "$@"
}

run_tests() {
  cuda_env
  log "GPU tests with plugin ${MLNET_DIFFUSION_CUDA_PLUGIN:-(classic provider)}"
  run_app timeout 480 "$APPS/gpu-tests/MLNet.Diffusion.GpuTests" --output detailed --no-ansi --no-progress \
    --results-directory "$STAGE/test-results" 2>&1 | tee "$OUT/gpu-tests.log"
  return "${PIPESTATUS[0]}"
}

bench() {
  cuda_env
  local model=$1 precision=$2 fp16=""
  [ "$precision" = fp16 ] && fp16="--fp16"
  [ -f "$STAGE/benchmarks.md" ] || cp "$repo/docs/benchmarks.md" "$STAGE/benchmarks.md"
  local plugin_args=()
  [ -n "${MLNET_DIFFUSION_CUDA_PLUGIN:-}" ] && plugin_args=(--plugin "$MLNET_DIFFUSION_CUDA_PLUGIN")
  # shellcheck disable=SC2086
  run_app timeout 560 "$APPS/benchmarks/MLNet.Diffusion.Benchmarks" pipeline --provider cuda "${plugin_args[@]}" --model "$model" $fp16 \
    --models "$STAGE/models" --out "$STAGE/benchmarks.md" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench-$model-$precision.log"
  local rc=${PIPESTATUS[0]}
  cp "$STAGE/benchmarks.md" "$OUT/benchmarks.md"
  return "$rc"
}

[ $# -gt 0 ] || { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }
failed=0
for step in "$@"; do
  log "---- $step"
  case "$step" in
    receive) receive ;;
    status) status ;;
    unpack) unpack ;;
    env) env_report ;;
    tests) run_tests ;;
    bench-shapes) bench shapes fp32 ;;
    bench-shapes-fp16) bench shapes fp16 ;;
    bench-sd-fp16) bench sd-synthetic fp16 ;;
    bench-sd-fp32) bench sd-synthetic fp32 ;;
    *) log "unknown step '$step'"; false ;;
  esac
  rc=$?
  if [ "$rc" -ne 0 ]; then log "step $step failed (exit $rc)"; failed=$((failed + 1)); fi
  # Without the payload nothing after unpack can run.
  if [ "$step" = unpack ] && [ "$rc" -ne 0 ]; then break; fi
done
log "done: $failed step(s) failed"
exit "$failed"
