#!/usr/bin/env bash
# run.sh [SECONDS] [TARGET...]: configures and builds build-fuzz (clang, -DFC_FUZZ=ON), then fuzzes each target
# (default: all) for SECONDS (default 60) one after the other, and prints a table of what each run did.
# New inputs land in build-fuzz/tests/fuzz/work/corpus/<target>/, crashes in .../work/artifacts/<target>/.
set -u
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=${FC_FUZZ_BUILD_DIR:-$src/build-fuzz}
secs=60
case ${1:-} in '' | *[!0-9]*) ;; *) secs=$1; shift ;; esac
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in "$here"/fuzz_*.c; do n=$(basename "$f" .c); targets+=("${n#fuzz_}"); done
fi
command -v clang >/dev/null || { echo "run.sh: clang is needed (apt-get install -y clang)" >&2; exit 2; }
cmake -S "$src" -B "$build" -DCMAKE_C_COMPILER=clang -DFC_FUZZ=ON -DFC_WERROR=ON >/dev/null || exit 2
cmake --build "$build" -j"$(nproc)" --target $(printf 'fuzz_%s ' "${targets[@]}") >/dev/null || exit 2
status=0
summary=()
for t in "${targets[@]}"; do
    echo "fuzzing $t for ${secs}s ..."
    out=$build/tests/fuzz/work/$t.summary
    mkdir -p "$build/tests/fuzz/work"
    FC_FUZZ_SECONDS=$secs bash "$here/fuzz_one.sh" "$build/tests/fuzz/fuzz_$t" "$t" "$build/tests/fuzz/work" \
        "$here/corpus/$t" "$here/regressions/$t" >"$out" 2>&1
    rc=$?
    line=$(tail -n 1 "$out")
    [ "$rc" -ne 0 ] && status=1 && line="$line (FAILED: see $build/tests/fuzz/work/$t.log)"
    summary+=("$line")
done
echo
printf '%s\n' "${summary[@]}"
exit $status
