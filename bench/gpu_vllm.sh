#!/usr/bin/env bash
# The vLLM backend's GPU checks as one script, on a CUDA machine with the extra installed (pip install -e .[vllm,bench]):
# the CPU tests of the backend, each GPU test in its own process (one colocated engine per process), then the
# gpu_check rows with and without vLLM, each vLLM row in its own process too. Results: gpu_vllm_<row>.json.
#     bash bench/gpu_vllm.sh [python]
set -u
PY=${1:-python}
status=0
$PY -m pytest -q -rs tests/test_vllm_backend.py -k "not over_grpo_steps and not reach_the_engine" || status=1
for test in test_vllm_logprobs_match_the_rescored_ones_over_grpo_steps test_vllm_lora_weights_reach_the_engine; do
    $PY -m pytest -q -rs "tests/test_vllm_backend.py::$test" || status=1
done
for row in text-0.5b trl-0.5b text-vllm text-0.5b-vllm trl-0.5b-vllm; do
    $PY bench/gpu_check.py --steps 3 --only "$row" --out "gpu_vllm_$row.json" || status=1
done
exit $status
