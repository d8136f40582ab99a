#!/usr/bin/env bash
# Run each cargo-fuzz target for SECONDS (default 60), one after the other, and print one
# summary line per target: run time, executions, corpus size, crashes.
#
#   rust/fuzz/run.sh 60                  # what .ci/run does: about a minute per target
#   rust/fuzz/run.sh 3600 tar_walker     # an hour on one target, on demand
#
# libFuzzer needs nightly compiler flags (-Zsanitizer, sancov passes); only stable Rust is
# installed, so RUSTC_BOOTSTRAP=1 lets the stable compiler accept them. The corpus grows in
# rust/fuzz/corpus/<target> (seeded by make_seeds.py, kept between runs, not in git); a crash is
# saved in rust/fuzz/artifacts/<target>/ and ends the run with a non-zero status. Reproduce one
# with: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir rust/fuzz <target> <artifact>
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(tar_walker tar_split_parser gzip_decoder)

export RUSTC_BOOTSTRAP=1
# cc would build the C libraries (zstd, liblzma, ISA-L) with -fsanitize=address too, and ISA-L's
# build (the isal-sys crate) links its configure checks with -static, which gcc refuses with
# -fsanitize=address: the C code is built without the sanitizer, the Rust code keeps it.
export CFLAGS="${CFLAGS:+$CFLAGS }-fno-sanitize=address"
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2; exit 1; }
fuzz_dir=rust/fuzz
# LAYERSTORE_FUZZ_TARGET_DIR keeps the instrumented build somewhere that outlives a checkout.
target_dir=${LAYERSTORE_FUZZ_TARGET_DIR:-$fuzz_dir/target}
fuzz=(cargo fuzz)
# Debug assertions and overflow checks on: an arithmetic overflow is a finding too.
build_log=$(mktemp)
if ! "${fuzz[@]}" build --fuzz-dir "$fuzz_dir" --target-dir "$target_dir" --debug-assertions >"$build_log" 2>&1; then
    cat "$build_log" >&2
    exit 1
fi
rm -f "$build_log"
python3 "$fuzz_dir/make_seeds.py" "$fuzz_dir/corpus"

status=0
for target in "${targets[@]}"; do
    log=$(mktemp)
    max_len=4096
    [ "$target" = tar_walker ] && max_len=16384
    set +e
    "${fuzz[@]}" run --fuzz-dir "$fuzz_dir" --target-dir "$target_dir" --debug-assertions "$target" "$fuzz_dir/corpus/$target" -- \
        -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -dict="$fuzz_dir/tar.dict" \
        -print_final_stats=1 >"$log" 2>&1
    code=$?
    set -e
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    corpus=$(find "$fuzz_dir/corpus/$target" -type f | wc -l)
    crashes=$(find "$fuzz_dir/artifacts/$target" -type f 2>/dev/null | wc -l)
    printf 'fuzz %-17s %5ss  %12s executions  %7s/s  corpus %5s  crashes %s  (exit %s)\n' \
        "$target" "$seconds" "${executions:-?}" "${rate:-?}" "$corpus" "$crashes" "$code"
    if [ "$code" -ne 0 ]; then
        tail -40 "$log" >&2
        status=1
    fi
    rm -f "$log"
done
exit "$status"
