# shellcheck shell=bash
# Timing shared by the benchmarks, sourced after they set `work` (a scratch directory), RUNS and
# `bytes` (what MB/s counts), and define prepare() (untimed, before each run).
#   measure NAME CMD...   runs CMD RUNS times; prints the median seconds, MB/s and peak RSS, and
#                         keeps "median rss" in $work/result-NAME
#   ratio A B             B's median over A's: how many times faster A is
measure() {
  local name=$1; shift
  local times=() rss=0 i t r
  for ((i = 0; i < RUNS; i++)); do
    prepare
    /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null
    read -r t r <"$work/time"
    times+=("$t"); ((r > rss)) && rss=$r
  done
  t=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  awk -v n="$name" -v t="$t" -v b="$bytes" -v r="$rss" \
    'BEGIN {printf "%-34s %8.2f s %9.1f MB/s %8.1f MB peak RSS\n", n, t, b / t / 1e6, r / 1024}'
  echo "$t $rss" >"$work/result-$name"
}
ratio() { awk -v a="$(cut -d' ' -f1 "$work/result-$1")" -v b="$(cut -d' ' -f1 "$work/result-$2")" 'BEGIN {printf "%.2f", b / a}'; }
