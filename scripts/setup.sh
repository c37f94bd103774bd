#!/usr/bin/env bash
# Create .venv and install edgetune with everything it needs, on a fresh machine.
# Order matters: torch first (keeps a CUDA torch a user already has, else takes 2.13.0),
# then llama-cpp-python built portably, then the rest.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
LLAMA_CPP_VERSION=0.3.36
# The native build emits AMX instructions on CPUs that advertise them; VMs that do not enable
# AMX then die with SIGILL at the first decode. Build for a portable AVX2 baseline instead.
LLAMA_CMAKE_ARGS=${LLAMA_CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --upgrade pip wheel

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup: installing torch 2.13.0"
  $PIP install --quiet "torch==2.13.0"
fi

if ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  # pip's wheel cache does not key on CMAKE_ARGS, so a cached native wheel would be reused
  # silently. Keep our own cache, keyed on version + flags.
  key=$(printf '%s %s' "$LLAMA_CPP_VERSION" "$LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-16)
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/edgetune/wheels/llama-cpp-$key"
  if ! ls "$cache"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "setup: building llama-cpp-python $LLAMA_CPP_VERSION portably (7-9 minutes on 2 cores)"
    mkdir -p "$cache.tmp"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
      $PIP wheel --quiet --no-cache-dir --no-deps -w "$cache.tmp" "llama-cpp-python==$LLAMA_CPP_VERSION"
    rm -rf "$cache" && mv "$cache.tmp" "$cache"
  fi
  $PIP install --quiet "$cache"/llama_cpp_python-*.whl
fi

$PIP install --quiet -e ".[dev]"
echo "setup: done ($VENV)"
