#!/usr/bin/env bash
# The whole test suite: installs what is missing, starts RabbitMQ and Redis, builds with
# warnings as errors, and runs every unit and integration test through CTest.
#   bash tests/run.sh            (FC_SANITIZE=1 for an ASan+UBSan build in build-asan/)
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/local/services.sh up
dir=build
flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DFC_WERROR=ON)
if [ "${FC_SANITIZE:-0}" = 1 ]; then dir=build-asan; flags+=(-DFC_SANITIZE=ON); fi
cmake -S . -B "$dir" "${flags[@]}" >/dev/null
cmake --build "$dir" -j"$(nproc)"
ctest --test-dir "$dir" --output-on-failure -j2 "$@"
