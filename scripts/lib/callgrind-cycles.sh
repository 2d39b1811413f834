# Client-side instructions per cycle, counted by callgrind (sourced by bench-instructions.sh and
# redlock-instructions.sh). `$bin MODE N` runs N cycles; per cycle = (I(1500) - I(500)) / 1000,
# start-up and connection set-up cancelled out; the median of 3 runs.
count() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 | awk '/Collected/ {print $4}'; }
per_cycle() {
  local runs=()
  for _ in 1 2 3; do
    local a b
    a=$(count "$1" 500); b=$(count "$1" 1500)
    runs+=($(( (b - a) / 1000 )))
  done
  printf '%s\n' "${runs[@]}" | sort -n | sed -n 2p
}
